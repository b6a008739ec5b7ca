"""lift_core.lowrank.svd: exact and block-Krylov rank-r approximations, the exact fallback rule."""

import pytest
import torch

from bench.common import power_law_matrix
from lift_core.lowrank.svd import (
    RANDOMIZED_MIN_DIM,
    BlockKrylov,
    block_size,
    checked_krylov_factors,
    exact_factors,
    exact_low_rank,
    low_rank_from_factors,
    low_rank_approximation,
    max_krylov_depth,
)


def test_exact_low_rank_matches_float64():
    w = torch.randn(40, 30, dtype=torch.float64)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    ref = (u[:, :5] * s[:5]) @ vh[:5]
    assert torch.allclose(exact_low_rank(w.float(), 5).double(), ref, atol=1e-4)


def test_factors_serve_every_rank():
    w = torch.randn(30, 20)
    factors = exact_factors(w)
    for r in (1, 7, 20):
        assert torch.equal(low_rank_from_factors(factors, r), exact_low_rank(w, r))
    assert torch.allclose(low_rank_from_factors(factors, 20), w, atol=1e-5)


def test_small_matrices_fall_back_to_exact():
    assert max_krylov_depth((384, 384), 4) is None
    assert max_krylov_depth((RANDOMIZED_MIN_DIM, 4096), 512) is None  # basis would not fit
    assert max_krylov_depth((1024, 1024), 8) >= 3
    w = torch.randn(64, 48)
    assert torch.equal(low_rank_approximation(w, 4, svd="randomized"), exact_low_rank(w, 4))


def test_block_krylov_basis_is_orthonormal_and_factors_approximate():
    w = power_law_matrix(600, 520, exponent=1.0)
    krylov = BlockKrylov(w, block_size(8), torch.Generator().manual_seed(0))
    for _ in range(4):
        krylov.grow()
    k_basis = krylov.basis
    assert k_basis.shape == (600, 5 * block_size(8))
    eye = torch.eye(k_basis.shape[1])
    assert torch.allclose(k_basis.T @ k_basis, eye, atol=1e-4)
    a, c = krylov.factors(8)
    ref = exact_low_rank(w, 8)
    assert torch.linalg.norm(a @ c - ref) < 1e-3 * torch.linalg.norm(ref)


def test_randomized_low_rank_is_accurate_on_power_law():
    w = power_law_matrix(800, 640)
    ref = exact_low_rank(w, 16)
    got = low_rank_approximation(w, 16, svd="randomized", generator=torch.Generator().manual_seed(1))
    assert got.shape == w.shape and got.dtype == torch.float32
    assert torch.linalg.norm(got - ref) < 1e-2 * torch.linalg.norm(ref)
    fixed = low_rank_approximation(w, 16, svd="randomized", power_iterations=8)
    assert torch.linalg.norm(fixed - ref) < 2e-2 * torch.linalg.norm(ref)


def test_checked_factors_give_up_when_never_converged():
    w = power_law_matrix(600, 600)
    assert checked_krylov_factors(w, 32, lambda old, new: False) is None
    assert checked_krylov_factors(torch.randn(32, 32), 4, lambda old, new: True) is None


def test_randomized_is_seeded_by_generator():
    w = power_law_matrix(700, 600)
    a = low_rank_approximation(w, 8, svd="randomized", power_iterations=2,
                               generator=torch.Generator().manual_seed(3))
    b = low_rank_approximation(w, 8, svd="randomized", power_iterations=2,
                               generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.gpu
def test_block_krylov_on_cuda_with_cpu_generator():
    w = power_law_matrix(1024, 768).cuda()
    got = low_rank_approximation(w, 16, svd="randomized", generator=torch.Generator().manual_seed(0))
    assert got.is_cuda
    ref = exact_low_rank(w, 16)
    assert torch.linalg.norm(got - ref) < 1e-2 * torch.linalg.norm(ref)
