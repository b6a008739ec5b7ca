"""The one way files are written whole: atomically, and JSON without NaN.

Run records, the job state, ``compare.json`` and the benchmark results all go through
:func:`atomic_write`: the text is written under a unique temporary name beside the target,
flushed to disk, then renamed over it, so a reader sees the old file or the new one and
never half of one, two writers never share a temporary file, and a failure (a full disk)
leaves no temporary file behind. :func:`to_json` stores NaN/inf as null and paths, numpy
scalars and dtypes as their text, so every reader can parse what was written.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path

from lift_core.errors import LiftError, RecordWriteError


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is down (a nearly full disk takes part of a write)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a unique temporary file and a rename.

    Raises:
        RecordWriteError: the file could not be written (one line, e.g. no space left).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            write_all(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RecordWriteError(f"cannot write {path}: {exc.strerror or exc}") from None


def _finite(value):
    """JSON cannot hold NaN/inf; store them as null so every reader can parse the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _as_text(value):
    # Paths, numpy scalars and torch dtypes end up in configs; store their text form.
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def to_json(obj, **kwargs) -> str:
    """``obj`` as JSON text: NaN/inf become null, paths and numpy/torch values their text."""
    return json.dumps(_finite(obj), default=_as_text, allow_nan=False, **kwargs)


def write_json(path: Path, obj, *, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, to_json(obj, indent=indent) + "\n")


def read_json_object(path: Path) -> dict | None:
    """A JSON file that must hold an object; None when missing.

    Raises:
        LiftError: not valid JSON, or valid JSON that is not an object (e.g. ``[1, 2, 3]``).
    """
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise LiftError(f"{path} is not valid JSON{where}") from None
    if not isinstance(data, dict):
        raise LiftError(f"{path} holds a JSON {type(data).__name__}, not an object")
    return data
