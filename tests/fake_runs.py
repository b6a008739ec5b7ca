"""Synthetic run records (config.json, metrics.jsonl, summary.json) for the training-page tests.

Written directly, without training, so page tests are fast and do not depend on the sample
runs being there. The numbers follow the real record format (docs/training.md).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lift_core.runs.folder import CLAIM_FILE

TRAINABLE = {"lift": 39424, "magnitude": 39424, "random": 39424, "lora": 39424, "full": 802816}
# (target accuracy after, source accuracy after) per method: LIFT up and to the left.
RESULT = {"lift": (0.50, 0.80), "full": (0.52, 0.60), "lora": (0.35, 0.70),
          "magnitude": (0.30, 0.75), "random": (0.20, 0.82)}


def write_run(path: Path, method: str, seed: int, *, steps: int = 60, eval_every: int = 20,
              finished: bool = True, status: str = "completed") -> Path:
    """Write one fake run record to ``path`` and return it."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    sparse = method in ("lift", "magnitude", "random")
    config = {"format": "lift-run/1", "model": "builtin", "method": method, "steps": steps, "seed": seed,
              "lr": None, "lr_used": 5e-4 if method == "full" else 2e-3, "update_interval": 20,
              "eval_every": eval_every, "budget": {"trainable_params": TRAINABLE[method],
                                                   "block_linear_entries": 802816,
                                                   "trainable_fraction": TRAINABLE[method] / 802816}}
    (path / "config.json").write_text(json.dumps(config))
    target, source = RESULT[method]
    rows, last = [], steps if finished else steps // 2
    for step in range(0, last + 1):
        row = {"step": step, "elapsed": 1.0 + 0.1 * step}
        if step:
            row.update(loss=3.0 * np.exp(-step / 20) + 0.1 + 0.05 * rng.random(), lr=1e-3)
        if step % eval_every == 0 or step == steps:
            frac = step / steps
            row.update(target_acc=round(frac * target + 0.02 * rng.random(), 3),
                       source_acc=round(0.9 - frac * (0.9 - source) + 0.02 * rng.random(), 3))
        if sparse and step and step % 20 == 0:
            row["mask_churn"] = 0.1 + 0.05 * rng.random()
        rows.append(row)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if finished:
        evals = [r for r in rows if "target_acc" in r]
        summary = {"method": method, "model": "builtin", "seed": seed, "status": status, "error": None,
                   "steps": steps, "steps_done": steps, "lr_used": config["lr_used"],
                   "target_acc": evals[-1]["target_acc"], "source_acc": evals[-1]["source_acc"],
                   "target_acc_before": evals[0]["target_acc"], "source_acc_before": evals[0]["source_acc"],
                   "forgetting": evals[0]["source_acc"] - evals[-1]["source_acc"], "eval_step": steps,
                   "final_loss": rows[-1]["loss"], "trainable_params": TRAINABLE[method],
                   "optimizer_state_bytes": TRAINABLE[method] * (12 if sparse else 8),
                   "peak_memory_bytes": 400 * 2**20, "mask_refreshes": 3, "device": "cpu",
                   "wall_seconds": 10.0, "train_seconds": 6.0, "seconds_per_step": 0.1}
        (path / "summary.json").write_text(json.dumps(summary))
    return path


def write_sample_set(root: Path, seeds=(0, 1, 2)) -> Path:
    """Five methods x seeds, laid out like sample_runs/<method>-seed<S>/."""
    for method in RESULT:
        for seed in seeds:
            write_run(root / f"{method}-seed{seed}", method, seed)
    return root


def write_interrupted_run(path: Path, method: str, seed: int, **kwargs) -> Path:
    """An unfinished record plus the claim its writer left when it died (killed, no summary)."""
    write_run(path, method, seed, finished=False, **kwargs)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    claim = {"pid": int(gone.stdout), "host": socket.gethostname(), "started": time.time(), "token": "gone"}
    (path / CLAIM_FILE).write_text(json.dumps(claim))
    return path
