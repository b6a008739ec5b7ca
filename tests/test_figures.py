"""Figure builders and heatmap pooling, tested as plain functions (no Streamlit, no browser)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lift_core.analysis.overlap import (
    baseline_masks,
    mask_difference,
    overlap_vs_budget,
    overlap_vs_filter_rank,
    pairwise_jaccard,
)
from lift_core.lowrank.masks import lora_budget
from lift_core.lowrank.spectra import cumulative_energy, summarize_spectrum
from lift_ui import pooling
from lift_ui.figures.explorer import (
    energy_figure,
    model_overlap_figure,
    overlap_sweep_figure,
    pairwise_figure,
    spectrum_figure,
)
from lift_ui.figures.matrix import (
    difference_heatmap,
    magnitude_heatmap,
    mask_heatmap,
    row_col_figure,
)
from lift_ui.pooling import MatrixView


@pytest.fixture
def weight() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    low_rank = torch.randn(40, 3, generator=g) @ torch.randn(3, 30, generator=g)
    return low_rank + 0.1 * torch.randn(40, 30, generator=g)


# --- pooling ---------------------------------------------------------------------------


def test_pool_factor_brings_the_longest_side_under_the_limit():
    assert pooling.pool_factor((384, 384), 160) == 3
    assert pooling.pool_factor((1536, 384), 160) == 10
    assert pooling.pool_factor((100, 20), 160) == 1


def test_max_pool_keeps_each_blocks_largest_entry_including_ragged_edges():
    a = np.arange(35, dtype=np.float32).reshape(5, 7)
    pooled = pooling.max_pool(a, 3)
    assert pooled.shape == (2, 3)
    expected = [[a[:3, j:j + 3].max() for j in (0, 3, 6)], [a[3:, j:j + 3].max() for j in (0, 3, 6)]]
    np.testing.assert_array_equal(pooled, expected)


def test_mask_pools_any_and_fraction_ignore_padding():
    mask = np.zeros((5, 5), dtype=bool)
    mask[4, 4] = True  # alone in the ragged 1x1 corner block
    mask[0, 0] = mask[0, 1] = True
    np.testing.assert_array_equal(pooling.any_pool(mask, 2), [[1, 0, 0], [0, 0, 0], [0, 0, 1]])
    frac = pooling.mean_pool(mask, 2)
    assert frac[0, 0] == pytest.approx(0.5) and frac[2, 2] == pytest.approx(1.0)


def test_pooled_difference_codes_mean_any_lift_and_any_magnitude():
    codes = np.array([[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 0, 0], [0, 0, 0, 0]], dtype=np.uint8)
    # block (0,0) has only-LIFT, block (0,1) only-magnitude, block (1,0) an entry in both.
    np.testing.assert_array_equal(pooling.pool_difference(codes, 2), [[1, 2], [3, 0]])
    lift = torch.tensor([[1, 0], [1, 0]], dtype=torch.bool)
    mag = torch.tensor([[0, 0], [1, 1]], dtype=torch.bool)
    assert pooling.pool_difference(mask_difference(lift, mag).numpy(), 2).item() == 3


def test_zoom_window_is_clamped_inside_the_matrix():
    a = np.arange(300 * 200).reshape(300, 200)
    win = pooling.zoom_window(a, 250, 150, side=128)
    assert win.shape == (128, 128) and win[0, 0] == a[172, 72]
    view = MatrixView.window((300, 200), 250, 150, side=128)
    assert (view.row0, view.col0, view.factor) == (172, 72, 1)
    assert "rows 172–299, columns 72–199" in view.describe()


def test_whole_view_pools_every_kind_consistently():
    view = MatrixView.whole((1536, 384))
    assert view.factor == 10 and "pooling factor 10" in view.describe()
    assert view.magnitudes(np.ones((1536, 384))).shape == (154, 39)
    assert view.mask(np.ones((1536, 384), dtype=bool)).max() == 1.0


# --- spectrum figures ------------------------------------------------------------------


def test_spectrum_figure_is_log_log_with_shuffled_copy_edge_and_rank(weight):
    spec = summarize_spectrum(weight, 3)
    fig = spectrum_figure(spec.singular_values.numpy(), spec.shuffled_singular_values.numpy(), spec.mp_edge, 3)
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    names = [t.name for t in fig.data]
    assert names[0] == "W" and names[1] == "shuffled copy"
    assert names[2].startswith("MP bulk edge") and tuple(fig.data[2].y) == (spec.mp_edge, spec.mp_edge)
    assert tuple(fig.data[3].x) == (3, 3)
    assert len(fig.data[0].y) == 30


def test_energy_figure_marks_the_filter_rank(weight):
    s = summarize_spectrum(weight, 3, with_shuffled=False).singular_values
    energy = cumulative_energy(s).numpy()
    fig = energy_figure(energy, 3)
    assert fig.layout.xaxis.type == "log"
    assert fig.data[1].x == (3,) and fig.data[1].y[0] == pytest.approx(energy[2])
    assert energy[2] > 0.9  # three planted directions carry nearly all the energy


# --- matrix figures --------------------------------------------------------------------


def test_heatmaps_place_pooled_blocks_at_original_indices(weight):
    fig = magnitude_heatmap(pooling.max_pool(weight.abs().numpy(), 4), "|W|", factor=4, row0=0, col0=0)
    heat = fig.data[0]
    assert heat.type == "heatmap" and heat.dx == 4 and heat.dy == 4
    assert fig.layout.yaxis.autorange == "reversed"
    assert "blocks of 4x4" in fig.layout.xaxis.title.text
    zoomed = mask_heatmap(np.eye(3), "mask", factor=1, row0=10, col0=20)
    assert (zoomed.data[0].y0, zoomed.data[0].x0) == (10, 20)
    assert zoomed.data[0].zmax == 1


def test_difference_heatmap_has_four_labelled_categories():
    codes = np.array([[0, 1], [2, 3]])
    fig = difference_heatmap(codes, "diff")
    heat = fig.data[0]
    assert list(heat.colorbar.ticktext) == ["neither", "only LIFT", "only magnitude", "both"]
    assert heat.zmin == -0.5 and heat.zmax == 3.5
    assert heat.customdata[1][1] == "both"
    assert len({c for _, c in heat.colorscale}) == 4


def test_row_col_figure_compares_lift_and_magnitude(weight):
    k = lora_budget(tuple(weight.shape), 2)
    masks = baseline_masks(weight, k=k, filter_rank=3)
    lift, mag = masks["lift"].numpy(), masks["magnitude"].numpy()
    fig = row_col_figure(lift.sum(1), mag.sum(1), lift.sum(0), mag.sum(0))
    assert len(fig.data) == 4
    assert sum(fig.data[0].y) == k and sum(fig.data[3].y) == k
    assert [t.name for t in fig.data] == ["LIFT", "magnitude", "LIFT", "magnitude"]


# --- overlap figures -------------------------------------------------------------------


def test_overlap_sweep_figure_draws_each_pair_on_a_log_axis(weight):
    k = lora_budget(tuple(weight.shape), 2)
    table = overlap_vs_filter_rank(weight, k=k, filter_ranks=[1, 2, 4, 8, 30])
    fig = overlap_sweep_figure(table, "filter_rank", 3, "r", "vs r")
    assert fig.layout.xaxis.type == "log"
    lines = {t.name: t for t in fig.data}
    assert {"LIFT vs magnitude", "LIFT vs random", "LIFT vs LIFT-smallest", "magnitude vs random"} <= set(lines)
    assert lines["LIFT vs magnitude"].y[-1] == pytest.approx(1.0)  # full rank: W_r = W


def test_pairwise_figure_is_a_labelled_square(weight):
    k = lora_budget(tuple(weight.shape), 2)
    table = pairwise_jaccard(baseline_masks(weight, k=k, filter_rank=3))
    fig = pairwise_figure(table)
    assert list(fig.data[0].x) == ["LIFT", "magnitude", "random", "LIFT-smallest"]
    assert np.allclose(np.diag(np.asarray(fig.data[0].z)), 1.0)


def test_model_overlap_figure_has_one_bar_trace_per_role():
    table = pd.DataFrame({
        "layer": [f"l{i}" for i in range(5)], "block": pd.array([0, 0, 1, 1, None], dtype="Int64"),
        "role": ["q", "up", "q", "up", "lm_head"],
        "jaccard_lift_vs_magnitude": [0.2, 0.05, 0.18, 0.04, 0.1],
        "jaccard_lift_vs_random": [0.02] * 5,
    })
    fig = model_overlap_figure(table)
    bars = [t for t in fig.data if t.type == "bar"]
    assert [b.name for b in bars] == ["q", "up", "lm_head"]
    assert list(bars[0].x) == ["0 q", "1 q"] and list(bars[2].x) == ["– lm_head"]
    assert fig.data[-1].name == "LIFT vs random" and len(fig.data[-1].y) == 5


# --- charts that agree with their own numbers (issue 14) --------------------------------


def _masks_with_jaccard(shape, k, shared, seed=0):
    """Two k-entry masks sharing ``shared`` entries, placed at random."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(shape[0] * shape[1])
    a, b = np.zeros(shape[0] * shape[1], bool), np.zeros(shape[0] * shape[1], bool)
    a[order[:k]] = True
    b[order[:shared]] = True
    b[order[k:2 * k - shared]] = True
    return a.reshape(shape), b.reshape(shape)


