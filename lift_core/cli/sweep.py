"""``python -m lift_core sweep``: a grid of fine-tuning runs as one resumable job.

The grid (``--methods``, ``--lrs``, ``--seeds``, ``--budgets``) and the runs it stands for are
:mod:`lift_core.sweeps.plan`; running them and keeping ``DIR/sweep.json`` is
:mod:`lift_core.sweeps.runner`. This module parses the options (every finetune setting but
the per-run ones, generated from :class:`~lift_core.train.config.FinetuneConfig`), shows one
progress line over the whole sweep, turns SIGTERM and a first Ctrl-C into a clean stop, and
prints the sweep's summary table at the end (or for ``--report DIR``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

from lift_core.cli.finetune import stop_on_sigterm
from lift_core.errors import LiftError
from lift_core.runs.compare import DEFAULT_METHODS
from lift_core.sweeps.plan import GRID_FIELDS, SweepGrid, parse_grid, plan_runs
from lift_core.sweeps.runner import SWEEP_FILE, read_index, run_sweep
from lift_core.train.config import FinetuneConfig
from lift_core.train.options import add_config_options, config_argv, given_values
from lift_core.train.registry import method_names, methods_help

# Shared settings the sweep sets itself (``lora_rank`` stays an option: the budget without --budgets).
_PER_RUN = tuple(f for f in GRID_FIELDS if f != "lora_rank")


def add_sweep_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``sweep`` sub-command to ``subparsers`` and return its parser."""
    p = subparsers.add_parser(
        "sweep", help="a grid of runs (methods x learning rates x seeds x budgets) as one "
                      "resumable job",
        description="Fine-tune every combination of the grid, one run after another, each into "
                    "DIR/<method>[-b<R>]-lr<lr>-s<seed>/ (a normal run record); DIR/sweep.json "
                    "lists their status. Run the same command again to continue a stopped or "
                    "killed sweep: completed runs are skipped.",
        epilog=f"Methods: {methods_help()}.")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated (default: {','.join(DEFAULT_METHODS)}; allowed: "
                        f"{', '.join(method_names())})")
    p.add_argument("--lrs", metavar="LR,...",
                   help="comma-separated learning rates (default: each method's own)")
    p.add_argument("--seeds", default="0", metavar="S,...", help="comma-separated seeds (default: 0)")
    p.add_argument("--budgets", metavar="R,...",
                   help="comma-separated budgets as LoRA-equivalent ranks (the lora_rank setting; "
                        "full fine-tuning has none); default: one budget, --lora-rank")
    add_config_options(p, FinetuneConfig, skip=_PER_RUN)
    p.add_argument("--out", metavar="DIR", help="the sweep folder (new, empty or an earlier sweep's)")
    p.add_argument("--overwrite", action="store_true",
                   help="train completed runs again too (their records are replaced)")
    p.add_argument("--report", metavar="DIR",
                   help="print the summary table of the sweep in DIR and write its CSVs; trains nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_sweep_command)
    return p


def sweep_argv(grid: SweepGrid, shared: dict, out) -> list[str]:
    """The ``python -m lift_core`` arguments that run (or continue) this sweep."""
    argv = ["sweep", "--methods", ",".join(grid.methods)]
    if grid.lrs is not None:
        argv += ["--lrs", ",".join(repr(v) for v in grid.lrs)]
    argv += ["--seeds", ",".join(str(s) for s in grid.seeds)]
    if grid.budgets is not None:
        argv += ["--budgets", ",".join(str(b) for b in grid.budgets)]
    return argv + config_argv(FinetuneConfig(**shared), skip=_PER_RUN) + ["--out", str(out)]


def run_sweep_command(args: argparse.Namespace) -> int:
    """Run ``sweep`` for parsed arguments (or ``--report``) and print the summary.

    Returns:
        0 when every run completed, 1 when the sweep was stopped or a run failed.

    Raises:
        LiftError: bad grid values or settings, or a folder that is not a sweep's (before
            anything is trained).
    """
    if args.report:
        print_report(args.report)
        return 0
    if not args.out:
        raise LiftError("sweep needs --out DIR (the sweep folder), or --report DIR")
    from transformers.utils import logging as hf_logging

    grid = parse_grid(args.methods, args.lrs, args.seeds, args.budgets)
    shared = given_values(args, FinetuneConfig, skip=_PER_RUN)
    runs = plan_runs(grid, args.out, **shared)
    hf_logging.disable_progress_bar()  # stderr keeps our one line
    # peft calls a transformers property that transformers 5 deprecates; not the user's concern.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    stop = threading.Event()
    bar = _SweepBar(len(runs), disabled=args.no_progress)
    try:
        with _stop_on_signals(stop):
            index = run_sweep(runs, grid, args.out, argv=sweep_argv(grid, shared, args.out),
                              stop_event=stop, rerun_completed=args.overwrite, on_change=bar.show)
    finally:
        bar.close()
    print_report(args.out)
    return _final_lines(index, Path(args.out))


def print_report(sweep_dir) -> None:
    """Print the sweep's summary table and write its CSVs (lift_core.sweeps.views); without
    the views module, each run's status."""
    try:
        from lift_core.sweeps import views
    except ImportError:
        views = None
    if views is None:
        index = read_index(sweep_dir)
        if index is None:
            raise LiftError(f"{sweep_dir} holds no {SWEEP_FILE} (give a folder written by `sweep --out`)")
        for entry in index["runs"]:
            print(f"{entry['name']:<32}{entry['status']:<12}{_seconds(entry.get('seconds'))}")
        return
    print(views.summary_table(sweep_dir))
    written = views.write_csvs(sweep_dir)
    print("CSV tables: " + ", ".join(str(path) for path in written))


def _final_lines(index: dict, out: Path) -> int:
    runs = index["runs"]
    completed = sum(e["status"] == "completed" for e in runs)
    print(f"sweep {index['status']}: {completed}/{index['total']} runs completed; "
          f"index {out / SWEEP_FILE}")
    for entry in runs:
        if entry["status"] not in ("completed", "pending"):
            print(f"{entry['name']} {entry['status']}: {entry.get('error') or ''}", file=sys.stderr)
    if index["status"] == "stopped":
        print("stopped: run the same command again to continue the sweep", file=sys.stderr)
    return 0 if index["status"] == "completed" else 1


def _seconds(value) -> str:
    return "" if value is None else f"{value:.1f} s"


class _SweepBar:
    """One tqdm line on stderr over the whole sweep: runs done, the current run, its step, ETA."""

    def __init__(self, total: int, *, disabled: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="run", disable=disabled, file=sys.stderr,
                        dynamic_ncols=True, bar_format="sweep {bar} {n}/{total} runs [{elapsed}{postfix}]")
        self.shown = 0.0

    def show(self, index: dict, row: dict | None) -> None:
        if self.bar.disable or (row is not None and time.monotonic() - self.shown < 0.5):
            return  # a step row redraws at most twice a second
        runs = index["runs"]
        current = next((i for i, e in enumerate(runs) if e["status"] == "running"), None)
        parts = []
        if current is not None:
            step = f" step {row['step']}" if row is not None and "step" in row else ""
            parts.append(f"run {current + 1}/{len(runs)} {runs[current]['name']}{step}")
        if index.get("eta_seconds") is not None:
            parts.append(f"ETA {_duration(index['eta_seconds'])}")
        self.bar.n = index["done"]
        self.bar.set_postfix_str(", ".join(parts), refresh=False)
        self.bar.refresh()
        self.shown = time.monotonic()

    def close(self) -> None:
        self.bar.close()


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


@contextmanager
def _stop_on_signals(stop: threading.Event):
    """SIGTERM and a first Ctrl-C set ``stop`` (the current run ends "stopped", the sweep
    too); a second Ctrl-C interrupts at once. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_interrupt(signum, frame):
        print("\nstopping after the current step (Ctrl-C again to interrupt at once)", file=sys.stderr)
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        with stop_on_sigterm(stop):
            yield
    finally:
        signal.signal(signal.SIGINT, previous)
