"""Rank-r approximations of a weight matrix, exactly or with a randomized block Krylov method.

LIFT scores entries by |W_r|, the best rank-r approximation of W. The exact path is a full
fp32 SVD (what the authors run). The randomized path grows a block Krylov basis
K = [Q0, Q1, ...] of W's column space from a Gaussian sketch (Musco & Musco 2015): for the
slowly decaying spectra of trained layers it reaches a given accuracy in far fewer products
with W than plain subspace iteration. lift_core.lowrank.scoring (the one place |W_r| is scored)
decides how deep to go by checking the mask itself; here are the building blocks.
"""

from __future__ import annotations

from typing import Callable

import torch

# The input checks live in lift_core.checks; re-exported here for existing callers.
from lift_core.checks import (  # noqa: F401
    SVD_MODES,
    as_float_matrix,
    check_filter_rank,
    check_svd_mode,
)

# The randomized path is used only when its worst case stays well below an exact SVD.
# Cost is counted in "W-passes" (one column through W or W^T costs m*n multiply-adds); a
# full fp32 SVD measured ~2.4*min(m, n) passes on a 2-core CPU at 4096^2 and more, relative
# to matmuls, on small matrices. So a plan may spend at most min(m, n) passes, and must
# allow at least MIN_DEPTH Krylov steps, otherwise exact is the cheaper, exact answer.
# Below RANDOMIZED_MIN_DIM an exact SVD is so cheap that nothing is gained: measured on
# MiniLM's 384x384 / 1536x384 layers the randomized mask was 0.5-1.07x the exact time,
# while at 1024^2 it was 1.6x (r=64) to 7x (r=8) faster.
MAX_PASSES_PER_DIM = 1.0
MIN_DEPTH = 3
RANDOMIZED_MIN_DIM = 512


def exact_factors(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U, S, Vh) of fp32 ``w`` from one full (thin) SVD: the exact path's only SVD call."""
    return torch.linalg.svd(w, full_matrices=False)


def low_rank_from_factors(
    factors: tuple[torch.Tensor, torch.Tensor, torch.Tensor], rank: int
) -> torch.Tensor:
    """W_r = U_r diag(S_r) Vh_r from the factors of an SVD, for any rank they cover."""
    u, s, vh = factors
    return (u[:, :rank] * s[:rank]) @ vh[:rank]


def exact_low_rank(w: torch.Tensor, rank: int) -> torch.Tensor:
    """Best rank-``rank`` approximation of fp32 ``w`` from a full SVD."""
    return low_rank_from_factors(exact_factors(w), rank)


