"""``python -m lift_core apply-delta``: rebuild a sparse run's tuned model from its base.

A sparse method's run saves ``delta.safetensors`` (:mod:`lift_core.train.export`): the
entries that changed and their new values, with a hash of the base's weights. This
sub-command writes ``base + delta`` as a model folder, bit-exactly, and refuses a base whose
weights differ from the one the run trained.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_apply_delta_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``apply-delta`` sub-command to ``subparsers`` and return its parser."""
    p = subparsers.add_parser(
        "apply-delta", help="rebuild a sparse run's fine-tuned model from its base and delta",
        description="Write BASE with a run's delta.safetensors applied (bit-exact) to --out; "
                    "refuses a base whose weights are not the ones the run trained.")
    p.add_argument("--base", required=True,
                   help="the base model: embedded name (builtin, minilm), local directory or hub id")
    p.add_argument("--delta", required=True, type=Path, metavar="FILE",
                   help="a run's delta.safetensors")
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="new or empty folder for the rebuilt model")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow the model's own Python code to run (off by default)")
    p.set_defaults(handler=run_apply_delta)
    return p


def run_apply_delta(args: argparse.Namespace) -> int:
    """Run ``apply-delta``; print what was applied. LiftError for bad input (exit 2)."""
    from transformers.utils import logging as hf_logging

    from lift_core.errors import LiftError
    from lift_core.train.export import apply_delta

    hf_logging.disable_progress_bar()

    if not args.delta.is_file():
        raise LiftError(f"delta file {args.delta} does not exist")
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise LiftError(f"output directory {args.out} is not a new or empty folder")
    done = apply_delta(args.base, args.delta, args.out, trust_remote_code=args.trust_remote_code)
    size = sum(f.stat().st_size for f in args.out.iterdir() if f.suffix == ".safetensors")
    print(f"applied {done['entries']:,} changed entries in {done['layers']} matrices "
          f"({os.path.getsize(args.delta) / 2**20:.2f} MiB delta) to {args.base}; "
          f"model ({size / 2**20:.2f} MiB) written to {args.out}")
    return 0
