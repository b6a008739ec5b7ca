"""Folders an operator allows a shared server to read: models and data files.

On a machine where the app is exposed to others, anyone who reaches it can type a path into
the model box or the data-file fields. ``LIFT_MODEL_ROOTS`` and ``LIFT_DATA_ROOTS``
(os.pathsep-separated folders) confine those paths. A path outside them is refused before
anything on disk is looked at, with the same words whether or not it exists, so the server
does not reveal which of its files exist. Unset or empty means no restriction (a laptop).
"""

from __future__ import annotations

import os
from pathlib import Path

from lift_core.errors import LiftError

MODEL_ROOTS_ENV = "LIFT_MODEL_ROOTS"
DATA_ROOTS_ENV = "LIFT_DATA_ROOTS"


def allowed_roots(env_var: str) -> list[Path] | None:
    """The folders named by ``env_var`` (symlinks resolved), or None when it is unset."""
    entries = [e.strip() for e in os.environ.get(env_var, "").split(os.pathsep)]
    roots = [Path(e).expanduser().resolve() for e in entries if e]
    return roots or None


def confine(name: str, env_var: str, what: str, folders: str, advice: str) -> Path:
    """``name`` resolved, when ``env_var`` allows it (or sets no limit).

    Args:
        name: the path as the user gave it.
        env_var: MODEL_ROOTS_ENV or DATA_ROOTS_ENV.
        what: what the path is, for the message ("model path", "data file").
        folders: what the roots hold ("model folders", "data folders").
        advice: what the user may give instead.

    Raises:
        LiftError: when the resolved path (symlinks and .. followed) is outside every root.
    """
    path = Path(name).expanduser()
    roots = allowed_roots(env_var)
    if roots is None:
        return path
    resolved = path.resolve()
    if not any(resolved == root or root in resolved.parents for root in roots):
        raise LiftError(f"{what} {name} is outside the allowed {folders} ({env_var}); {advice}")
    return resolved
