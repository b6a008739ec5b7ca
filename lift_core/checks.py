"""Input checks for matrices, ranks, budgets and SVD modes, each written once.

Masks, the scorer, overlap sweeps, the whole-model analysis and the optimizer all take the
same kinds of input (a 2-D weight, a filter rank, a budget k or a LoRA-equivalent rank, an
SVD mode). Each check lives here so that they accept and reject the same values and say so
in the same words: a :class:`~lift_core.errors.LiftError` whose one line names what was
wrong and what is allowed.
"""

from __future__ import annotations

from typing import Mapping

import torch

from lift_core.errors import LiftError

SVD_MODES = ("exact", "randomized")


def _is_whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def as_float_matrix(weight: torch.Tensor) -> torch.Tensor:
    """Return ``weight`` as a detached fp32 2-D tensor on its own device.

    Raises:
        LiftError: when it is not a tensor, or not 2-D.
    """
    if not isinstance(weight, torch.Tensor):
        raise LiftError(f"expected a torch.Tensor weight, got {type(weight).__name__}")
    if weight.ndim != 2:
        raise LiftError(
            f"expected a 2-D weight matrix (out, in), got shape {tuple(weight.shape)}"
        )
    return weight.detach().to(torch.float32)


def check_shape(shape) -> tuple[int, int]:
    """Return (m, n) of a 2-D, non-empty weight shape; raise LiftError otherwise."""
    if len(shape) != 2:
        raise LiftError(f"expected a 2-D weight shape (out, in), got {tuple(shape)}")
    m, n = int(shape[0]), int(shape[1])
    if m < 1 or n < 1:
        raise LiftError(f"empty weight shape {(m, n)}")
    return m, n


def check_filter_rank(shape: tuple[int, int], filter_rank: int) -> None:
    """Raise LiftError unless 1 <= filter_rank <= min(m, n)."""
    m, n = shape
    if not _is_whole(filter_rank):
        raise LiftError(f"filter rank must be a whole number, got {filter_rank!r}")
    if filter_rank < 1 or filter_rank > min(m, n):
        raise LiftError(
            f"filter rank {filter_rank} is out of range for a {m}x{n} matrix "
            f"(allowed: 1 to {min(m, n)})"
        )


def check_filter_rank_fits(shapes: Mapping[str, tuple[int, int]], filter_rank: int) -> None:
    """Raise LiftError unless ``filter_rank`` is valid for every named (out, in) shape.

    The message names the first layer that is too small and the largest rank valid for all.
    """
    if not _is_whole(filter_rank) or filter_rank < 1:
        raise LiftError(f"filter rank must be a whole number >= 1, got {filter_rank!r}")
    too_small = [name for name, shape in shapes.items() if min(shape) < filter_rank]
    if too_small:
        first = shapes[too_small[0]]
        raise LiftError(
            f"filter rank {filter_rank} exceeds the rank of {too_small[0]} "
            f"({first[0]}x{first[1]}): it exceeds min(out, in) of {len(too_small)} layer(s); "
            f"the largest rank valid for every layer is {min(min(s) for s in shapes.values())}"
        )


def check_svd_mode(svd: str) -> None:
    """Raise LiftError unless ``svd`` is one of :data:`SVD_MODES`."""
    if svd not in SVD_MODES:
        raise LiftError(f"unknown svd mode {svd!r} (allowed: {', '.join(SVD_MODES)})")


def check_k(shape, k: int) -> None:
    """Raise LiftError unless 1 <= k <= m*n (k: entries a mask selects)."""
    numel = int(shape[0]) * int(shape[1])
    if not _is_whole(k) or not 1 <= k <= numel:
        raise LiftError(
            f"k (entries to select) must be between 1 and {numel} for a "
            f"{shape[0]}x{shape[1]} matrix, got {k!r}"
        )


def check_budget_rank(lora_rank: int) -> None:
    """Raise LiftError unless the budget (LoRA-equivalent) rank is a whole number >= 1."""
    if not _is_whole(lora_rank) or lora_rank < 1:
        raise LiftError(f"budget (LoRA) rank must be a whole number >= 1, got {lora_rank!r}")


def check_density(density: float) -> None:
    """Raise LiftError unless the budget density is in (0, 1]."""
    if not 0 < density <= 1:
        raise LiftError(f"density must be in (0, 1], got {density!r}")
