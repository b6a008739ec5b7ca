"""A comparison: several methods on the same settings, one run each, in a queue.

Each method is an ordinary :func:`lift_core.train.loop.finetune` run into ``DIR/<method>/``
(its own run record, its own default learning rate), so every reader of run records works
on a comparison unchanged. ``DIR/compare.json`` lists the methods and the status of each,
rewritten (atomically) as the queue moves; a set stop event stops the current run cleanly
and the methods not reached yet are "not started". :func:`method_table` (mean and spread
per method) is shared by the CLI and the app's runs pages.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from lift_core.errors import LiftError
from lift_core.jsonio import write_json
from lift_core.train.config import FinetuneConfig
from lift_core.train.registry import compared_by_default

DEFAULT_METHODS = compared_by_default()
COMPARE_FILE = "compare.json"
COMPARE_FORMAT = "lift-compare/1"


def compare_configs(methods: list[str], out: str | os.PathLike, *, overwrite: bool = False, **shared):
    """One FinetuneConfig per method into ``out/<method>``, all validated before any training.

    Args:
        methods: method names, in run order.
        out: the comparison folder.
        overwrite: allow folders that already hold records.
        **shared: any other FinetuneConfig field (the same for every method; not ``lr``).

    Raises:
        LiftError: a bad setting, or a method folder that already holds a run.
    """
    from lift_core.models.preflight import check_output_dir
    from lift_core.runs.records import check_out_dir

    check_output_dir(out)  # "" would otherwise mean the current folder
    out = Path(out).expanduser()
    if (out / COMPARE_FILE).exists() and not overwrite:
        raise LiftError(f"{out} already holds a comparison; choose a new folder or pass --overwrite")
    configs = []
    for method in methods:
        run_dir = out / method
        check_out_dir(run_dir, overwrite=overwrite)
        configs.append(FinetuneConfig(method=method, out_dir=str(run_dir), overwrite=overwrite, **shared))
    return configs


def run_queue(configs, out: str | os.PathLike, *, stop_event: threading.Event | None = None,
              progress: bool = False) -> dict:
    """Train each config in turn, keeping ``out/compare.json`` up to date; return its content.

    A set ``stop_event`` stops the current run ("stopped") and skips the rest ("not
    started"). A run that fails (NaN loss, out of memory, a set-up error such as a filter
    rank too large for the model) is recorded as "failed" and the queue goes on.
    """
    from lift_core.train.loop import finetune

    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    state = {"format": COMPARE_FORMAT, "methods": [c.method for c in configs], "status": "running",
             "started": time.time(), "wall_seconds": None,
             "runs": [{"method": c.method, "path": c.out_dir, "status": "pending", "error": None}
                      for c in configs]}
    began = time.perf_counter()
    _write_state(out, state)
    try:
        for config, entry in zip(configs, state["runs"]):
            if stop_event is not None and stop_event.is_set():
                entry["status"] = "not started"
                continue
            entry["status"] = "running"
            _write_state(out, state)
            try:
                summary = finetune(config, stop_event=stop_event, progress=progress)
            except LiftError as exc:
                entry.update(status="failed", error=str(exc))
            else:
                entry.update(status=summary["status"], error=summary.get("error"))
            _write_state(out, state)
    except KeyboardInterrupt:
        _end(state, out, began)
        raise
    return _end(state, out, began)


def _end(state: dict, out: Path, began: float) -> dict:
    for entry in state["runs"]:
        if entry["status"] in ("pending", "running"):  # interrupted before or during the run
            entry["status"] = "not started" if entry["status"] == "pending" else "stopped"
    statuses = {e["status"] for e in state["runs"]}
    state["status"] = ("completed" if statuses == {"completed"}
                       else "stopped" if statuses & {"stopped", "not started"} else "failed")
    state["wall_seconds"] = round(time.perf_counter() - began, 3)
    _write_state(out, state)
    return state


def _write_state(out: Path, state: dict) -> None:
    write_json(out / COMPARE_FILE, state)


def read_compare(out: str | os.PathLike) -> dict | None:
    """``out/compare.json`` as a dict, or None when it is not there (yet)."""
    try:
        return json.loads((Path(out) / COMPARE_FILE).read_text())
    except (OSError, ValueError):
        return None


def method_table(table, order=DEFAULT_METHODS):
    """Mean and standard deviation per method of a runs table (lift_core.runs.records.runs_table).

    Returns:
        DataFrame, one row per method (``order`` first, then others): ``method, runs`` and
        ``<col>_mean`` / ``<col>_std`` for target/source accuracy (before and after),
        forgetting, trainable_params, optimizer_state_bytes, seconds_per_step, the set-up
        (setup_seconds, mask_seconds, first_eval_seconds) and wall_seconds. std is NaN for
        a single run.
    """
    import pandas as pd

    cols = ["target_acc_before", "target_acc", "source_acc_before", "source_acc", "forgetting",
            "trainable_params", "optimizer_state_bytes", "seconds_per_step", "setup_seconds",
            "mask_seconds", "first_eval_seconds", "wall_seconds"]
    rows = []
    methods = [m for m in order if m in set(table["method"])]
    methods += sorted(set(table["method"].dropna()) - set(methods))
    for method in methods:
        group = table[table["method"] == method]
        row = {"method": method, "runs": len(group)}
        for col in cols:
            # A table from before a column existed (set-up times) gives NaN, not an error.
            values = pd.to_numeric(group.get(col, pd.Series(dtype=float)), errors="coerce")
            row[f"{col}_mean"] = values.mean()
            row[f"{col}_std"] = values.std(ddof=1) if values.count() > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows, columns=["method", "runs"] + [f"{c}_{s}" for c in cols for s in ("mean", "std")])
