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

from lift_core.errors import LiftError
from lift_core.svd import (
    RandomizedSubspace,
    SVD_MODES,
    as_float_matrix,
    check_filter_rank,
    exact_low_rank,
    sketch_size,
)

# Randomized masks refine the sketch until two successive masks agree this well.
RANDOMIZED_AGREEMENT = 0.999
RANDOMIZED_FIRST_ITERATIONS = 4
RANDOMIZED_STEP_ITERATIONS = 2
RANDOMIZED_MAX_ITERATIONS = 24


def lora_budget(shape: tuple[int, int], lora_rank: int) -> int:
    """Entries a LoRA of rank ``lora_rank`` trains on an (m, n) matrix: min((m+n)r, mn)."""
    m, n = _check_shape(shape)
    if not isinstance(lora_rank, int) or isinstance(lora_rank, bool) or lora_rank < 1:
        raise LiftError(f"budget (LoRA) rank must be a whole number >= 1, got {lora_rank!r}")
    return min((m + n) * lora_rank, m * n)


def budget_is_clipped(shape: tuple[int, int], lora_rank: int) -> bool:
    """True when (m+n)*lora_rank exceeds m*n, so the budget was clipped to the whole matrix."""
    m, n = _check_shape(shape)
    return (m + n) * lora_rank > m * n


def density_budget(shape: tuple[int, int], density: float) -> int:
    """Entries for a density in (0, 1] of an (m, n) matrix (at least one)."""
    m, n = _check_shape(shape)
    if not 0 < density <= 1:
        raise LiftError(f"density must be in (0, 1], got {density!r}")
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
    _check_k(w.shape, k)
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
        svd: "exact" or "randomized" (accuracy-checked, see :func:`_randomized_scores`).
        generator: seeds the randomized sketch.
    """
    return top_k_mask(_lift_scores(weight, k, filter_rank, svd, generator, largest=True), k)


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
    scores = _lift_scores(weight, k, filter_rank, svd, generator, largest=False)
    return top_k_mask(-scores, k)


@dataclass(frozen=True)
class MaskStrategy:
    """A named way of choosing k trainable entries of a matrix."""

    name: str
    fn: Callable[..., torch.Tensor]
    uses_filter_rank: bool
    description: str


MASK_STRATEGIES: dict[str, MaskStrategy] = {
    s.name: s
    for s in (
        MaskStrategy("lift", lift_mask, True, "largest |W_r| (principal weights, the paper)"),
        MaskStrategy("magnitude", magnitude_mask, False, "largest |W| (plain magnitude)"),
        MaskStrategy("random", random_mask, False, "uniformly random entries"),
        MaskStrategy(
            "lift_smallest", lift_smallest_mask, True,
            "smallest |W_r| (the authors' released-code default; a baseline)",
        ),
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


# --- internals -------------------------------------------------------------------------


def _check_shape(shape) -> tuple[int, int]:
    if len(shape) != 2:
        raise LiftError(f"expected a 2-D weight shape (out, in), got {tuple(shape)}")
    m, n = int(shape[0]), int(shape[1])
    if m < 1 or n < 1:
        raise LiftError(f"empty weight shape {(m, n)}")
    return m, n


def _check_k(shape, k: int) -> None:
    numel = int(shape[0]) * int(shape[1])
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= numel:
        raise LiftError(
            f"k (entries to select) must be between 1 and {numel} for a "
            f"{shape[0]}x{shape[1]} matrix, got {k!r}"
        )


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the k largest entries of ``scores`` (exactly k; topk breaks ties)."""
    _check_k(scores.shape, k)
    flat = scores.reshape(-1)
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    mask[torch.topk(flat, k, sorted=False).indices] = True
    return mask.view(scores.shape)


def _lift_scores(weight, k, filter_rank, svd, generator, *, largest: bool) -> torch.Tensor:
    w = as_float_matrix(weight)
    _check_k(w.shape, k)
    check_filter_rank(tuple(w.shape), filter_rank)
    if svd not in SVD_MODES:
        raise LiftError(f"unknown svd mode {svd!r} (allowed: {', '.join(SVD_MODES)})")
    if svd == "randomized":
        sketch = sketch_size(tuple(w.shape), filter_rank, None)
        if sketch is not None:
            return _randomized_scores(w, k, filter_rank, sketch, generator, largest)
    return exact_low_rank(w, filter_rank).abs()


def _randomized_scores(w, k, rank, sketch, generator, largest: bool) -> torch.Tensor:
    """|W_r| from a randomized subspace refined until the selected set stops moving.

    The mask depends only on which entries of |W_r| are top-k, so instead of a fixed number
    of power iterations we refine until two successive masks agree to
    RANDOMIZED_AGREEMENT (Jaccard). Flat spectra (small trained layers) need more
    iterations than steep ones; this spends them only where needed.
    """
    sub = RandomizedSubspace(w, sketch, generator)
    sub.refine(RANDOMIZED_FIRST_ITERATIONS)
    scores = sub.low_rank(rank).abs()
    previous = top_k_mask(scores if largest else -scores, k)
    done = RANDOMIZED_FIRST_ITERATIONS
    while done < RANDOMIZED_MAX_ITERATIONS:
        sub.refine(RANDOMIZED_STEP_ITERATIONS)
        done += RANDOMIZED_STEP_ITERATIONS
        scores = sub.low_rank(rank).abs()
        current = top_k_mask(scores if largest else -scores, k)
        inter = (current & previous).sum().item()
        if inter / (2 * k - inter) >= RANDOMIZED_AGREEMENT:
            break
        previous = current
    return scores
