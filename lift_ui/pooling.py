"""Shrink big matrices for heatmaps without hiding what matters.

A 1536x384 layer has 590k entries; a browser heatmap wants ~150 per side. Magnitudes are
max-pooled (a block is as bright as its brightest entry, so large weights never vanish).
Masks are pooled to the fraction of each block that is selected. The LIFT-vs-magnitude
difference codes (0 neither, 1 only LIFT, 2 only magnitude, 3 both) are pooled to per-block
counts of each kind and drawn by the most common kind: pooling by "any LIFT and any
magnitude entry" would call nearly every block "both" even where the masks share one entry
in ten (measured on MiniLM's block-0 `up` layer, 1536x384: Jaccard 0.107, yet 77% of the blocks
holding a selected entry held some of each; by most common kind 7% are "both").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_SIDE = 160  # largest heatmap side drawn (cells)
ZOOM_SIDE = 128  # side of the full-resolution zoom window


def pool_factor(shape: tuple[int, int], max_side: int = MAX_SIDE) -> int:
    """Smallest integer block size that brings both sides down to ``max_side`` or less."""
    return max(1, math.ceil(max(shape) / max_side))


def _blocks(a: np.ndarray, factor: int, fill) -> np.ndarray:
    """View ``a`` (m, n) as (m/f, f, n/f, f) blocks, padding the ragged edge with ``fill``."""
    m, n = a.shape
    pm, pn = -m % factor, -n % factor
    if pm or pn:
        a = np.pad(a, ((0, pm), (0, pn)), constant_values=fill)
    return a.reshape(a.shape[0] // factor, factor, a.shape[1] // factor, factor)


def max_pool(a: np.ndarray, factor: int) -> np.ndarray:
    """Block maximum of a 2-D float array (padding never wins: it is -inf)."""
    if factor == 1:
        return np.asarray(a, dtype=np.float32)
    return _blocks(np.asarray(a, dtype=np.float32), factor, -np.inf).max(axis=(1, 3))


def any_pool(mask: np.ndarray, factor: int) -> np.ndarray:
    """Block "any": True where the block holds at least one selected entry."""
    if factor == 1:
        return np.asarray(mask, dtype=bool)
    return _blocks(np.asarray(mask, dtype=bool), factor, False).any(axis=(1, 3))


def mean_pool(mask: np.ndarray, factor: int) -> np.ndarray:
    """Fraction of selected entries per block (padding is excluded from the count)."""
    a = np.asarray(mask, dtype=np.float32)
    if factor == 1:
        return a
    total = _blocks(a, factor, 0.0).sum(axis=(1, 3))
    count = _blocks(np.ones_like(a), factor, 0.0).sum(axis=(1, 3))
    return total / count


# Pooled difference categories: the four codes of mask_difference plus a tie.
NEITHER, ONLY_LIFT, ONLY_MAGNITUDE, BOTH, TIED = 0, 1, 2, 3, 4


def difference_counts(codes: np.ndarray, factor: int) -> np.ndarray:
    """Per-block counts of only-LIFT, only-magnitude and both entries: shape (3, rows, cols)."""
    codes = np.asarray(codes, dtype=np.uint8)
    kinds = [codes == code for code in (ONLY_LIFT, ONLY_MAGNITUDE, BOTH)]
    if factor == 1:
        return np.stack(kinds).astype(np.int32)
    return np.stack([_blocks(k, factor, False).sum(axis=(1, 3)) for k in kinds]).astype(np.int32)


def majority_codes(counts: np.ndarray) -> np.ndarray:
    """Each block's most common kind (1 only LIFT, 2 only magnitude, 3 both; 0 when empty).

    A tie that includes the shared entries counts as both (as many shared entries as lone
    ones); a tie between only-LIFT and only-magnitude alone is TIED.
    """
    only_lift, only_mag, both = (np.asarray(c) for c in counts)
    top = np.maximum(np.maximum(only_lift, only_mag), both)
    out = np.full(top.shape, NEITHER, dtype=np.uint8)
    out[(only_lift == top) & (only_mag < top)] = ONLY_LIFT
    out[(only_mag == top) & (only_lift < top)] = ONLY_MAGNITUDE
    out[(only_lift == top) & (only_mag == top)] = TIED
    out[both == top] = BOTH
    out[top == 0] = NEITHER
    return out


def category_shares(counts: np.ndarray) -> dict[int, float]:
    """Share of the blocks holding any selected entry that falls in each majority category."""
    codes = majority_codes(counts)
    filled = codes != NEITHER
    total = max(int(filled.sum()), 1)
    return {code: int((codes == code).sum()) / total for code in (ONLY_LIFT, ONLY_MAGNITUDE, BOTH, TIED)}


def pool_difference(codes: np.ndarray, factor: int) -> np.ndarray:
    """Pooled difference categories: each block's most common kind (see majority_codes)."""
    return majority_codes(difference_counts(codes, factor))


