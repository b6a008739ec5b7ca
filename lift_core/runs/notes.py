"""What a user adds to a run after it ran: a name, notes and tags, and deleting it undoably.

The user's words live in ``RUN_DIR/notes.json``, a plain file beside the record that a run
folder may hold (:func:`lift_core.runs.folder.foreign_entries`) and that ``--overwrite``
leaves alone. Deleting a run moves its folder into ``ROOT/.trash/<id>/run`` with a note of
where it came from, so it can be restored; nothing is removed from the disk here.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from lift_core.errors import LiftError
from lift_core.jsonio import read_json_object, write_json

NOTES_FILE = "notes.json"
TRASH_DIR = ".trash"  # under a runs folder; list_runs skips it
_ORIGIN_FILE = "origin.json"
_MAX_NAME = 80


def read_notes(run_dir: str | os.PathLike) -> dict:
    """{"name", "notes", "tags"} of a run (empty when it has none or they cannot be read)."""
    try:
        data = read_json_object(Path(run_dir) / NOTES_FILE) or {}
    except (LiftError, OSError):
        data = {}
    tags = data.get("tags") if isinstance(data.get("tags"), list) else []
    return {"name": str(data.get("name") or ""), "notes": str(data.get("notes") or ""),
            "tags": [str(t) for t in tags]}


def parse_tags(text: str) -> list[str]:
    """Comma-separated tags, trimmed, without repeats, in the order typed."""
    tags = []
    for tag in (t.strip() for t in text.split(",")):
        if tag and tag not in tags:
            tags.append(tag)
    return tags


def write_notes(run_dir: str | os.PathLike, *, name: str = "", notes: str = "",
                tags: list[str] | None = None) -> dict:
    """Store a run's name, notes and tags in its notes.json (atomically); return them.

    Raises:
        LiftError: not a run folder, or a name that is not one line of at most 80 characters.
    """
    path = Path(run_dir)
    if not (path / "config.json").is_file():
        raise LiftError(f"{path} is not a run folder (no config.json): notes go beside a run record")
    name = name.strip()
    if "\n" in name or len(name) > _MAX_NAME:
        raise LiftError(f"run name must be one line of at most {_MAX_NAME} characters (got {len(name)})")
    record = {"name": name, "notes": notes.strip(), "tags": list(tags or [])}
    write_json(path / NOTES_FILE, record)
    return record


def trash_run(run_dir: str | os.PathLike, root: str | os.PathLike) -> str:
    """Move a finished run folder under ``root`` into ``root/.trash``; return its trash id.

    Raises:
        LiftError: the folder is not a run under ``root``, or its run is still going.
    """
    from lift_core.runs.records import is_run_dir, read_run

    run, root = Path(run_dir).resolve(), Path(root).resolve()
    if not is_run_dir(run) or root not in run.parents or TRASH_DIR in run.relative_to(root).parts:
        raise LiftError(f"{run} is not a run folder under {root}: only runs made here can be deleted")
    if read_run(run).status == "running":
        raise LiftError(f"{run.name} is still running: stop it before deleting it")
    trash_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{run.name}"
    entry = root / TRASH_DIR / trash_id
    n = 1
    while entry.exists():
        n += 1
        entry = root / TRASH_DIR / f"{trash_id}-{n}"
    entry.mkdir(parents=True)
    write_json(entry / _ORIGIN_FILE, {"path": str(run), "trashed": time.time()})
    shutil.move(str(run), str(entry / "run"))
    return entry.name


def list_trash(root: str | os.PathLike) -> list[dict]:
    """Trashed runs under ``root``, newest first: id, original path, when it was deleted."""
    trash = Path(root) / TRASH_DIR
    found = []
    for entry in sorted(trash.iterdir()) if trash.is_dir() else []:
        try:
            origin = read_json_object(entry / _ORIGIN_FILE)
        except (LiftError, OSError):
            origin = None
        if origin and (entry / "run").is_dir():
            found.append({"id": entry.name, "path": origin["path"], "trashed": origin.get("trashed")})
    return sorted(found, key=lambda e: e["trashed"] or 0, reverse=True)


def restore_run(root: str | os.PathLike, trash_id: str) -> Path:
    """Move a trashed run back where it was; return its path.

    Raises:
        LiftError: no such trashed run, or its old place is taken again.
    """
    entry = Path(root) / TRASH_DIR / trash_id
    origin = read_json_object(entry / _ORIGIN_FILE) if (entry / _ORIGIN_FILE).is_file() else None
    if not origin or not (entry / "run").is_dir() or "/" in trash_id:
        raise LiftError(f"no trashed run {trash_id!r} in {Path(root) / TRASH_DIR}")
    target = Path(origin["path"])
    if target.exists():
        raise LiftError(f"cannot restore {trash_id}: {target} exists again (move it away first)")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(entry / "run"), str(target))
    shutil.rmtree(entry)
    return target
