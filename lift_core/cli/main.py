"""Command-line interface: ``python -m lift_core analyze|layers|finetune|compare|sweep|apply-delta``.

Mirrors the app: the same core functions, the same defaults (the embedded MiniLM for
exploring, the built-in tiny Llama for training). User errors print one line and exit 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from lift_core.checks import SVD_MODES
from lift_core.errors import LiftError


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="minilm",
                        help="embedded name (minilm, builtin), local model directory or hub id "
                             "(default: minilm)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow the model's own Python code to run (off by default)")


def _add_analyze_parser(sub) -> None:
    p = sub.add_parser("analyze", help="per-layer principal-weight analysis to a CSV table",
                       description="Analyze every linear layer: spectrum summary, LoRA-matched "
                                   "budget and LIFT-vs-magnitude mask overlap.")
    _add_model_args(p)
    p.add_argument("--lora-rank", type=int, default=8,
                   help="budget as a LoRA-equivalent rank: k = min((m+n)*R, m*n) (default 8)")
    p.add_argument("--filter-rank", type=int, default=8,
                   help="rank r of the approximation W_r that scores entries (default 8)")
    p.add_argument("--svd", choices=SVD_MODES, default="exact",
                   help="exact SVD (default) or the accuracy-checked randomized SVD")
    p.add_argument("--blocks-only", action="store_true",
                   help="only linears inside transformer blocks (what LIFT trains)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random baseline and sketch")
    p.add_argument("--out", type=Path, default=Path("report.csv"),
                   help="CSV file for the per-layer table (default report.csv)")
    p.add_argument("--save-masks", type=Path, metavar="FILE.safetensors",
                   help="also write the LIFT masks (bool, keyed by layer name)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_run_analyze)


def _add_layers_parser(sub) -> None:
    p = sub.add_parser("layers", help="list a model's linear layers (name, block, role, shape)")
    _add_model_args(p)
    p.set_defaults(handler=_run_layers)


def _run_analyze(args: argparse.Namespace) -> int:
    from tqdm import tqdm
    from transformers.utils import logging as hf_logging

    from lift_core.analysis.layers import analyze_model, save_masks
    from lift_core.models.loading import load_model
    from lift_core.models.preflight import check_output_file

    # Both outputs are tried before the model loads, not after the whole analysis ran.
    check_output_file(args.out)
    if args.save_masks is not None:
        check_output_file(args.save_masks)
    started = time.perf_counter()
    hf_logging.disable_progress_bar()  # one bar on screen: ours, per layer
    model = load_model(args.model, trust_remote_code=args.trust_remote_code)
    bar = tqdm(total=None, unit="layer", disable=args.no_progress, file=sys.stderr)

    def progress(done: int, total: int, name: str) -> None:
        bar.total = total
        bar.set_postfix_str(name[-40:], refresh=False)
        bar.update(1)

    result = analyze_model(model, lora_rank=args.lora_rank, filter_rank=args.filter_rank,
                           svd=args.svd, blocks_only=args.blocks_only, progress=progress,
                           keep_masks=bool(args.save_masks), seed=args.seed)
    bar.close()
    result.table.to_csv(args.out, index=False)
    if args.save_masks:
        save_masks(str(args.save_masks), result.masks,
                   {"model": args.model, "lora_rank": args.lora_rank,
                    "filter_rank": args.filter_rank, "svd": args.svd})
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    jac = result.table.jaccard_lift_vs_magnitude
    print(f"{len(result.table)} layers analyzed in {time.perf_counter() - started:.1f} s; "
          f"LIFT-vs-magnitude Jaccard {jac.min():.3f}-{jac.max():.3f} (median {jac.median():.3f}); "
          f"table written to {args.out}" + (f", masks to {args.save_masks}" if args.save_masks else ""))
    return 0


def _run_layers(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from lift_core.models.loading import layers_table, load_model

    hf_logging.disable_progress_bar()  # stdout is the table; no loading bar around it
    model = load_model(args.model, trust_remote_code=args.trust_remote_code)
    table = layers_table(model)
    for column in ("block", "expert"):  # integers; blank outside the blocks / experts
        if column in table:
            table[column] = table[column].astype("string").fillna("")
    print(table.to_string(index=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used by the app to preview commands)."""
    parser = argparse.ArgumentParser(prog="python -m lift_core",
                                     description="LIFT Studio: principal-weight analysis and sparse fine-tuning.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_analyze_parser(sub)
    _add_layers_parser(sub)
    try:
        from lift_core.cli.finetune import add_finetune_parser
    except ImportError:  # the trainer is optional for analysis-only use
        pass
    else:
        add_finetune_parser(sub)
        from lift_core.cli.apply_delta import add_apply_delta_parser
        from lift_core.cli.compare import add_compare_parser

        from lift_core.cli.sweep import add_sweep_parser

        add_compare_parser(sub)
        add_sweep_parser(sub)
        add_apply_delta_parser(sub)
        from lift_core.cli.diff import add_diff_parser

        add_diff_parser(sub)
        from lift_core.cli.sensitivity import add_sensitivity_parser

        add_sensitivity_parser(sub)
    return parser


class _WarningLines(logging.Handler):
    """lift_core's warnings as ``warning: ...`` lines on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"warning: {record.getMessage()}", file=sys.stderr)


def _show_warnings() -> None:
    logger = logging.getLogger("lift_core")
    if not any(isinstance(h, _WarningLines) for h in logger.handlers):
        logger.addHandler(_WarningLines(logging.WARNING))
        logger.propagate = False


def _silence_stdout() -> None:
    # Python flushes stdout again at exit; point it at /dev/null so that raises nothing.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 user error, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    args.raw_argv = list(sys.argv[1:] if argv is None else argv)  # what --processes relaunches
    rank = int(os.environ.get("RANK", "0") or 0)
    if rank:  # a data-parallel run's other processes: the main one prints for the run
        _silence_stdout()
    else:
        _show_warnings()
    try:
        if hasattr(args, "handler"):
            code = args.handler(args)
        else:
            from lift_core.cli.finetune import run_finetune

            code = run_finetune(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return code
    except BrokenPipeError:
        _silence_stdout()  # `layers | head`: the reader has what it wanted
        return 0
    except LiftError as exc:
        if not rank:  # every process meets the same bad setting: one line, not N
            print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
