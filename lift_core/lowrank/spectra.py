"""Singular spectra of weight matrices and the numbers that summarise them.

Principal weights exist because trained matrices are not random: a few singular directions
stand far above the Marchenko–Pastur bulk that an i.i.d. matrix of the same shape and
entry variance would have. This module measures that: singular values, the energy a rank-r
approximation keeps, stable and effective rank, the MP bulk edge, and the spectrum of a
copy whose entries were shuffled (same values, structure destroyed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lift_core.checks import as_float_matrix, check_filter_rank


def singular_values(weight: torch.Tensor) -> torch.Tensor:
    """Singular values of ``weight`` in descending order (fp32, on CPU)."""
    return torch.linalg.svdvals(as_float_matrix(weight)).cpu()


def cumulative_energy(s: torch.Tensor) -> torch.Tensor:
    """Fraction of ||W||_F^2 kept by the best rank-r approximation, for r = 1..len(s)."""
    energy = s.double() ** 2
    return (torch.cumsum(energy, 0) / energy.sum()).float()


def energy_at_rank(s: torch.Tensor, rank: int) -> float:
    """Fraction of the squared Frobenius norm that rank ``rank`` keeps."""
    if not 1 <= rank <= len(s):
        raise ValueError(f"rank {rank} out of range 1..{len(s)}")
    return float(cumulative_energy(s)[rank - 1])


def stable_rank(s: torch.Tensor) -> float:
    """||W||_F^2 / ||W||_2^2: how many directions carry the energy, robust to noise."""
    s = s.double()
    return float((s**2).sum() / s[0] ** 2) if s[0] > 0 else 0.0


def effective_rank(s: torch.Tensor) -> float:
    """exp(entropy of s / sum(s)) (Roy & Vetterli 2007): 1 for rank one, n for a flat spectrum."""
    s = s.double()
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(math.exp(-(p * p.log()).sum()))


def mp_bulk_edge(shape: tuple[int, int], entry_std: float) -> float:
    """Largest singular value of an i.i.d. (m, n) matrix with that entry std (large-size limit).

    Marchenko–Pastur: the singular values of such a matrix fill [std|sqrt(m)-sqrt(n)|,
    std(sqrt(m)+sqrt(n))]; values above the upper edge are structure, not noise.
    """
    m, n = shape
    return float(entry_std * (math.sqrt(m) + math.sqrt(n)))


def shuffled_singular_values(
    weight: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Singular values after randomly permuting all entries (keeps the values, not the structure)."""
    w = as_float_matrix(weight).cpu()
    perm = torch.randperm(w.numel(), generator=generator)
    return singular_values(w.reshape(-1)[perm].reshape(w.shape))


@dataclass(frozen=True)
class SpectrumSummary:
    """Everything the spectrum page and the per-layer table need about one matrix."""

    singular_values: torch.Tensor  # descending, fp32
    shuffled_singular_values: torch.Tensor  # same entries, randomly permuted
    mp_edge: float  # Marchenko–Pastur upper edge for this shape and entry std
    entry_std: float
    stable_rank: float
    effective_rank: float
    energy_at_r: float  # fraction of ||W||_F^2 kept by the filter rank
    filter_rank: int
    above_mp_edge: int  # singular values above the MP edge ("spikes")


def summarize_spectrum(
    weight: torch.Tensor,
    filter_rank: int,
    *,
    with_shuffled: bool = True,
    generator: torch.Generator | None = None,
) -> SpectrumSummary:
    """Spectrum, ranks, energy and MP comparison of one matrix.

    Args:
        weight: 2-D weight (out, in).
        filter_rank: the r whose kept energy is reported.
        with_shuffled: also compute the shuffled copy's spectrum (a second SVD).
        generator: seeds the shuffle.
    """
    w = as_float_matrix(weight)
    check_filter_rank(tuple(w.shape), filter_rank)
    s = singular_values(w)
    std = float(w.std())
    edge = mp_bulk_edge(tuple(w.shape), std)
    shuffled = shuffled_singular_values(w, generator) if with_shuffled else torch.empty(0)
    return SpectrumSummary(
        singular_values=s,
        shuffled_singular_values=shuffled,
        mp_edge=edge,
        entry_std=std,
        stable_rank=stable_rank(s),
        effective_rank=effective_rank(s),
        energy_at_r=energy_at_rank(s, filter_rank),
        filter_rank=filter_rank,
        above_mp_edge=int((s > edge).sum()),
    )