def block_size(rank: int) -> int:
    """Krylov block width for filter rank r: r plus a little oversampling."""
    return rank + max(4, rank // 8)


def max_krylov_depth(shape: tuple[int, int], rank: int) -> int | None:
    """Deepest Krylov basis worth building for this shape and rank, or None (use exact).

    Depth d costs 2 * block * (d + 1) W-passes; we allow MAX_PASSES_PER_DIM * min(m, n),
    and keep the basis within half of min(m, n). If that leaves fewer than MIN_DEPTH steps,
    or the matrix is smaller than RANDOMIZED_MIN_DIM, the randomized method does not pay
    off (and small layers have flat spectra, where it needs the most depth).
    """
    b, small = block_size(rank), min(shape)
    if small < RANDOMIZED_MIN_DIM:
        return None
    depth = min(int(MAX_PASSES_PER_DIM * small / (2 * b)), small // (2 * b)) - 1
    return depth if depth >= MIN_DEPTH else None


def _orthonormalize_against(y: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    # Two rounds of block Gram-Schmidt: once is not enough in fp32 when y lies mostly in
    # the span of the basis (which is exactly what happens as the Krylov space converges).
    if basis is not None:
        for _ in range(2):
            y = y - basis @ (basis.T @ y)
    q, _ = torch.linalg.qr(y)
    return q


class BlockKrylov:
    """An orthonormal basis K (m, L) of span{W G, (W W^T) W G, ...}, grown block by block.

    Each :meth:`grow` costs two products with W (one with W, one with W^T). W^T K is kept as
    it is built, so :meth:`factors` (Rayleigh-Ritz on K) needs no further pass over W.
    """

    def __init__(self, w: torch.Tensor, block: int, generator: torch.Generator | None):
        self.w = w
        device = generator.device if generator is not None else w.device
        omega = torch.randn(w.shape[1], block, generator=generator, dtype=w.dtype, device=device)
        self.blocks = [_orthonormalize_against(w @ omega.to(w.device), None)]  # (m, b) each
        self.wt_blocks = [w.T @ self.blocks[0]]  # W^T Q_i, (n, b) each

    @property
    def basis(self) -> torch.Tensor:
        return torch.cat(self.blocks, dim=1)

    def grow(self) -> None:
        """Append the next block: W W^T Q_last, orthonormalized against the basis."""
        z, _ = torch.linalg.qr(self.wt_blocks[-1])  # rescale before the second product
        q = _orthonormalize_against(self.w @ z, self.basis)
        self.blocks.append(q)
        self.wt_blocks.append(self.w.T @ q)

    def factors(self, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, C) with W_r ~ A @ C: A = K U_r (m, r), C = U_r^T K^T W (r, n).

        U_r are the top eigenvectors of (K^T W)(K^T W)^T, solved in float64 (the Gram matrix
        is small, L x L) so that the ordering of close singular values is reliable.
        """
        k_basis = self.basis  # (m, L)
        wt_k = torch.cat(self.wt_blocks, dim=1)  # W^T K, (n, L)
        gram = (wt_k.T @ wt_k).double()
        _, vecs = torch.linalg.eigh(gram)  # ascending
        u_r = vecs[:, -rank:].flip(1).to(k_basis.dtype)  # (L, r)
        return k_basis @ u_r, (wt_k @ u_r).T


def checked_krylov_factors(
    w: torch.Tensor,
    rank: int,
    converged: Callable[[tuple, tuple], bool],
    generator: torch.Generator | None = None,
    first_check: int = 2,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Deepen a :class:`BlockKrylov` basis until ``converged(previous, current)`` says so.

    ``previous`` and ``current`` are the (A, C) factors of two successive depths. Returns
    the last factors, or None when the shape is too small for the randomized method or the
    depth budget (:func:`max_krylov_depth`) ran out first: callers then use exact SVD.
    """
    max_depth = max_krylov_depth(tuple(w.shape), rank)
    if max_depth is None:
        return None
    krylov = BlockKrylov(w, block_size(rank), generator)
    previous = None
    for depth in range(1, max_depth + 1):
        krylov.grow()
        if depth < first_check:
            continue
        current = krylov.factors(rank)
        if previous is not None and converged(previous, current):
            return current
        previous = current
    return None


def _rows_changed_little(w: torch.Tensor, tol: float = 1e-3):
    rows = torch.linspace(0, w.shape[0] - 1, min(w.shape[0], 256), device=w.device)
    rows = rows.round().long().unique()

    def converged(previous, current) -> bool:
        old, new = previous[0][rows] @ previous[1], current[0][rows] @ current[1]
        return bool(torch.linalg.norm(new - old) <= tol * torch.linalg.norm(new))

    return converged


def low_rank_approximation(
    weight: torch.Tensor,
    rank: int,
    *,
    svd: str = "exact",
    oversample: int | None = None,
    power_iterations: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Best rank-``rank`` approximation of ``weight`` in fp32.

    Args:
        weight: 2-D tensor of any float dtype.
        rank: the filter rank r.
        svd: "exact" (full SVD) or "randomized" (block Krylov). Small matrices, where an
            exact SVD is as cheap, always use exact.
        oversample: extra block columns for "randomized" with a fixed depth.
        power_iterations: a fixed Krylov depth for "randomized". None (default): deepen
            until W_r changes by < 0.1% (relative Frobenius norm, on sampled rows) between
            depths, falling back to exact when that does not happen within budget.
        generator: seeds the sketch.

    Returns:
        An fp32 tensor shaped like ``weight``.
    """
    w = as_float_matrix(weight)
    check_filter_rank(tuple(w.shape), rank)
    check_svd_mode(svd)
    if svd == "exact" or max_krylov_depth(tuple(w.shape), rank) is None:
        return exact_low_rank(w, rank)
    if power_iterations is None:
        found = checked_krylov_factors(w, rank, _rows_changed_little(w), generator)
        return exact_low_rank(w, rank) if found is None else found[0] @ found[1]
    block = block_size(rank) if oversample is None else rank + oversample
    krylov = BlockKrylov(w, block, generator)
    for _ in range(power_iterations):
        krylov.grow()
    a, c = krylov.factors(rank)
    return a @ c
