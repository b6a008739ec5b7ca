"""LIFT's principal-weight score |W_r|, computed in one place, and the top-k that reads it.

Every consumer of the score goes through :class:`PrincipalScorer`: the masks (and so the
optimizer's mask refresh, via lift_core.lowrank.masks.compute_mask), the overlap sweeps over filter
rank and budget, and the whole-model analysis. One scorer holds one matrix; in exact mode
its single SVD serves every filter rank and the spectrum, so a sweep over r costs one SVD.
The randomized (block Krylov) path and its fallback to exact are lift_core.lowrank.svd's rules.
"""

from __future__ import annotations

import torch

from lift_core.checks import as_float_matrix, check_filter_rank, check_k, check_svd_mode
from lift_core.lowrank.spectra import singular_values
from lift_core.lowrank.svd import (
    checked_krylov_factors,
    exact_factors,
    low_rank_approximation,
    low_rank_from_factors,
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


class PrincipalScorer:
    """Scores the entries of one matrix by |W_r| for any filter rank r.

    Args:
        weight: 2-D weight (out, in), any float dtype, CPU or CUDA; scored as an fp32 copy.
        svd: "exact": one full SVD, computed on first use and reused for every rank and for
            :meth:`singular_values`. "randomized": a block Krylov basis per request,
            deepened until the mask the scores feed stops changing; small matrices, or a
            basis that does not converge within budget, fall back to the (cached) exact SVD.
        generator: seeds the randomized sketches.
    """

    def __init__(self, weight: torch.Tensor, *, svd: str = "exact",
                 generator: torch.Generator | None = None):
        self.matrix = as_float_matrix(weight)
        check_svd_mode(svd)
        self.svd = svd
        self.generator = generator
        self._factors: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._last_exact: tuple[int, torch.Tensor] | None = None  # (rank, |W_r|)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.matrix.shape)

    def scores(self, rank: int, *, k: int | None = None, largest: bool = True) -> torch.Tensor:
        """|W_r| in fp32, shaped like the matrix: LIFT's score of every entry (a new tensor).

        In randomized mode ``k`` and ``largest`` name the mask these scores will feed: the
        Krylov depth is chosen by that mask's stability. Without ``k`` the depth is chosen
        by W_r's own change on sampled rows (lift_core.lowrank.svd.low_rank_approximation's rule).
        Exact mode ignores both.
        """
        return self._scores(rank, k, largest).clone()

    def mask(self, rank: int, k: int, *, largest: bool = True) -> torch.Tensor:
        """The k entries with the largest |W_r| (LIFT's principal weights), or the smallest."""
        check_k(self.shape, k)
        scores = self._scores(rank, k, largest)
        return top_k_mask(scores if largest else -scores, k)

    def singular_values(self) -> torch.Tensor:
        """All singular values, descending, fp32 on CPU.

        From the exact SVD when this scorer has one (always in exact mode), else from
        ``svdvals`` (no singular vectors: cheaper than the full SVD).
        """
        if self._factors is None and self.svd != "exact":
            return singular_values(self.matrix)
        return self._exact_factors()[1].cpu()

    def _scores(self, rank: int, k: int | None, largest: bool) -> torch.Tensor:
        # Exact scores of the last rank are kept (read-only): a sweep asks for the largest
        # and the smallest mask of each rank, and the product of the factors costs more
        # than the two top-k selections.
        if self._last_exact is not None and self._last_exact[0] == rank:
            return self._last_exact[1]
        check_filter_rank(self.shape, rank)
        if self.svd == "randomized":
            found = self._randomized_low_rank(rank, k, largest)
            if found is not None:
                return found.abs_()
        scores = low_rank_from_factors(self._exact_factors(), rank).abs_()
        if self.svd == "exact":
            self._last_exact = (rank, scores)
        return scores

    def factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The exact SVD (U, S, Vh) of the fp32 matrix, computed once and shared with the
        scores (callers that also need singular vectors, e.g. subspace angles, reuse it)."""
        return self._exact_factors()

    def _exact_factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._factors is None:
            self._factors = exact_factors(self.matrix)
        return self._factors

    def _randomized_low_rank(self, rank: int, k: int | None, largest: bool):
        """W_r from a checked Krylov basis, or None when the exact SVD must do."""
        if k is None:  # no mask to check: the app's |W_r| view rule
            return low_rank_approximation(self.matrix, rank, svd="randomized",
                                          generator=self.generator)
        converged = _masks_agree(self.shape, k, largest, self.matrix.device)
        found = checked_krylov_factors(
            self.matrix, rank, converged, self.generator, first_check=RANDOMIZED_FIRST_DEPTH
        )
        return None if found is None else found[0] @ found[1]


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the k largest entries of ``scores`` (exactly k; topk breaks ties)."""
    check_k(scores.shape, k)
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
