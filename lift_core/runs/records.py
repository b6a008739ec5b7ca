"""Run records: the files a fine-tuning run leaves behind, written as it goes.

A run directory holds ``config.json`` (every setting plus resolved values), ``metrics.jsonl``
(one JSON object per line, appended and flushed each step so a live reader sees progress)
and, once the run ends, ``summary.json`` (written atomically). While it runs, the writer
holds the folder's claim (:mod:`lift_core.runs.folder`): one writer per folder, and a run
killed without a summary is told from a live one. The app, the CLI and the sample runs all
read records through :func:`read_run`, :func:`list_runs` and :func:`runs_table`;
docs/training.md documents every field, docs/reliability.md what survives a kill or a full
disk.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lift_core.errors import LiftError
from lift_core.jsonio import read_json_object
# Re-exported: the record's file names, the folder check, and the writing side, so that
# callers import run records from one place.
from lift_core.runs.folder import (  # noqa: F401
    CLAIM_FILE, CONFIG_FILE, METRICS_FILE, RECORD_FILES, RECORD_FORMAT, SUMMARY_FILE,
    check_out_dir, describe_owner, owner_state, read_claim,
)
from lift_core.runs.notes import TRASH_DIR, read_notes
from lift_core.runs.writer import PeakMemory, RunRecorder, RunWriter, library_versions  # noqa: F401

# The settings a runs table carries at the end of TABLE_COLUMNS (from config.json), so runs that
# differ in any of them can be told apart in the table and its CSV.
SETTING_COLUMNS = [
    "model", "lora_rank", "filter_rank", "update_interval", "batch_size", "eval_every", "eval_limit",
    "svd", "train_data", "target_eval", "source_eval", "train_examples", "max_length",
]
# Columns of runs_table, in display order.
TABLE_COLUMNS = [
    "run", "method", "seed", "lr", "steps", "status", "steps_done", "target_acc_before",
    "target_acc", "source_acc_before", "source_acc", "forgetting", "trainable_params",
    "optimizer_state_bytes", "peak_memory_bytes", "seconds_per_step", "setup_seconds",
    "mask_seconds", "first_eval_seconds", "wall_seconds", "path",
    "eval_step", "note", "name", "tags", "notes", *SETTING_COLUMNS,
]


@dataclass
class RunRecord:
    """A run read back from disk; ``summary`` is None while the run is still going."""

    path: Path  # the run directory
    config: dict  # config.json as written at the start of the run
    metrics: Any  # pandas.DataFrame, one row per metrics.jsonl line
    summary: dict | None  # summary.json, or None for a run in progress (or killed)
    status: str = "running"  # the summary's status, else running | interrupted (see run_status)
    note: str | None = None  # why it ended or what is odd about the record, in one line


def _parse_metrics(path: Path) -> tuple[list[dict], bool]:
    """(rows, last line cut off): a reader may catch the writer mid-line, and a disk that
    filled up (or a kill) can leave a partial last line; only that line is forgiven."""
    if not path.is_file():
        return [], False
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                return rows, True
            raise LiftError(f"{path} line {number} is not valid JSON: {exc.msg}") from None
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise LiftError(f"{path} line {number} is not a metrics row (a JSON object with a step)")
        rows.append(row)
    return rows, False


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Parse a metrics.jsonl file, ignoring a partially written last line.

    Raises:
        LiftError: when a line other than the last one is not valid JSON, or a line is
            not a metrics row.
    """
    return _parse_metrics(Path(path))[0]


def run_status(run_dir: str | os.PathLike, summary: dict | None = None) -> tuple[str, str | None]:
    """(status, note) of a run: the summary's status once it ended; without a summary,
    "running" while its writer lives (or cannot be checked from this host) and
    "interrupted" once the writer is gone (killed, or its machine stopped)."""
    if summary is not None:
        return str(summary.get("status") or "unknown"), summary.get("error")
    claim = read_claim(Path(run_dir))
    if not claim:  # no claim (a record from before claims), or one being replaced
        return "running", None
    if claim.get("status"):  # the summary could not be written; the claim says how it ended
        return str(claim["status"]), claim.get("error")
    owner = owner_state(claim)
    if owner == "dead":
        return "interrupted", f"{describe_owner(claim)} ended without writing a summary (killed?)"
    if owner == "unknown":
        return "running", f"written by {describe_owner(claim)}, which cannot be checked from here"
    return "running", None