def test_pooled_difference_map_agrees_with_a_low_jaccard():
    # MiniLM's up layer: 1536x384, k = (m+n)*8 = 2.6%, Jaccard ~0.1, pooled 10x10.
    shape, k = (1536, 384), 15_360
    lift, mag = _masks_with_jaccard(shape, k, shared=2_800)
    codes = mask_difference(torch.from_numpy(lift), torch.from_numpy(mag)).numpy()
    assert pairwise_jaccard({"a": torch.from_numpy(lift), "b": torch.from_numpy(mag)}).iloc[0, 1] == pytest.approx(0.1, abs=0.01)
    view = MatrixView.whole(shape)
    counts = view.difference(codes)
    assert counts.sum() == 2 * k - 2_800  # every selected entry counted once
    shares = pooling.category_shares(counts)
    assert shares[pooling.BOTH] < 0.15  # not "almost all both"
    assert shares[pooling.ONLY_LIFT] > 0.3 and shares[pooling.ONLY_MAGNITUDE] > 0.3
    # The old "any of each" pooling called most blocks "both" on the same masks.
    old_both = pooling.any_pool(lift, view.factor) & pooling.any_pool(mag, view.factor)
    assert old_both.mean() > 0.5
    fig = difference_heatmap(counts, "diff", **view.placement)
    heat = fig.data[0]
    assert list(heat.colorbar.ticktext)[3] == "mostly both" and heat.zmax == 4.5
    cell = heat.customdata[0][0]
    assert list(cell[1:]) == list(counts[:, 0, 0])  # hover shows the counts behind the colour
    drawn = np.asarray(heat.z)
    assert (drawn == pooling.BOTH).sum() < 0.15 * (drawn > 0).sum()


