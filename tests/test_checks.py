"""lift_core.checks: each input check once, with the one-line messages every caller shows."""

import pytest
import torch

from lift_core.checks import (
    as_float_matrix,
    check_budget_rank,
    check_density,
    check_filter_rank,
    check_filter_rank_fits,
    check_k,
    check_shape,
    check_svd_mode,
)
from lift_core.errors import LiftError


def test_as_float_matrix_converts_and_rejects():
    w = torch.ones(3, 4, dtype=torch.bfloat16, requires_grad=True)
    out = as_float_matrix(w)
    assert out.dtype == torch.float32 and not out.requires_grad
    with pytest.raises(LiftError, match="2-D"):
        as_float_matrix(torch.ones(2, 3, 4))
    with pytest.raises(LiftError, match="torch.Tensor"):
        as_float_matrix([[1.0]])


@pytest.mark.parametrize("bad", [0, 5, 2.0, True])
def test_check_filter_rank(bad):
    with pytest.raises(LiftError):
        check_filter_rank((4, 6), bad)
    check_filter_rank((4, 6), 4)


def test_check_svd_mode():
    check_svd_mode("exact")
    with pytest.raises(LiftError, match="unknown svd mode 'fast'"):
        check_svd_mode("fast")


def test_check_filter_rank_fits_names_the_layer_and_the_largest_valid_rank():
    shapes = {"blocks.0.q": (16, 16), "blocks.0.up": (48, 16), "head": (64, 32)}
    check_filter_rank_fits(shapes, 16)
    with pytest.raises(LiftError, match=r"filter rank 20 exceeds the rank of blocks.0.q \(16x16\)"):
        check_filter_rank_fits(shapes, 20)
    with pytest.raises(LiftError, match=r"exceeds min\(out, in\) of 2 layer\(s\).*largest rank valid for every layer is 16"):
        check_filter_rank_fits(shapes, 20)
    for bad in (0, 2.0, True):
        with pytest.raises(LiftError, match="filter rank must be a whole number >= 1"):
            check_filter_rank_fits(shapes, bad)


def test_shape_k_budget_and_density():
    assert check_shape(torch.Size([3, 5])) == (3, 5)
    with pytest.raises(LiftError, match="2-D weight shape"):
        check_shape((3,))
    with pytest.raises(LiftError, match="empty weight shape"):
        check_shape((0, 4))
    check_k((3, 5), 15)
    for bad in (0, 16, 2.0, True):
        with pytest.raises(LiftError, match=r"k \(entries to select\) must be between 1 and 15 for a 3x5 matrix"):
            check_k((3, 5), bad)
    check_budget_rank(1)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(LiftError, match=r"budget \(LoRA\) rank must be a whole number >= 1"):
            check_budget_rank(bad)
    check_density(1.0)
    for bad in (0, 1.5, -0.1):
        with pytest.raises(LiftError, match=r"density must be in \(0, 1\]"):
            check_density(bad)
