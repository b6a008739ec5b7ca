"""Shrink big matrices for heatmaps without hiding what matters.

A 1536x384 layer has 590k entries; a browser heatmap wants ~150 per side. Magnitudes are
max-pooled (a block is as bright as its brightest entry, so large weights never vanish).
Masks are pooled by "does the block hold any selected entry", and the LIFT-vs-magnitude
difference codes (0 neither, 1 only LIFT, 2 only magnitude, 3 both) are pooled bit by bit:
a block is "LIFT" if any entry in it is LIFT-selected, "magnitude" likewise.
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


def pool_difference(codes: np.ndarray, factor: int) -> np.ndarray:
    """Pool difference codes: bit 1 = any only-or-both LIFT entry, bit 2 = any magnitude one."""
    codes = np.asarray(codes, dtype=np.uint8)
    if factor == 1:
        return codes
    lift = any_pool((codes & 1) > 0, factor)
    mag = any_pool((codes & 2) > 0, factor)
    return lift.astype(np.uint8) + 2 * mag.astype(np.uint8)


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

    def codes(self, a: np.ndarray) -> np.ndarray:
        """Difference codes pooled by "any LIFT / any magnitude" (or windowed)."""
        return pool_difference(self._cut(a), self.factor)

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
