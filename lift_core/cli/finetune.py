"""``python -m lift_core finetune``: one fine-tuning run from the command line.

The options are generated from :class:`lift_core.train.config.FinetuneConfig`, one per field,
with the field's docstring as help (:mod:`lift_core.train.options`): a new setting is one
edit there. Every default and check lives in the config, so the CLI, the app and the
tests cannot drift apart; options left out keep the config's defaults (the built-in model
and tasks, method lift). User errors are raised as LiftError, which lift_core.cli.main prints
as one line.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import warnings
from contextlib import contextmanager

from lift_core.distributed.launch import launch_ranks, launched_world_size, process_rank
from lift_core.errors import LiftError
from lift_core.jsonio import read_json_object
from lift_core.runs.records import evaluated_after_training
from lift_core.train.config import FinetuneConfig
from lift_core.train.options import OPTION_FLAGS, add_config_options, given_values
from lift_core.train.registry import get_method, methods_help

_METAVARS = {"out_dir": "DIR", "checkpoint_every": "N"}


def add_finetune_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``finetune`` sub-command to ``subparsers`` and return its parser."""
    p = subparsers.add_parser(
        "finetune", help="fine-tune with LIFT or a baseline and write a run record",
        description="Fine-tune a causal LM with LIFT or a baseline at a matched budget, "
                    "measuring target accuracy and forgetting; writes config.json, "
                    "metrics.jsonl and summary.json to --out.",
        epilog=f"Methods: {methods_help()}.")
    add_config_options(p, FinetuneConfig, flags=OPTION_FLAGS, required={"out_dir"},
                       metavars=_METAVARS)
    out = next(action for action in p._actions if action.dest == "out_dir")
    p.add_argument("--resume", metavar="RUN_DIR", action=_ResumeAction, out_action=out,
                   help="continue the stopped, failed or killed run in RUN_DIR from its last "
                        "checkpoint (its settings come from its config.json; no other options)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_finetune)
    return p


class _ResumeAction(argparse.Action):
    """``--resume RUN_DIR``: the run folder is RUN_DIR, so ``--out`` is no longer required."""

    def __init__(self, *args, out_action: argparse.Action, **kwargs):
        super().__init__(*args, **kwargs)
        self.out_action = out_action

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        self.out_action.required = False  # argparse checks required options after parsing


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    """A FinetuneConfig from parsed arguments; options not given keep the config defaults.

    With ``--resume RUN_DIR``: the settings of that run's config.json, writing to RUN_DIR.
    """
    given = given_values(args, FinetuneConfig)
    if getattr(args, "resume", None):
        if given:
            raise LiftError("--resume takes no other settings: the run continues with those in "
                            "its config.json")
        return resumed_config(args.resume)
    if "out_dir" not in given:
        raise LiftError("finetune needs --out DIR (the run folder), or --resume RUN_DIR")
    return FinetuneConfig(**given)


def resumed_config(run_dir: str) -> FinetuneConfig:
    """The settings of the run in ``run_dir`` (its config.json), to continue it there."""
    from dataclasses import fields

    from lift_core.runs.folder import check_resumable

    record = read_json_object(check_resumable(run_dir) / "config.json")
    names = {f.name for f in fields(FinetuneConfig)}
    settings = {k: v for k, v in record.items() if k in names}
    return FinetuneConfig(**{**settings, "out_dir": str(run_dir), "overwrite": False})


def run_finetune(args: argparse.Namespace) -> int:
    """Run ``finetune`` for parsed arguments; print a summary paragraph.

    SIGTERM (how the app's job manager stops a job) ends the run like the app's stop
    button: after the current step, status "stopped", record intact.

    Returns:
        0 when the run completed, 1 when it was stopped or failed (NaN loss, out of memory).

    Raises:
        LiftError: bad settings or data (lift_core.cli.main prints it as one line).
    """
    from transformers.utils import logging as hf_logging

    from lift_core.train.loop import finetune

    config = config_from_args(args)
    if config.processes > 1 and launched_world_size() == 1:
        return launch_ranks(config.processes, args.raw_argv, threads=config.threads)
    hf_logging.disable_progress_bar()  # keep stderr to our one bar
    # peft calls a transformers property that transformers 5 deprecates; not the user's concern.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    stop = threading.Event()
    with stop_on_sigterm(stop):
        summary = finetune(config, stop_event=stop, progress=not args.no_progress,
                           resume=bool(getattr(args, "resume", None)))
    if process_rank():  # the main process reports the run
        return 0 if summary["status"] == "completed" else 1
    print(summary_paragraph(summary, config.out_dir))
    if summary["status"] == "stopped":
        print(f"stopped: {summary['error']}", file=sys.stderr)
        return 1
    if summary["status"] != "completed":
        print(f"error: {summary['error']}", file=sys.stderr)
        return 1
    return 0


@contextmanager
def stop_on_sigterm(stop: threading.Event):
    """Turn SIGTERM into ``stop.set()`` for the duration (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _accuracy_text(s: dict) -> str:
    if not evaluated_after_training(s):
        return (f"no evaluation after training (before: target accuracy "
                f"{_pct(s.get('target_acc_before'))}, source accuracy "
                f"{_pct(s.get('source_acc_before'))})")
    forgetting = s.get("forgetting")
    where = "" if s.get("status") == "completed" else f"last evaluation at step {s['eval_step']}: "
    return (f"{where}target accuracy {_pct(s.get('target_acc_before'))} -> {_pct(s.get('target_acc'))}, "
            f"source accuracy {_pct(s.get('source_acc_before'))} -> {_pct(s.get('source_acc'))} "
            f"(forgetting {'n/a' if forgetting is None else f'{100 * forgetting:+.1f} points'})")


def summary_paragraph(summary: dict, out_dir: str | None = None) -> str:
    """One paragraph that says what a run did, for the terminal."""
    s = summary
    state = (s.get("optimizer_state_bytes") or 0) / 2**20
    per_step = s.get("seconds_per_step")
    text = (
        f"{s['method']} on {s['model']} {s['status']} after {s['steps_done']}/{s['steps']} "
        f"steps in {s['wall_seconds']:.1f} s"
        + (f" ({1000 * per_step:.0f} ms/step)" if per_step else "")
        + f": {_accuracy_text(s)}; "
        f"{s['trainable_params']:,} trainable numbers, optimizer state {state:.2f} MiB, "
        f"peak memory {(s.get('peak_memory_bytes') or 0) / 2**20:.0f} MiB."
    )
    clipped = s.get("budget_clipped_layers")
    if clipped and get_method(s["method"]).kind == "adapter":
        text += (f" Note: in {clipped} layer(s) the LoRA rank exceeded m*n/(m+n), so it was "
                 "clipped there (config.json, budget.layers).")
    elif clipped:
        text += (f" Note: in {clipped} layer(s) (m+n)*lora_rank exceeded m*n, "
                 "so the budget was clipped to the whole matrix.")
    if out_dir:
        text += f" Run record in {out_dir}."
    return text
