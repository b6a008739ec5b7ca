"""User-facing errors.

Every problem a user can cause (a wrong path, a rank out of range, a broken data file) is
raised as a :class:`LiftError` whose message is one plain sentence. The CLI prints that
sentence and exits 2; the app shows it in place. Anything else is a bug and keeps its
traceback.
"""


class LiftError(ValueError):
    """A problem with the user's input, described in one line."""


class RecordWriteError(LiftError):
    """A file could not be written (disk full, permissions, the folder vanished).

    Raised by :func:`lift_core.jsonio.atomic_write`; a run that meets it ends "failed".
    """
