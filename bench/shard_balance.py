"""How evenly LIFT's masks split over row shards: each rank's share of the optimizer state.

    python -m bench.shard_balance            # prints a markdown table (~1 min on 2 cores)

Under FSDP2 (lift_core.sharded) a rank keeps the mask entries of its rows, so its
optimizer state is even only if principal weights are spread evenly over the rows. This
computes LIFT masks of the real pretrained MiniLM (the embedded ``minilm`` alias) and the
built-in model, splits every block matrix's rows as ``fully_shard`` does (torch.chunk) over
2 and 8 ranks, and reports the busiest rank's state relative to an even split: per matrix
(the worst one) and summed over the model (what a rank holds).
"""

from __future__ import annotations

import torch

from lift_core.lowrank.masks import lift_mask, lora_budget
from lift_core.models.layers import layer_weight, list_linear_layers
from lift_core.models.loading import load_model

MODELS = ("minilm", "builtin")
RANKS = (2, 8)
BUDGETS = ((8, 8), (32, 32))  # (LoRA-equivalent budget rank, filter rank)


def rank_counts(mask: torch.Tensor, world: int) -> torch.Tensor:
    """Mask entries in each rank's rows, rows split as torch.chunk (empty ranks count 0)."""
    counts = torch.zeros(world, dtype=torch.int64)
    for rank, rows in enumerate(mask.chunk(world, dim=0)):
        counts[rank] = rows.sum()
    return counts


def balance(model_name: str, budget: int, filter_rank: int) -> dict[int, tuple[float, float]]:
    """{ranks: (worst matrix's busiest rank / even share, whole model's busiest / even)}."""
    model = load_model(model_name)
    totals = {world: torch.zeros(world, dtype=torch.int64) for world in RANKS}
    worst = dict.fromkeys(RANKS, 0.0)
    for layer in list_linear_layers(model, blocks_only=True):
        weight = layer_weight(model, layer)
        mask = lift_mask(weight, k=lora_budget(layer.shape, budget), filter_rank=filter_rank)
        for world in RANKS:
            counts = rank_counts(mask, world)
            totals[world] += counts
            worst[world] = max(worst[world], (counts.max() * world / counts.sum()).item())
    return {world: (worst[world], (totals[world].max() * world / totals[world].sum()).item())
            for world in RANKS}


def main() -> None:
    torch.set_num_threads(1)
    print("| model | budget rank / filter rank | ranks | worst matrix: busiest rank / even | "
          "whole model: busiest rank / even |")
    print("|---|---|---|---|---|")
    for name in MODELS:
        for budget, filter_rank in BUDGETS:
            for world, (matrix, whole) in balance(name, budget, filter_rank).items():
                print(f"| {name} | {budget} / {filter_rank} | {world} | {matrix:.2f} | "
                      f"{whole:.2f} |")


if __name__ == "__main__":
    main()