def test_majority_codes_break_ties_explicitly():
    counts = np.array([[[2, 1, 1, 0, 0]], [[1, 2, 1, 0, 1]], [[0, 0, 1, 0, 1]]])
    np.testing.assert_array_equal(pooling.majority_codes(counts)[0],
                                  [pooling.ONLY_LIFT, pooling.ONLY_MAGNITUDE, pooling.BOTH,
                                   pooling.NEITHER, pooling.BOTH])
    tied = np.array([[[2]], [[2]], [[1]]])
    assert pooling.majority_codes(tied)[0, 0] == pooling.TIED


def test_matrix_heatmaps_keep_the_aspect_ratio_and_share_scales():
    tall = magnitude_heatmap(np.ones((154, 39)), "|W|", factor=10, zmax=0.7)
    wide = mask_heatmap(np.ones((128, 352)) * 0.1, "mask", zmax=0.2, factor=2)
    for fig in (tall, wide):
        assert fig.layout.yaxis.scaleanchor == "x" and fig.layout.yaxis.scaleratio == 1
        assert fig.layout.xaxis.constrain == "domain"
    assert tall.layout.height > wide.layout.height
    assert tall.data[0].zmin == 0 and tall.data[0].zmax == 0.7
    assert wide.data[0].zmax == 0.2  # the shared top, not this panel's own 0.1
    title = tall.layout.xaxis.title.text
    assert ") (" not in title and "blocks of 10x10" in title


