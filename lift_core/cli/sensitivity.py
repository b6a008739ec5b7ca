"""``python -m lift_core sensitivity``: the paper's noise-sensitivity test as one command.

Adds Gaussian noise to the k entries each selector picks (LIFT, magnitude, random,
LIFT-smallest) in every block linear or one layer, at several scales and draws, measures the
model each time (:mod:`lift_core.analysis.sensitivity`), prints the mean ± std table and
writes one CSV row per (selector, scale, draw).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lift_core.errors import LiftError


def _numbers(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise LiftError(f"--{what} must be numbers separated by commas, got {text!r}") from None


def add_sensitivity_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``sensitivity`` sub-command to ``subparsers`` and return its parser."""
    from lift_core.analysis.sensitivity import DEFAULT_SCALES, MAX_PERTURBATIONS, SELECTORS

    selectors = ",".join(s.replace("_", "-") for s in SELECTORS)
    p = subparsers.add_parser(
        "sensitivity", help="noise on the entries LIFT / magnitude / random pick: how much it hurts",
        description="Add Gaussian noise (scale x each matrix's std) to the k = (m+n)*R entries "
                    "each selector picks, restore them after each draw, and measure the model: "
                    "loss and accuracy on the built-in eval sets (causal LMs) or the cosine of "
                    "fixed sentences' embeddings to the clean model's (encoders), plus each "
                    f"matrix's spectral-norm change. At most {MAX_PERTURBATIONS} evaluations.")
    p.add_argument("--model", default="builtin",
                   help="embedded name (builtin, minilm), local model directory or hub id (default: builtin)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow the model's own Python code to run (off by default)")
    p.add_argument("--selectors", default=selectors, help=f"which entries get the noise (default {selectors})")
    p.add_argument("--scales", default=",".join(f"{s:g}" for s in DEFAULT_SCALES),
                   help="noise std in units of each matrix's std(W), comma-separated (default %(default)s)")
    p.add_argument("--draws", type=int, default=3, help="noise draws per selector and scale (default 3)")
    p.add_argument("--budget-rank", type=int, default=4,
                   help="entries per matrix as a LoRA-equivalent rank: k = min((m+n)*R, m*n) (default 4)")
    p.add_argument("--filter-rank", type=int, default=4, help="rank r of W_r that scores LIFT (default 4)")
    p.add_argument("--layer", help="perturb only this layer (default: every block linear)")
    p.add_argument("--eval-limit", type=int, metavar="N",
                   help="causal LMs: at most N examples of each eval set (default: all 150)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise and the random selector")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch CPU threads (default: torch's choice; 1 on a busy small machine)")
    p.add_argument("--out", type=Path, default=Path("sensitivity.csv"),
                   help="CSV file, one row per (selector, scale, draw) (default sensitivity.csv)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_sensitivity)
    return p


def _config(args: argparse.Namespace):
    from lift_core.analysis.sensitivity import SensitivityConfig

    selectors = tuple(s for s in args.selectors.split(",") if s.strip())
    return SensitivityConfig(selectors=selectors, scales=_numbers(args.scales, "scales"), draws=args.draws,
                             budget_rank=args.budget_rank, filter_rank=args.filter_rank, layer=args.layer,
                             eval_limit=args.eval_limit, seed=args.seed)


def run_sensitivity(args: argparse.Namespace) -> int:
    """Run ``sensitivity`` for parsed arguments: bar on stderr, table on stdout, CSV file."""
    # Every argument is checked before the model loads.
    config = _config(args)
    from tqdm import tqdm
    from transformers.utils import logging as hf_logging

    from lift_core.analysis.sensitivity import format_summary, noise_sensitivity
    from lift_core.models.loading import load_model, load_tokenizer
    from lift_core.models.preflight import check_output_file

    check_output_file(args.out)
    if args.threads is not None:
        if args.threads < 1:
            raise LiftError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    hf_logging.disable_progress_bar()
    model = load_model(args.model, trust_remote_code=args.trust_remote_code)
    tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    bars = []  # made at the first step, so a bad --layer prints its error alone

    def progress(done: int, total: int, label: str) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="step", disable=args.no_progress, file=sys.stderr))
        bars[0].total = total
        bars[0].set_postfix_str(label[-48:], refresh=False)
        bars[0].update(done - bars[0].n)

    result = noise_sensitivity(model, tokenizer, config, progress=progress)
    for bar in bars:
        bar.close()
    result.table.to_csv(args.out, index=False)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    clean = ", ".join(f"{m} {result.baseline[m]:.4g}" for m in result.metrics[:-1])
    print(f"clean model: {clean}")
    print(format_summary(result.summary(), result.metrics).to_string(index=False))
    print(f"{config.perturbations} evaluations in {time.perf_counter() - started:.1f} s; "
          f"table written to {args.out}")
    return 0