def zoom_window(a: np.ndarray, row: int, col: int, side: int = ZOOM_SIDE) -> np.ndarray:
    """The ``side`` x ``side`` window starting at (row, col), clipped to the matrix."""
    row, col = clamp_offset(a.shape[0], row, side), clamp_offset(a.shape[1], col, side)
    return a[row:row + side, col:col + side]


def clamp_offset(length: int, offset: int, side: int = ZOOM_SIDE) -> int:
    """An offset moved back inside [0, length - side] (0 when the matrix is smaller)."""
    return int(min(max(0, offset), max(0, length - side)))


@dataclass(frozen=True)
class MatrixView:
    """What part of an (m, n) matrix a heatmap shows: all of it pooled, or a zoom window."""

    shape: tuple[int, int]
    factor: int  # pooling block side (1 = full resolution)
    row0: int = 0  # first row shown
    col0: int = 0  # first column shown
    side: int | None = None  # zoom window side, None for the whole matrix

    @classmethod
    def whole(cls, shape: tuple[int, int], max_side: int = MAX_SIDE) -> "MatrixView":
        return cls(tuple(shape), pool_factor(shape, max_side))

    @classmethod
    def window(cls, shape: tuple[int, int], row: int, col: int, side: int = ZOOM_SIDE) -> "MatrixView":
        m, n = shape
        return cls(tuple(shape), 1, clamp_offset(m, row, side), clamp_offset(n, col, side), side)

    def _cut(self, a: np.ndarray) -> np.ndarray:
        return a if self.side is None else zoom_window(a, self.row0, self.col0, self.side)

    def magnitudes(self, a: np.ndarray) -> np.ndarray:
        """Max-pooled (or windowed) magnitudes."""
        return max_pool(self._cut(a), self.factor)

    def mask(self, a: np.ndarray) -> np.ndarray:
        """Fraction selected per block (or the windowed 0/1 mask)."""
        return mean_pool(self._cut(a), self.factor)

    def difference(self, codes: np.ndarray) -> np.ndarray:
        """Per-block counts (3, rows, cols) of only-LIFT, only-magnitude and both entries."""
        return difference_counts(self._cut(codes), self.factor)

    def window_of(self, a: np.ndarray) -> np.ndarray:
        """The part of ``a`` this view shows, unpooled (the whole matrix when not zoomed)."""
        return self._cut(a)

    @property
    def placement(self) -> dict:
        """Keyword arguments for the heatmap builders (where the picture sits in W)."""
        return {"factor": self.factor, "row0": self.row0, "col0": self.col0}

    def describe(self) -> str:
        m, n = self.shape
        if self.side is not None:
            last_r, last_c = min(m, self.row0 + self.side) - 1, min(n, self.col0 + self.side) - 1
            return f"rows {self.row0}–{last_r}, columns {self.col0}–{last_c} at full resolution"
        if self.factor == 1:
            return f"the whole {m}x{n} matrix at full resolution"
        return f"the whole {m}x{n} matrix pooled in {self.factor}x{self.factor} blocks (pooling factor {self.factor})"
