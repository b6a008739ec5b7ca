"""``python -m lift_core compare``: several methods on the same settings, one after another.

Each method is an ordinary :func:`lift_core.training.finetune` run into ``DIR/<method>/``
(its own run record, its own default learning rate), so every reader of run records works
on a comparison unchanged. ``DIR/compare.json`` lists the methods and the status of each,
rewritten as the queue moves. SIGTERM (the app's Stop) stops the current run cleanly
("stopped", record intact) and the methods not reached yet are "not started".
:func:`method_table` (mean and spread per method) is shared with the app's runs page.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import warnings
from pathlib import Path

from lift_core.config_options import add_config_options, given_values
from lift_core.errors import LiftError
from lift_core.finetune_cli import evaluated_after_training, stop_on_sigterm
from lift_core.method_registry import compared_by_default, method_names
from lift_core.training import FinetuneConfig

DEFAULT_METHODS = compared_by_default()
COMPARE_FILE = "compare.json"
COMPARE_FORMAT = "lift-compare/1"
# FinetuneConfig fields that differ per method: every other one is an option of `compare`
# (generated from the config, as for `finetune`), the same for every method.
PER_METHOD_FIELDS = ("method", "lr", "out_dir")


def add_compare_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``compare`` sub-command to ``subparsers`` and return its parser."""
    p = subparsers.add_parser(
        "compare", help="fine-tune several methods in a row on the same settings",
        description="Run LIFT and its baselines one after another with the same settings "
                    "(each with its own default learning rate); each writes a normal run "
                    "record to DIR/<method>/, DIR/compare.json lists their status.")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated, run in this order (default: {','.join(DEFAULT_METHODS)}; "
                        f"allowed: {', '.join(method_names())})")
    add_config_options(p, FinetuneConfig, skip=PER_METHOD_FIELDS)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for the runs, one sub-folder per method (new or empty)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=run_compare)
    return p


def parse_methods(text: str) -> list[str]:
    """``"lift,full"`` -> ``["lift", "full"]``; raises LiftError on unknown or repeated names."""
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise LiftError("--methods is empty: give at least one of " + ", ".join(method_names()))
    unknown = [m for m in methods if m not in method_names()]
    if unknown:
        raise LiftError(f"unknown method(s) {', '.join(unknown)} (allowed: {', '.join(method_names())})")
    if len(set(methods)) != len(methods):
        raise LiftError(f"--methods names a method twice: {text}")
    return methods


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
    from lift_core.preflight import check_output_dir
    from lift_core.records import check_out_dir

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
    from lift_core.training import finetune

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
    tmp = out / f".{COMPARE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, out / COMPARE_FILE)


def read_compare(out: str | os.PathLike) -> dict | None:
    """``out/compare.json`` as a dict, or None when it is not there (yet)."""
    try:
        return json.loads((Path(out) / COMPARE_FILE).read_text())
    except (OSError, ValueError):
        return None


def run_compare(args: argparse.Namespace) -> int:
    """Run ``compare`` for parsed arguments and print a summary table.

    Returns:
        0 when every run completed, 1 when one was stopped or failed.

    Raises:
        LiftError: bad settings (before anything is trained).
    """
    from transformers.utils import logging as hf_logging

    shared = given_values(args, FinetuneConfig, skip=PER_METHOD_FIELDS + ("overwrite",))
    configs = compare_configs(parse_methods(args.methods), args.out,
                              overwrite=bool(args.overwrite), **shared)
    hf_logging.disable_progress_bar()
    # peft calls a transformers property that transformers 5 deprecates; not the user's concern.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    stop = threading.Event()
    with stop_on_sigterm(stop):
        state = run_queue(configs, args.out, stop_event=stop, progress=not args.no_progress)
    print(summary_text(state))
    if state["status"] != "completed":
        print(f"comparison {state['status']}: " + ", ".join(
            f"{e['method']} {e['status']}" for e in state["runs"]), file=sys.stderr)
        return 1
    return 0


def method_table(table, order=DEFAULT_METHODS):
    """Mean and standard deviation per method of a runs table (lift_core.records.runs_table).

    Returns:
        DataFrame, one row per method (``order`` first, then others): ``method, runs`` and
        ``<col>_mean`` / ``<col>_std`` for target/source accuracy (before and after),
        forgetting, trainable_params, optimizer_state_bytes, seconds_per_step and
        wall_seconds. std is NaN for a single run.
    """
    import pandas as pd

    cols = ["target_acc_before", "target_acc", "source_acc_before", "source_acc", "forgetting",
            "trainable_params", "optimizer_state_bytes", "seconds_per_step", "wall_seconds"]
    rows = []
    methods = [m for m in order if m in set(table["method"])]
    methods += sorted(set(table["method"].dropna()) - set(methods))
    for method in methods:
        group = table[table["method"] == method]
        row = {"method": method, "runs": len(group)}
        for col in cols:
            values = pd.to_numeric(group[col], errors="coerce")
            row[f"{col}_mean"] = values.mean()
            row[f"{col}_std"] = values.std(ddof=1) if values.count() > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows, columns=["method", "runs"] + [f"{c}_{s}" for c in cols for s in ("mean", "std")])


def summary_text(state: dict) -> str:
    """A plain-text table of a finished comparison, one line per method."""
    from lift_core.records import is_run_dir, read_run

    def pct(v):
        return "   n/a" if v is None else f"{100 * v:5.1f}%"

    lines = [f"{'method':<14}{'status':<12}{'steps':>11}  {'target':>14}  {'source':>14}  "
             f"{'forgetting':>10}  {'trainable':>10}  {'opt. state':>11}  {'wall s':>7}"]
    for entry in state["runs"]:
        s = read_run(entry["path"]).summary if is_run_dir(entry["path"]) else None
        if not s:
            lines.append(f"{entry['method']:<14}{entry['status']:<12}"
                         + (f"  {entry['error']}" if entry.get("error") else ""))
            continue
        after = evaluated_after_training(s)  # else the "after" numbers are step 0's
        forgetting = ("n/a" if s.get("forgetting") is None or not after
                      else f"{100 * s['forgetting']:+.1f} pt")
        lines.append(
            f"{entry['method']:<14}{entry['status']:<12}{s['steps_done']:>5}/{s['steps']:<5}  "
            f"{pct(s.get('target_acc_before'))}->{pct(s.get('target_acc') if after else None)}  "
            f"{pct(s.get('source_acc_before'))}->{pct(s.get('source_acc') if after else None)}  "
            f"{forgetting:>10}  "
            f"{s['trainable_params']:>10,}  {(s.get('optimizer_state_bytes') or 0) / 2**10:>7.0f} KiB  "
            f"{s['wall_seconds']:>7.1f}")
    lines.append(f"comparison {state['status']} in {state.get('wall_seconds') or 0:.1f} s; "
                 f"forgetting = source accuracy before - after (points).")
    return "\n".join(lines)
