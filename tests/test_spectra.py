"""lift_core.lowrank.spectra: ranks, energy, Marchenko-Pastur edge and the shuffled-copy spectrum."""

import math

import pytest
import torch

from lift_core.errors import LiftError
from lift_core.lowrank.spectra import (
    SpectrumSummary,
    cumulative_energy,
    effective_rank,
    energy_at_rank,
    mp_bulk_edge,
    shuffled_singular_values,
    singular_values,
    stable_rank,
    summarize_spectrum,
)


def test_singular_values_descending_fp32():
    w = torch.diag(torch.tensor([1.0, 3.0, 2.0])).to(torch.bfloat16)
    s = singular_values(w)
    assert s.dtype == torch.float32 and s.tolist() == [3.0, 2.0, 1.0]


def test_ranks_on_known_spectra():
    rank_one = torch.tensor([5.0, 0.0, 0.0, 0.0])
    flat = torch.ones(8)
    assert stable_rank(rank_one) == pytest.approx(1.0)
    assert effective_rank(rank_one) == pytest.approx(1.0)
    assert stable_rank(flat) == pytest.approx(8.0)
    assert effective_rank(flat) == pytest.approx(8.0)
    identity = singular_values(torch.eye(6))
    assert stable_rank(identity) == pytest.approx(6.0) and effective_rank(identity) == pytest.approx(6.0)
    assert stable_rank(torch.zeros(3)) == 0.0 and effective_rank(torch.zeros(3)) == 0.0


def test_cumulative_energy():
    s = torch.tensor([2.0, 1.0, 1.0])  # energies 4, 1, 1
    assert cumulative_energy(s).tolist() == pytest.approx([4 / 6, 5 / 6, 1.0])
    assert energy_at_rank(s, 2) == pytest.approx(5 / 6)
    with pytest.raises(ValueError):
        energy_at_rank(s, 4)


def test_mp_edge_matches_large_gaussian():
    g = torch.Generator().manual_seed(0)
    w = 0.02 * torch.randn(1000, 500, generator=g)
    top = float(singular_values(w)[0])
    edge = mp_bulk_edge((1000, 500), 0.02)
    assert edge == pytest.approx(0.02 * (math.sqrt(1000) + math.sqrt(500)))
    assert abs(top - edge) / edge < 0.03


def test_shuffling_flattens_a_low_rank_spectrum():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(120, 2, generator=g) @ torch.randn(2, 80, generator=g)
    s = singular_values(w)
    shuffled = shuffled_singular_values(w, torch.Generator().manual_seed(1))
    assert shuffled.shape == s.shape
    assert torch.allclose((shuffled**2).sum(), (s**2).sum(), rtol=1e-3)  # same entries
    assert stable_rank(shuffled) > 5 * stable_rank(s)
    assert effective_rank(shuffled) > effective_rank(s)


def test_summarize_spectrum_fields():
    g = torch.Generator().manual_seed(0)
    w = 0.01 * torch.randn(200, 100, generator=g)
    w += 2.0 * torch.outer(torch.randn(200, generator=g), torch.randn(100, generator=g)) / 100
    summary = summarize_spectrum(w, 4, generator=torch.Generator().manual_seed(0))
    assert isinstance(summary, SpectrumSummary)
    assert summary.singular_values.shape == (100,)
    assert summary.shuffled_singular_values.shape == (100,)
    assert summary.filter_rank == 4
    assert summary.entry_std == pytest.approx(float(w.std()))
    assert summary.mp_edge == pytest.approx(mp_bulk_edge((200, 100), summary.entry_std))
    assert summary.above_mp_edge >= 1  # the planted spike
    assert 0 < summary.energy_at_r <= 1 and summary.stable_rank >= 1
    bare = summarize_spectrum(w, 4, with_shuffled=False)
    assert bare.shuffled_singular_values.numel() == 0
    with pytest.raises(LiftError, match="filter rank"):
        summarize_spectrum(w, 101)
