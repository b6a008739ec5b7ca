"""Which entries of a weight matrix to train: LIFT's principal weights and the baselines.

Every strategy shares one signature, ``fn(weight, *, k, filter_rank, svd, generator)``, and
lives in :data:`MASK_STRATEGIES`, so a new baseline is one entry. Masks are boolean tensors
of the weight's shape with exactly ``k`` True entries, computed in fp32 on the weight's
device whatever its dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from lift_core.checks import as_float_matrix, check_budget_rank, check_density, check_k, check_shape
from lift_core.errors import LiftError
# top_k_mask lives with the scorer; it is re-exported here with the strategies.
from lift_core.lowrank.scoring import PrincipalScorer, top_k_mask


def lora_budget(shape: tuple[int, int], lora_rank: int) -> int:
    """Entries a LoRA of rank ``lora_rank`` trains on an (m, n) matrix: min((m+n)r, mn)."""
    m, n = check_shape(shape)
    check_budget_rank(lora_rank)
    return min((m + n) * lora_rank, m * n)


def budget_is_clipped(shape: tuple[int, int], lora_rank: int) -> bool:
    """True when (m+n)*lora_rank exceeds m*n, so the budget was clipped to the whole matrix."""
    m, n = check_shape(shape)
    return (m + n) * lora_rank > m * n


def density_budget(shape: tuple[int, int], density: float) -> int:
    """Entries for a density in (0, 1] of an (m, n) matrix (at least one)."""
    m, n = check_shape(shape)
    check_density(density)
    return max(1, round(density * m * n))


def magnitude_mask(weight: torch.Tensor, *, k: int, **_unused) -> torch.Tensor:
    """The k entries with the largest |W| (the plain magnitude baseline)."""
    w = as_float_matrix(weight)
    return top_k_mask(w.abs(), k)


def random_mask(
    weight: torch.Tensor, *, k: int, generator: torch.Generator | None = None, **_unused
) -> torch.Tensor:
    """k entries drawn uniformly without replacement (seeded by ``generator``)."""
    w = as_float_matrix(weight)
    check_k(w.shape, k)
    device = generator.device if generator is not None else torch.device("cpu")
    scores = torch.rand(w.shape, generator=generator, device=device)
    return top_k_mask(scores.to(w.device), k)


def lift_mask(
    weight: torch.Tensor,
    *,
    k: int,
    filter_rank: int,
    svd: str = "exact",
    generator: torch.Generator | None = None,
    **_unused,
) -> torch.Tensor:
    """LIFT's principal weights: the k entries with the largest |W_r|.

    Args:
        weight: 2-D weight (out, in), any float dtype, CPU or CUDA.
        k: number of entries to select (see :func:`lora_budget`).
        filter_rank: r of the rank-r approximation W_r.
        svd: "exact" or "randomized" (block Krylov, accuracy-checked on the mask itself,
            see :class:`lift_core.lowrank.scoring.PrincipalScorer`; small matrices use exact).
        generator: seeds the randomized sketch.
    """
    return PrincipalScorer(weight, svd=svd, generator=generator).mask(filter_rank, k)


def lift_smallest_mask(
    weight: torch.Tensor,
    *,
    k: int,
    filter_rank: int,
    svd: str = "exact",
    generator: torch.Generator | None = None,
    **_unused,
) -> torch.Tensor:
    """The k entries with the *smallest* |W_r|: the authors' latest default, a baseline.

    LIFT_METHOD.md explains the discrepancy: their released configs select the smallest
    entries, while the paper describes the largest. We implement the paper as "lift" and
    keep this one under its own name for comparison.
    """
    scorer = PrincipalScorer(weight, svd=svd, generator=generator)
    return scorer.mask(filter_rank, k, largest=False)


@dataclass(frozen=True)
class MaskStrategy:
    """A named way of choosing k trainable entries of a matrix.

    The registry of mask *functions*: a method that trains a mask names one in its record
    (lift_core.train.registry), which also holds its label, colour and description.
    """

    name: str
    fn: Callable[..., torch.Tensor]
    uses_filter_rank: bool


MASK_STRATEGIES: dict[str, MaskStrategy] = {
    s.name: s
    for s in (
        MaskStrategy("lift", lift_mask, True),  # largest |W_r|: principal weights, the paper
        MaskStrategy("magnitude", magnitude_mask, False),
        MaskStrategy("random", random_mask, False),
        MaskStrategy("lift_smallest", lift_smallest_mask, True),  # the released code's default
    )
}


def compute_mask(
    name: str,
    weight: torch.Tensor,
    *,
    k: int,
    filter_rank: int | None = None,
    svd: str = "exact",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Compute the mask of strategy ``name`` (a key of :data:`MASK_STRATEGIES`)."""
    strategy = MASK_STRATEGIES.get(name)
    if strategy is None:
        raise LiftError(
            f"unknown mask {name!r} (allowed: {', '.join(MASK_STRATEGIES)})"
        )
    if strategy.uses_filter_rank and filter_rank is None:
        raise LiftError(f"mask {name!r} needs a filter rank")
    return strategy.fn(weight, k=k, filter_rank=filter_rank, svd=svd, generator=generator)
