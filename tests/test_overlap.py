"""lift_core.analysis.overlap: set overlaps on hand-made masks and the filter-rank / budget sweeps."""

import pytest
import torch

from lift_core.analysis.overlap import (
    BOTH,
    NEITHER,
    ONLY_A,
    ONLY_B,
    baseline_masks,
    containment,
    jaccard,
    mask_difference,
    overlap_vs_budget,
    overlap_vs_filter_rank,
    pairwise_jaccard,
    row_col_counts,
)
from lift_core.errors import LiftError
from lift_core.lowrank.masks import lift_mask, lift_smallest_mask, lora_budget, magnitude_mask

A = torch.tensor([[True, True, False], [False, False, False]])
B = torch.tensor([[True, False, False], [True, True, False]])


def test_jaccard_and_containment():
    assert jaccard(A, B) == pytest.approx(1 / 4)
    assert jaccard(A, A) == 1.0
    empty = torch.zeros_like(A)
    assert jaccard(empty, empty) == 1.0
    assert containment(A, B) == pytest.approx(1 / 2)
    assert containment(B, A) == pytest.approx(1 / 3)
    assert containment(empty, A) == 1.0
    with pytest.raises(LiftError, match="different shapes"):
        jaccard(A, torch.zeros(3, 2, dtype=torch.bool))


def test_mask_difference_codes():
    diff = mask_difference(A, B)
    assert diff.dtype == torch.uint8
    assert diff.tolist() == [[BOTH, ONLY_A, NEITHER], [ONLY_B, ONLY_B, NEITHER]]


def test_row_col_counts():
    rows, cols = row_col_counts(B)
    assert rows.tolist() == [1, 2] and cols.tolist() == [2, 1, 0]


def test_pairwise_and_baselines():
    w = torch.randn(30, 20)
    masks = baseline_masks(w, k=60, filter_rank=3)
    assert set(masks) == {"lift", "magnitude", "random", "lift_smallest"}
    assert all(int(m.sum()) == 60 for m in masks.values())
    table = pairwise_jaccard(masks)
    assert list(table.columns) == list(masks) and (table.values.diagonal() == 1).all()
    assert table.loc["lift", "lift_smallest"] == 0.0


def test_overlap_vs_filter_rank_full_rank_is_magnitude():
    w = torch.randn(24, 16)
    k = 50
    df = overlap_vs_filter_rank(w, k=k, filter_ranks=[16, 2, 4, 2])
    assert df["filter_rank"].tolist() == [2, 4, 16] and (df["k"] == k).all()
    full = df.set_index("filter_rank").loc[16]
    assert full["jaccard_lift_vs_magnitude"] == pytest.approx(1.0)
    assert full["lift_in_magnitude"] == pytest.approx(1.0)
    assert df["jaccard_lift_vs_lift_smallest"].max() == 0.0
    with pytest.raises(LiftError, match="filter rank"):
        overlap_vs_filter_rank(w, k=k, filter_ranks=[17])


def test_exact_sweep_equals_per_rank_masks():
    w = torch.randn(20, 18)
    k = 40
    df = overlap_vs_filter_rank(w, k=k, filter_ranks=[1, 3, 9])
    for _, row in df.iterrows():
        r = int(row["filter_rank"])
        lift = lift_mask(w, k=k, filter_rank=r)
        expected = jaccard(lift, magnitude_mask(w, k=k))
        assert row["jaccard_lift_vs_magnitude"] == pytest.approx(expected)
        smallest = lift_smallest_mask(w, k=k, filter_rank=r)
        assert row["jaccard_lift_vs_lift_smallest"] == pytest.approx(jaccard(lift, smallest))


def test_overlap_vs_budget_k_column():
    w = torch.randn(12, 10)
    df = overlap_vs_budget(w, filter_rank=2, lora_ranks=[8, 1, 2])
    assert df["lora_rank"].tolist() == [1, 2, 8]
    assert df["k"].tolist() == [lora_budget((12, 10), r) for r in (1, 2, 8)]
    assert df["k"].iloc[-1] == 120  # clipped to the whole matrix
    assert df["density"].tolist() == pytest.approx([k / 120 for k in df["k"]])
    assert df["jaccard_lift_vs_magnitude"].iloc[-1] == 1.0  # everything selected


def test_randomized_sweep_runs():
    w = torch.randn(16, 12)
    df = overlap_vs_filter_rank(w, k=20, filter_ranks=[2], svd="randomized")
    assert len(df) == 1 and 0 <= df["jaccard_lift_vs_random"].iloc[0] <= 1
