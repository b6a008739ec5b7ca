"""``python -m lift_core diff``: what fine-tuning changed (ΔW), per layer, for one or more runs.

Three ways to name what to compare: a run folder with a saved model (``--run``), several
run folders or comparison folders (``--runs A,B``; one long table with ``run`` and
``method`` columns), or any two model directories (``--base M --tuned DIR``). The measures
are :mod:`lift_core.analysis.delta`'s; ``--generations N`` also prints the base's and the
tuned model's answers to N target and N source prompts (:mod:`lift_core.analysis.generations`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lift_core.errors import LiftError


def add_diff_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``diff`` sub-command to ``subparsers`` and return its parser."""
    p = subparsers.add_parser(
        "diff", help="per-layer ΔW between a base and a fine-tuned model (CSV)",
        description="Measure W_tuned - W_base for every block linear: relative size, largest "
                    "entry, energy on the base's LIFT and magnitude masks, stable/effective rank, "
                    "principal angles of the top-r subspaces, spectral-norm change.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", metavar="DIR", help="a run folder with a saved model (finetune --save)")
    what.add_argument("--runs", metavar="DIR,DIR,...",
                      help="several run folders, or comparison folders (their runs with saved models)")
    what.add_argument("--tuned", metavar="DIR", help="a fine-tuned model directory (with --base)")
    p.add_argument("--base", help="the base model of --tuned (alias, directory or hub id)")
    p.add_argument("--filter-rank", type=int,
                   help="r of the LIFT mask and the compared subspaces (default: the run's, else 4)")
    p.add_argument("--lora-rank", type=int,
                   help="budget rank of both masks, ΔW's rank is set against it (default: the run's, else 4)")
    p.add_argument("--all-layers", action="store_true", help="every linear, not only block linears")
    p.add_argument("--generations", type=int, default=0, metavar="N",
                   help="also print both models' answers to N target and N source prompts")
    p.add_argument("--out", type=Path, help="CSV file for the per-layer table")
    p.add_argument("--generations-out", type=Path, metavar="FILE.csv",
                   help="CSV file for the before/after answers")
    p.set_defaults(handler=run_diff)
    return p


def _pairs(args: argparse.Namespace):
    from lift_core.analysis.delta import ModelPair, expand_run_dirs, run_pair

    ranks = dict(filter_rank=args.filter_rank, lora_rank=args.lora_rank)
    if args.tuned:
        if not args.base:
            raise LiftError("--tuned needs --base (the model it was fine-tuned from)")
        return [ModelPair(label=Path(args.tuned).name or "tuned", method="", base=args.base,
                          tuned=args.tuned, filter_rank=args.filter_rank or 4,
                          lora_rank=args.lora_rank or 4)]
    if args.base:
        raise LiftError("--base goes with --tuned; a run folder names its own base")
    if args.run:
        return [run_pair(args.run, **ranks)]
    dirs = [d for d in args.runs.split(",") if d.strip()]
    if not dirs:
        raise LiftError("--runs is empty: give run folders separated by commas")
    return [run_pair(d, **ranks) for d in expand_run_dirs(dirs)]


def run_diff(args: argparse.Namespace) -> int:
    """Run ``diff`` for parsed arguments: the table, its summary, optionally the generations."""
    from lift_core.analysis.delta import method_summary, pairs_delta_table
    from lift_core.models.preflight import check_output_file

    for path in (args.out, args.generations_out):
        if path is not None:
            check_output_file(path)
    if args.generations < 0:
        raise LiftError(f"--generations must be >= 0, got {args.generations}")
    pairs = _pairs(args)
    result = pairs_delta_table(pairs, blocks_only=not args.all_layers,
                               progress=lambda label: print(f"comparing {label} ...", file=sys.stderr))
    if args.out is not None:
        result.table.to_csv(args.out, index=False)
    print(method_summary(result.table).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"{len(result.table)} layer rows (medians over layers above)"
          + (f"; table written to {args.out}" if args.out else ""))
    if args.generations:
        _print_generations(pairs, args.generations, args.generations_out)
    return 0


def _print_generations(pairs, n: int, out: Path | None) -> None:
    import pandas as pd

    from lift_core.analysis.delta import load_tuned
    from lift_core.analysis.generations import before_after, run_prompts
    from lift_core.jsonio import read_json_object
    from lift_core.models.loading import load_model, load_tokenizer

    tables = []
    for pair in pairs:
        config = (read_json_object(pair.run_dir / "config.json") or {}) if pair.run_dir else {}
        base = load_model(pair.base, kind="causal")
        table = before_after(base, load_tuned(pair.tuned, base), load_tokenizer(pair.base),
                             run_prompts(config, n))
        tables.append(table.assign(run=pair.label))
        print(f"\n== {pair.label}: base -> tuned ==")
        for row in table.itertuples(index=False):
            marks = "".join("✓" if ok else "✗" for ok in (row.base_correct, row.tuned_correct))
            print(f"[{row.task}] {marks} {row.prompt.strip()!r}\n    base:  {row.base!r}\n    tuned: {row.tuned!r}")
    if out is not None:
        pd.concat(tables, ignore_index=True).to_csv(out, index=False)
        print(f"generations written to {out}")
