"""Whole-model analysis: one row per layer, numbers consistent with the per-matrix functions."""

import pytest
import torch

from lift_core.analysis.layers import analyze_layer, analyze_model, save_masks
from lift_core.analysis.overlap import jaccard
from lift_core.errors import LiftError
from lift_core.lowrank.masks import lift_mask, lora_budget, magnitude_mask
from lift_core.models.loading import layer_weight, list_linear_layers, load_model


@pytest.fixture(scope="module")
def minilm():
    return load_model("minilm")


def test_minilm_table(minilm):
    seen = []
    result = analyze_model(minilm, lora_rank=8, filter_rank=8,
                           progress=lambda done, total, name: seen.append((done, total, name)))
    table = result.table
    assert len(table) == 37 and seen[-1][:2] == (37, 37)
    for column in ["layer", "block", "role", "out", "in", "k", "stable_rank", "effective_rank",
                   "energy_at_r", "mp_edge", "above_mp_edge", "jaccard_lift_vs_magnitude",
                   "lift_in_magnitude", "jaccard_lift_vs_random"]:
        assert column in table.columns
    assert table.loc[table.layer == "pooler.dense", "block"].isna().all()
    # The paper's observation, on real weights: LIFT's mask is far from the magnitude mask
    # (Jaccard well below 1) yet far closer to it than a random mask is.
    assert table.jaccard_lift_vs_magnitude.between(0.02, 0.5).all()
    assert (table.jaccard_lift_vs_magnitude > 2 * table.jaccard_lift_vs_random).all()
    assert (table.k == [lora_budget((o, i), 8) for o, i in zip(table.out, table["in"])]).all()


def test_row_matches_direct_computation(minilm):
    layer = list_linear_layers(minilm)[4]
    w = layer_weight(minilm, layer)
    row, mask = analyze_layer(w, lora_rank=4, filter_rank=16)
    k = lora_budget(tuple(w.shape), 4)
    assert torch.equal(mask, lift_mask(w, k=k, filter_rank=16))
    assert row["jaccard_lift_vs_magnitude"] == pytest.approx(jaccard(mask, magnitude_mask(w, k=k)))
    s = torch.linalg.svdvals(w.double())
    assert row["stable_rank"] == pytest.approx(float((s**2).sum() / s[0] ** 2), rel=1e-4)
    assert row["energy_at_r"] == pytest.approx(float((s[:16] ** 2).sum() / (s**2).sum()), rel=1e-4)


def test_randomized_mode_agrees_with_exact(minilm):
    exact = analyze_model(minilm, lora_rank=8, filter_rank=8, blocks_only=True, keep_masks=True)
    fast = analyze_model(minilm, lora_rank=8, filter_rank=8, blocks_only=True, keep_masks=True,
                         svd="randomized")
    for name, mask in exact.masks.items():
        assert jaccard(mask, fast.masks[name]) >= 0.99, name


def test_budget_clipping_is_noted(tiny_llama_dir):
    model = load_model(str(tiny_llama_dir))
    result = analyze_model(model, lora_rank=64, filter_rank=4)
    assert result.table.budget_clipped.all()
    assert (result.table.density == 1.0).all()
    assert any("clipped" in note for note in result.notes)


def test_filter_rank_too_large_names_the_layer(tiny_llama_dir):
    model = load_model(str(tiny_llama_dir))
    with pytest.raises(LiftError, match=r"exceeds min\(out, in\).*largest rank valid for every layer is 16"):
        analyze_model(model, lora_rank=2, filter_rank=20)
    with pytest.raises(LiftError, match="filter rank must be"):
        analyze_model(model, lora_rank=2, filter_rank=0)
    with pytest.raises(LiftError, match="unknown svd mode"):
        analyze_model(model, lora_rank=2, filter_rank=2, svd="fast")
    with pytest.raises(LiftError, match="budget"):
        analyze_model(model, lora_rank=0, filter_rank=2)


def test_save_masks_roundtrip(tmp_path, tiny_gpt2_dir):
    from safetensors.torch import load_file

    model = load_model(str(tiny_gpt2_dir))
    result = analyze_model(model, lora_rank=1, filter_rank=2, keep_masks=True)
    path = tmp_path / "masks.safetensors"
    save_masks(str(path), result.masks, {"lora_rank": 1})
    loaded = load_file(str(path))
    assert set(loaded) == set(result.masks)
    for name, mask in loaded.items():
        assert mask.dtype == torch.bool and torch.equal(mask, result.masks[name])
        assert int(mask.sum()) == int(result.table.set_index("layer").loc[name, "k"])