def read_run(run_dir: str | os.PathLike) -> RunRecord:
    """Read a run directory (finished, in progress or interrupted).

    Returns:
        RunRecord with config (dict), metrics (DataFrame, possibly empty), summary (dict,
        or None while the run has not finished), status and note (see :func:`run_status`).

    Raises:
        LiftError: when the directory holds no run record, or a file of it cannot be read.
    """
    import pandas as pd

    path = Path(run_dir).expanduser()
    try:
        config = read_json_object(path / CONFIG_FILE)
        if config is None or not (path / METRICS_FILE).exists():
            raise LiftError(f"{path} is not a run directory (no {CONFIG_FILE} + {METRICS_FILE})")
        rows, cut = _parse_metrics(path / METRICS_FILE)
        summary = read_json_object(path / SUMMARY_FILE)
    except OSError as exc:
        raise LiftError(f"cannot read the run record in {path}: {exc.strerror or exc}") from None
    status, note = run_status(path, summary)
    if cut and status != "running":
        note = "; ".join(filter(None, [note, f"the last line of {METRICS_FILE} is cut off (ignored)"]))
    return RunRecord(path, config, pd.DataFrame(rows), summary, status, note)


def is_run_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a run record (a model directory also has config.json)."""
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and (path / METRICS_FILE).is_file()


def list_runs(*roots: str | os.PathLike) -> list[Path]:
    """Run directories at or anywhere under ``roots`` (missing roots are skipped), sorted."""
    found = set()
    for root in roots:
        root = Path(root).expanduser()
        if not root.is_dir():
            continue
        if is_run_dir(root):
            found.add(root)
        # Runs moved to the trash (lift_core.runs.notes) are not listed.
        found.update(p.parent for p in root.rglob(METRICS_FILE)
                     if is_run_dir(p.parent) and TRASH_DIR not in p.relative_to(root).parts)
    return sorted(found)


def progress_so_far(metrics) -> dict:
    """Steps done and the evaluations of a run without a summary, from its metrics rows:
    the step-0 accuracies are the "before" numbers, the last later evaluation the "after"."""
    out = {"steps_done": int(metrics["step"].max()) if "step" in metrics and len(metrics) else 0}
    if "target_acc" not in metrics or "source_acc" not in metrics:
        return out
    evals = metrics[metrics["target_acc"].notna()]
    first, later = evals[evals["step"] == 0], evals[evals["step"] > 0]
    if len(first):
        out.update(target_acc_before=first["target_acc"].iloc[0], source_acc_before=first["source_acc"].iloc[0])
    if len(later):
        last = later.iloc[-1]
        out.update(target_acc=last["target_acc"], source_acc=last["source_acc"], eval_step=int(last["step"]))
        if len(first):
            out["forgetting"] = out["source_acc_before"] - out["source_acc"]
    return out


def _row(record: RunRecord) -> dict:
    cfg, summary = record.config, record.summary
    row = {
        "run": record.path.name, "path": str(record.path),
        "method": cfg.get("method"), "seed": cfg.get("seed"),
        "lr": cfg.get("lr_used", cfg.get("lr")), "steps": cfg.get("steps"),
        "status": record.status, "note": record.note,
    }
    if summary is None:
        row.update(progress_so_far(record.metrics))
    else:
        row["steps_done"] = summary.get("steps_done", progress_so_far(record.metrics)["steps_done"])
    for key in TABLE_COLUMNS:
        if key not in row:
            row[key] = (summary or {}).get(key)
    notes = read_notes(record.path)
    row.update(name=notes["name"], notes=notes["notes"], tags=", ".join(notes["tags"]))
    row.update({key: cfg.get(key) for key in SETTING_COLUMNS})
    return row


def runs_table(paths) -> Any:
    """One row per run (see TABLE_COLUMNS), never failing on one bad record.

    Unfinished runs show status "running", or "interrupted" once their writer is gone, with
    the steps and evaluations done so far; a record that cannot be read shows status
    "unreadable" and the reason in ``note``.

    Args:
        paths: run directories, e.g. from :func:`list_runs`.
    """
    import pandas as pd

    rows = []
    for path in paths:
        try:
            rows.append(_row(read_run(path)))
        except LiftError as exc:
            rows.append({"run": Path(path).name, "path": str(path), "status": "unreadable", "note": str(exc)})
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def evaluated_after_training(summary: dict) -> bool:
    """True when the summary's accuracies come from an evaluation after some training.

    A stopped or failed run keeps its last complete evaluation, which may be step 0's.
    """
    return summary.get("status") == "completed" or (summary.get("eval_step") or 0) > 0
