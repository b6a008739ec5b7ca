"""How much two masks agree, and how that changes with filter rank and budget.

The paper's central observation is that principal weights are *not* the largest weights:
LIFT's mask overlaps the plain-magnitude mask only partly, and the overlap grows as the
filter rank grows (at full rank W_r = W and the two masks coincide). These functions
measure that for one matrix; lift_core.analysis.layers runs them over a whole model.
"""

from __future__ import annotations

from typing import Iterable

import pandas as pd
import torch

from lift_core.checks import check_filter_rank
from lift_core.errors import LiftError
from lift_core.lowrank.masks import (
    MASK_STRATEGIES,
    compute_mask,
    lora_budget,
    magnitude_mask,
    random_mask,
)
from lift_core.lowrank.scoring import PrincipalScorer

# Codes of mask_difference(): which mask(s) selected an entry.
NEITHER, ONLY_A, ONLY_B, BOTH = 0, 1, 2, 3


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise LiftError(f"masks have different shapes {tuple(a.shape)} and {tuple(b.shape)}")


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a ∩ b| / |a ∪ b| of two boolean masks (1.0 when both are empty)."""
    _check_pair(a, b)
    inter = (a & b).sum().item()
    union = (a | b).sum().item()
    return inter / union if union else 1.0


def containment(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of a's entries that are also in b: |a ∩ b| / |a|."""
    _check_pair(a, b)
    size = a.sum().item()
    return (a & b).sum().item() / size if size else 1.0


def mask_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """uint8 map: 0 neither, 1 only a, 2 only b, 3 both (see the module constants)."""
    _check_pair(a, b)
    return a.to(torch.uint8) + 2 * b.to(torch.uint8)


def row_col_counts(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Selected entries per row (length m) and per column (length n)."""
    m = mask.to(torch.int64)
    return m.sum(dim=1).cpu(), m.sum(dim=0).cpu()


def pairwise_jaccard(masks: dict[str, torch.Tensor]) -> pd.DataFrame:
    """Square DataFrame of Jaccard between every pair of named masks."""
    names = list(masks)
    rows = {a: [jaccard(masks[a], masks[b]) for b in names] for a in names}
    return pd.DataFrame.from_dict(rows, orient="index", columns=names)


def baseline_masks(
    weight: torch.Tensor, *, k: int, filter_rank: int, svd: str = "exact", seed: int = 0
) -> dict[str, torch.Tensor]:
    """Every mask strategy's mask of one matrix at one budget (LIFT, magnitude, random and
    LIFT-smallest), keyed by the names of :data:`lift_core.lowrank.masks.MASK_STRATEGIES`."""
    return {
        name: compute_mask(
            name, weight, k=k, filter_rank=filter_rank, svd=svd,
            generator=torch.Generator().manual_seed(seed),
        )
        for name in MASK_STRATEGIES
    }


def _sweep(scorer: PrincipalScorer, points: list[tuple[dict, int, int]], seed: int) -> pd.DataFrame:
    """One row per (leading columns, k, filter rank) point, all scored by one scorer.

    In exact mode the scorer's one SVD serves every point, and the largest and smallest
    masks of a point share one |W_r|.
    """
    w = scorer.matrix
    rows = []
    for columns, k, rank in points:
        lift, smallest = scorer.mask(rank, k), scorer.mask(rank, k, largest=False)
        mag = magnitude_mask(w, k=k)
        rnd = random_mask(w, k=k, generator=torch.Generator().manual_seed(seed))
        rows.append(columns | {
            "jaccard_lift_vs_magnitude": jaccard(lift, mag),
            "jaccard_lift_vs_random": jaccard(lift, rnd),
            "jaccard_lift_vs_lift_smallest": jaccard(lift, smallest),
            "jaccard_magnitude_vs_random": jaccard(mag, rnd),
            "lift_in_magnitude": containment(lift, mag),
        })
    return pd.DataFrame(rows)


def overlap_vs_filter_rank(
    weight: torch.Tensor,
    *,
    k: int,
    filter_ranks: Iterable[int],
    svd: str = "exact",
    seed: int = 0,
) -> pd.DataFrame:
    """Mask overlaps at a fixed budget k as the filter rank r varies (one row per r)."""
    scorer = PrincipalScorer(weight, svd=svd)
    ranks = sorted(set(int(r) for r in filter_ranks))
    for r in ranks:
        check_filter_rank(scorer.shape, r)
    return _sweep(scorer, [({"filter_rank": r, "k": k}, k, r) for r in ranks], seed)


def overlap_vs_budget(
    weight: torch.Tensor,
    *,
    filter_rank: int,
    lora_ranks: Iterable[int],
    svd: str = "exact",
    seed: int = 0,
) -> pd.DataFrame:
    """Mask overlaps at a fixed filter rank as the budget (LoRA-equivalent rank) varies."""
    scorer = PrincipalScorer(weight, svd=svd)
    check_filter_rank(scorer.shape, filter_rank)
    numel = scorer.matrix.numel()
    points = []
    for lora_rank in sorted(set(int(r) for r in lora_ranks)):
        k = lora_budget(scorer.shape, lora_rank)
        points.append(({"lora_rank": lora_rank, "k": k, "density": k / numel}, k, filter_rank))
    return _sweep(scorer, points, seed)
