"""Rank-r approximations of a weight matrix, exactly or with a randomized SVD.

LIFT scores entries by |W_r|, the best rank-r approximation of W. The exact path is a full
fp32 SVD (what the authors run). The randomized path sketches the top singular subspace
with Gaussian test vectors and power iterations (Halko, Martinsson & Tropp 2011); it is far
cheaper for large matrices, and lift_mask checks its own accuracy on top of it.
"""

from __future__ import annotations

import torch

from lift_core.errors import LiftError

SVD_MODES = ("exact", "randomized")


def as_float_matrix(weight: torch.Tensor) -> torch.Tensor:
    """Return ``weight`` as a detached fp32 2-D tensor on its own device.

    Raises:
        LiftError: when the tensor is not 2-D.
    """
    if not isinstance(weight, torch.Tensor):
        raise LiftError(f"expected a torch.Tensor weight, got {type(weight).__name__}")
    if weight.ndim != 2:
        raise LiftError(
            f"expected a 2-D weight matrix (out, in), got shape {tuple(weight.shape)}"
        )
    return weight.detach().to(torch.float32)


def check_filter_rank(shape: tuple[int, int], filter_rank: int) -> None:
    """Raise LiftError unless 1 <= filter_rank <= min(m, n)."""
    m, n = shape
    if not isinstance(filter_rank, int) or isinstance(filter_rank, bool):
        raise LiftError(f"filter rank must be a whole number, got {filter_rank!r}")
    if filter_rank < 1 or filter_rank > min(m, n):
        raise LiftError(
            f"filter rank {filter_rank} is out of range for a {m}x{n} matrix "
            f"(allowed: 1 to {min(m, n)})"
        )


def exact_low_rank(w: torch.Tensor, rank: int) -> torch.Tensor:
    """Best rank-``rank`` approximation of fp32 ``w`` from a full SVD."""
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vh[:rank]


def _orthonormal(y: torch.Tensor) -> torch.Tensor:
    q, _ = torch.linalg.qr(y)
    return q


class RandomizedSubspace:
    """An orthonormal basis Q (m, l) of W's dominant column space, refined on demand.

    Each :meth:`refine` call runs one power iteration (W W^T applied once, with
    re-orthonormalization after every product so small singular directions are not lost
    to round-off). :meth:`low_rank` projects W onto Q and keeps the top ``rank``
    directions of the small l x n problem.
    """

    def __init__(self, w: torch.Tensor, sketch_size: int, generator: torch.Generator | None):
        self.w = w
        n = w.shape[1]
        omega = torch.randn(n, sketch_size, generator=generator, dtype=w.dtype,
                            device="cpu" if generator is None else generator.device)
        self.q = _orthonormal(w @ omega.to(w.device))

    def refine(self, iterations: int = 1) -> None:
        for _ in range(iterations):
            z = _orthonormal(self.w.T @ self.q)  # (n, l)
            self.q = _orthonormal(self.w @ z)  # (m, l)

    def low_rank(self, rank: int) -> torch.Tensor:
        b = self.q.T @ self.w  # (l, n)
        ub, s, vh = torch.linalg.svd(b, full_matrices=False)
        u = self.q @ ub[:, :rank]  # (m, rank)
        return (u * s[:rank]) @ vh[:rank]


def low_rank_approximation(
    weight: torch.Tensor,
    rank: int,
    *,
    svd: str = "exact",
    oversample: int | None = None,
    power_iterations: int = 6,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Best rank-``rank`` approximation of ``weight`` in fp32.

    Args:
        weight: 2-D tensor of any float dtype.
        rank: the filter rank r.
        svd: "exact" (full SVD) or "randomized" (sketch + power iterations; no
            accuracy check here, see lift_core.masks for the checked version).
        oversample: extra sketch columns for "randomized" (default: r, at least 16).
        power_iterations: power iterations for "randomized".
        generator: seeds the sketch.

    Returns:
        An fp32 tensor shaped like ``weight``.
    """
    w = as_float_matrix(weight)
    check_filter_rank(tuple(w.shape), rank)
    if svd not in SVD_MODES:
        raise LiftError(f"unknown svd mode {svd!r} (allowed: {', '.join(SVD_MODES)})")
    sketch = sketch_size(tuple(w.shape), rank, oversample)
    if svd == "exact" or sketch is None:
        return exact_low_rank(w, rank)
    sub = RandomizedSubspace(w, sketch, generator)
    sub.refine(power_iterations)
    return sub.low_rank(rank)


def sketch_size(shape: tuple[int, int], rank: int, oversample: int | None) -> int | None:
    """Columns of the randomized sketch, or None when an exact SVD is as cheap.

    Once the sketch covers a large part of min(m, n) the randomized method does about as
    much work as the full SVD and is less accurate, so callers fall back to exact.
    """
    extra = max(rank, 16) if oversample is None else oversample
    size = rank + extra
    if size * 3 > min(shape):
        return None
    return size
