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
    SVD_MODES,  # noqa: F401 - re-exported for callers that import it from here
    as_float_matrix,
    check_filter_rank,
    check_svd_mode,
    checked_krylov_factors,
    exact_low_rank,
)

# Randomized masks deepen the Krylov basis until the masks of two successive depths agree
# this well (Jaccard, on a sample of rows); if the depth budget runs out first, exact SVD.
RANDOMIZED_AGREEMENT = 0.999
RANDOMIZED_FIRST_DEPTH = 3
# Rows whose scores the convergence check looks at: about this many entries in all.
CHECK_SAMPLE_ENTRIES = 1 << 20
# top_k_mask pre-filters inputs this large with a threshold estimated from a sample.
_PREFILTER_NUMEL = 1 << 20
_PREFILTER_SAMPLE = 1 << 16


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
        svd: "exact" or "randomized" (block Krylov, accuracy-checked, see
            :func:`_masks_agree`; small matrices use exact).
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
    mask[_top_k_indices(flat, k)] = True
    return mask.view(scores.shape)


def _top_k_indices(flat: torch.Tensor, k: int) -> torch.Tensor:
    # A full topk over millions of entries costs more than the randomized SVD. Instead take
    # a threshold that a strided sample says is a little below the k-th value, keep the
    # entries above it, and topk among those. If fewer than k survive (an unlucky sample),
    # fall back to the full topk, so the result is always the exact top k.
    numel = flat.numel()
    if numel >= _PREFILTER_NUMEL and k <= numel // 8:
        sample = flat[:: (numel // _PREFILTER_SAMPLE) | 1]  # odd stride: spread over columns
        share = k / numel * sample.numel()
        rank = min(sample.numel(), int(share + 4 * share**0.5) + 16)
        threshold = torch.topk(sample, rank, sorted=False).values.min()
        candidates = torch.nonzero(flat >= threshold).squeeze(1)
        if candidates.numel() >= k:
            return candidates[torch.topk(flat[candidates], k, sorted=False).indices]
    return torch.topk(flat, k, sorted=False).indices


def _lift_scores(weight, k, filter_rank, svd, generator, *, largest: bool) -> torch.Tensor:
    w = as_float_matrix(weight)
    _check_k(w.shape, k)
    check_filter_rank(tuple(w.shape), filter_rank)
    check_svd_mode(svd)
    if svd == "randomized":
        converged = _masks_agree(w.shape, k, largest, w.device)
        found = checked_krylov_factors(
            w, filter_rank, converged, generator, first_check=RANDOMIZED_FIRST_DEPTH
        )
        if found is not None:
            return (found[0] @ found[1]).abs_()
    return exact_low_rank(w, filter_rank).abs()


def _masks_agree(shape, k: int, largest: bool, device):
    """The randomized mask's accuracy check: do two successive depths select the same set?

    The mask depends only on which entries of |W_r| are top-k, so instead of a fixed depth
    the Krylov basis is deepened until the masks of two successive depths agree to
    RANDOMIZED_AGREEMENT (Jaccard). Measured on a 4096^2 power-law matrix the agreement at
    depth d is close to (and below) the true Jaccard against exact at depth d-1, and the
    true Jaccard keeps improving, so this stops with a comfortable margin. The check looks
    at evenly spaced rows only (about CHECK_SAMPLE_ENTRIES entries, k scaled to match), so it
    costs little next to the products with W.
    """
    m, n = int(shape[0]), int(shape[1])
    count = min(m, max(32, CHECK_SAMPLE_ENTRIES // n))
    rows = torch.linspace(0, m - 1, count, device=device).round().long().unique()
    k_rows = max(1, round(k * len(rows) / m))

    def sample_mask(factors) -> torch.Tensor:
        scores = (factors[0][rows] @ factors[1]).abs()
        return top_k_mask(scores if largest else -scores, k_rows)

    def converged(previous, current) -> bool:
        old, new = sample_mask(previous), sample_mask(current)
        inter = (old & new).sum().item()
        return inter / (2 * k_rows - inter) >= RANDOMIZED_AGREEMENT

    return converged