def test_log_ticks_are_labelled_in_full():
    ticks = spectrum_figure(np.geomspace(7, 0.05, 384), np.geomspace(4, 0.05, 384), 3.7, 8).layout.yaxis
    labels = list(ticks.ticktext)
    assert len(labels) == len(set(labels))  # no "2" both below and above 1
    assert {"0.2", "0.5", "1", "2", "5"} <= set(labels)
    from lift_ui.figures.explorer import log_ticks
    assert log_ticks(0.5, 60, "%")["ticktext"] == ["0.5%", "1%", "2%", "5%", "10%", "20%", "50%"]


def test_spectrum_cut_is_applied_to_the_data_not_only_the_axis(weight):
    spec = summarize_spectrum(weight, 3)
    fig = spectrum_figure(spec.singular_values.numpy(), spec.shuffled_singular_values.numpy(), spec.mp_edge, 3)
    bottom = 10 ** fig.layout.yaxis.range[0]
    assert np.isnan(fig.data[0].y[-1])  # W's smallest singular values are cut
    for trace in fig.data[:2]:
        assert np.nanmin(np.asarray(trace.y, dtype=float)) >= bottom  # nothing dives below the frame
    assert "not drawn" in fig.layout.yaxis.title.text


def test_energy_axis_title_uses_markup_not_raw_text():
    title = energy_figure(np.linspace(0.1, 1, 10), 3).layout.yaxis.title.text
    assert "||" not in title and "‖W‖<sub>F</sub><sup>2</sup>" in title


def test_budget_sweep_marks_clipped_points_the_current_value_and_both_random_lines(weight):
    table = overlap_vs_budget(weight, filter_rank=3, lora_ranks=[1, 2, 4, 8, 16, 20, 30])
    assert (table["density"] >= 1).sum() >= 2  # 40x30: rank >= 18 covers the whole matrix
    fig = overlap_sweep_figure(table.assign(pct=100 * table["density"]), "pct", 20.0, "density %", "t",
                               current_jaccard=0.31, tick_unit="%")
    lines = {t.name: t for t in fig.data}
    clipped = lines["budget clipped: all entries"]
    assert clipped.text[0].strip() == "whole matrix"
    assert list(clipped.x) == list(100 * table.loc[table["density"] >= 1, "density"])
    assert tuple(lines["current"].x) == (20.0, 20.0)
    star = lines["now: LIFT vs magnitude 0.310"]
    assert tuple(star.x) == (20.0,) and tuple(star.y) == (0.31,)
    lift_rnd, mag_rnd = lines["LIFT vs random"], lines["magnitude vs random"]
    assert lift_rnd.line.width > 2 * mag_rnd.line.width and lift_rnd.marker.symbol != mag_rnd.marker.symbol
    assert fig.layout.xaxis.ticktext[-1] == "100%"
