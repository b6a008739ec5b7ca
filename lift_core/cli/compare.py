"""``python -m lift_core compare``: several methods on the same settings, one after another.

The queue itself (one run per method into ``DIR/<method>/``, ``DIR/compare.json``) is
:mod:`lift_core.runs.compare`; this module parses the options (generated from
:class:`~lift_core.train.config.FinetuneConfig`, all but the per-method fields), turns
SIGTERM (the app's Stop) into a clean stop and prints a table at the end.
"""

from __future__ import annotations

import argparse
import sys
import threading
import warnings

from lift_core.cli.finetune import stop_on_sigterm
from lift_core.errors import LiftError
from lift_core.runs.compare import DEFAULT_METHODS, compare_configs, run_queue
from lift_core.runs.records import evaluated_after_training
from lift_core.train.config import FinetuneConfig
from lift_core.train.options import PER_METHOD_FIELDS, add_config_options, given_values
from lift_core.train.registry import method_names, parse_methods


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


def summary_text(state: dict) -> str:
    """A plain-text table of a finished comparison, one line per method."""
    from lift_core.runs.records import is_run_dir, read_run

    def pct(v):
        return "   n/a" if v is None else f"{100 * v:5.1f}%"

    lines = [f"{'method':<14}{'status':<12}{'steps':>11}  {'target':>14}  {'source':>14}  "
             f"{'forgetting':>10}  {'trainable':>10}  {'opt. state':>11}  {'setup s':>7}  "
             f"{'wall s':>7}"]
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
            f"{_seconds(s.get('setup_seconds')):>7}  {s['wall_seconds']:>7.1f}")
    lines.append(f"comparison {state['status']} in {state.get('wall_seconds') or 0:.1f} s; "
                 f"forgetting = source accuracy before - after (points); set-up = model load, "
                 "first masks and evaluation before training (not in seconds per step).")
    return "\n".join(lines)


def _seconds(value) -> str:
    return "–" if value is None else f"{value:.1f}"  # older records have no set-up time
