"""``python -m lift_core finetune``: one fine-tuning run from the command line.

The parser only collects settings; every default and check lives in
:class:`lift_core.training.FinetuneConfig`, so the CLI, the app and the tests cannot
drift apart. Options left out keep the config's defaults (the built-in model and tasks,
method lift). User errors are raised as LiftError, which lift_core.cli prints as one line.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import warnings
from contextlib import contextmanager
from dataclasses import fields

from lift_core.methods import METHODS

# CLI option -> FinetuneConfig field, for the options whose names differ only by dashes.
FINETUNE_OPTIONS = [
    ("--model", str, "embedded name (builtin), local model directory or hub id of a causal LM "
                     "(default: builtin)"),
    ("--steps", int, "optimizer steps"),
    ("--lr", float, "peak learning rate (default: the method's, see docs/training.md)"),
    ("--lora-rank", int, "LoRA rank, and the budget of the sparse methods: "
                         "k = min((m+n)*R, m*n) per matrix (LoRA's rank is clipped to "
                         "m*n/(m+n) where R is larger)"),
    ("--filter-rank", int, "rank r of W_r that scores entries (lift, lift_smallest)"),
    ("--update-interval", int, "steps between mask refreshes (sparse methods)"),
    ("--seed", int, "seed of data order, LoRA init and the random mask"),
    ("--batch-size", int, "training examples per step"),
    ("--eval-every", int, "evaluate every N steps (and at the end)"),
    ("--eval-limit", int, "evaluate on at most N examples of each eval set"),
    ("--max-new-tokens", int, "generation length when evaluating (default: longest answer + 8)"),
    ("--train-examples", int, "size of the built-in training set"),
    ("--warmup-ratio", float, "fraction of steps of linear warmup (default 0.03)"),
    ("--threads", int, "torch CPU threads"),
    ("--train-data", str, "Alpaca JSON/JSONL training file (default: the built-in target task)"),
    ("--target-eval", str, "Alpaca JSON/JSONL target eval file (default: built-in)"),
    ("--source-eval", str, "Alpaca JSON/JSONL source eval file, to measure forgetting "
                           "(default: built-in)"),
]


def add_training_options(parser: argparse.ArgumentParser, options) -> None:
    """Add ``options`` (flag, type, help) plus --svd and --device, all defaulting to None."""
    for flag, kind, text in options:
        parser.add_argument(flag, type=kind, default=None, help=text)
    parser.add_argument("--svd", choices=["exact", "randomized"], default=None,
                        help="SVD for the LIFT masks (default: exact)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                        help="auto (CUDA when present, bf16), cpu or cuda")


def add_finetune_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``finetune`` sub-command to ``subparsers`` and return its parser."""
    p = subparsers.add_parser(
        "finetune", help="fine-tune with LIFT or a baseline and write a run record",
        description="Fine-tune a causal LM with LIFT or a baseline at a matched budget, "
                    "measuring target accuracy and forgetting; writes config.json, "
                    "metrics.jsonl and summary.json to --out.")
    p.add_argument("--method", choices=METHODS, default=None,
                   help="what to train (default: lift)")
    add_training_options(p, FINETUNE_OPTIONS)
    p.add_argument("--out", required=True, metavar="DIR", help="run directory (must be new or empty)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run record in a non-empty --out")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow a hub model's own Python code (off by default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_finetune)
    return p


def config_from_args(args: argparse.Namespace):
    """A FinetuneConfig from parsed arguments; options not given keep the config defaults."""
    from lift_core.training import FinetuneConfig

    names = {f.name for f in fields(FinetuneConfig)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    given["out_dir"] = args.out
    given["overwrite"] = bool(args.overwrite)
    given["trust_remote_code"] = bool(getattr(args, "trust_remote_code", False))
    return FinetuneConfig(**given)


def run_finetune(args: argparse.Namespace) -> int:
    """Run ``finetune`` for parsed arguments; print a summary paragraph.

    SIGTERM (how the app's job manager stops a job) ends the run like the app's stop
    button: after the current step, status "stopped", record intact.

    Returns:
        0 when the run completed, 1 when it was stopped or failed (NaN loss, out of memory).

    Raises:
        LiftError: bad settings or data (lift_core.cli prints it as one line).
    """
    from transformers.utils import logging as hf_logging

    from lift_core.training import finetune

    config = config_from_args(args)
    hf_logging.disable_progress_bar()  # keep stderr to our one bar
    # peft calls a transformers property that transformers 5 deprecates; not the user's concern.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    stop = threading.Event()
    with stop_on_sigterm(stop):
        summary = finetune(config, stop_event=stop, progress=not args.no_progress)
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


def evaluated_after_training(summary: dict) -> bool:
    """True when the summary's accuracies come from an evaluation after some training.

    A stopped or failed run keeps its last complete evaluation, which may be step 0's.
    """
    return summary.get("status") == "completed" or (summary.get("eval_step") or 0) > 0


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
    if clipped and s["method"] == "lora":
        text += (f" Note: in {clipped} layer(s) the LoRA rank exceeded m*n/(m+n), so it was "
                 "clipped there (config.json, budget.layers).")
    elif clipped:
        text += (f" Note: in {clipped} layer(s) (m+n)*lora_rank exceeded m*n, "
                 "so the budget was clipped to the whole matrix.")
    if out_dir:
        text += f" Run record in {out_dir}."
    return text
