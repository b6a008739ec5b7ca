"""Benchmark: how much of a sparse update does bfloat16 weight storage round away?

With weights stored in bf16 (8 significant bits), adding an update smaller than about half a
unit in the last place of the weight leaves it unchanged. LIFT selects the *principal*
entries, which tend to be large, so it loses more small updates than a random mask of the
same size. For MiniLM's 36 block matrices (filter rank = budget rank 4, the training
defaults), an AdamW update of size lr (the first step's, the largest an entry normally gets)
is added to the bf16 weights, and we count the masked entries that did not change.

    nice python -m bench.bench_bf16_updates
"""

from __future__ import annotations

import json

import torch

from bench.bench_masks import RESULTS, machine
from lift_core.lowrank.masks import compute_mask, lora_budget
from lift_core.models.loading import layer_weight, list_linear_layers, load_model

LEARNING_RATES = (1e-5, 1e-4, 2e-4, 1e-3, 1e-2)
RANK = 4


def lost_fraction(weight: torch.Tensor, mask: torch.Tensor, lr: float, generator) -> float:
    """Share of masked entries a bf16 weight keeps unchanged after a +-lr update."""
    stored = weight.to(torch.bfloat16)
    signs = torch.randint(0, 2, weight.shape, generator=generator).float() * 2 - 1
    updated = (stored.float() + lr * signs).to(torch.bfloat16)
    return float((updated == stored)[mask].float().mean())


def main() -> dict:
    torch.set_num_threads(1)
    model = load_model("minilm")
    g = torch.Generator().manual_seed(0)
    totals = {(kind, lr): [0.0, 0] for kind in ("lift", "random") for lr in LEARNING_RATES}
    magnitudes = {"lift": [], "random": []}
    for layer in list_linear_layers(model, blocks_only=True):
        w = layer_weight(model, layer).float()
        k = lora_budget(tuple(w.shape), RANK)
        for kind in ("lift", "random"):
            mask = compute_mask(kind, w, k=k, filter_rank=RANK, generator=g)
            magnitudes[kind].append(w[mask].abs().median().item())
            for lr in LEARNING_RATES:
                totals[(kind, lr)][0] += lost_fraction(w, mask, lr, g) * k
                totals[(kind, lr)][1] += k
    rows = [{"mask": kind, "lr": lr, "lost_fraction": s / n} for (kind, lr), (s, n) in totals.items()]
    for row in rows:
        print(f"{row['mask']:<7} lr {row['lr']:<7g} lost {100 * row['lost_fraction']:6.2f}%")
    median = {k: sorted(v)[len(v) // 2] for k, v in magnitudes.items()}
    print("median |w| on the mask (median over layers):", median)
    result = {"machine": machine(), "rank": RANK, "rows": rows, "median_abs_weight": median}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bf16_updates.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
