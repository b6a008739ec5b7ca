"""ΔW measures on constructed pairs with known answers, run folders, the diff CLI, the figures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from bench.common import power_law_matrix
from lift_core.analysis.delta import (
    DELTA_COLUMNS,
    delta_table,
    expand_run_dirs,
    layer_delta,
    method_summary,
    run_pair,
)
from lift_core.analysis.generations import before_after, run_prompts, spread_pick
from lift_core.cli.main import main
from lift_core.errors import LiftError
from lift_core.lowrank.masks import lift_mask, lora_budget, magnitude_mask
from lift_core.models.loading import list_linear_layers
from lift_ui.figures import delta as figs

SHAPE = (40, 32)


@pytest.fixture(scope="module")
def base_w():
    return power_law_matrix(*SHAPE, seed=1)


def test_rank_one_delta_has_rank_one(base_w):
    gen = torch.Generator().manual_seed(0)
    u, v = torch.randn(SHAPE[0], 1, generator=gen), torch.randn(1, SHAPE[1], generator=gen)
    row, s = layer_delta(base_w, base_w + 0.05 * u @ v, filter_rank=4, lora_rank=2)
    assert row["delta_stable_rank"] == pytest.approx(1.0, abs=1e-4)
    assert row["delta_effective_rank"] == pytest.approx(1.0, abs=1e-3)
    assert row["delta_energy_at_lora_rank"] == pytest.approx(1.0, abs=1e-6)
    assert row["changed_fraction"] == 1.0 and len(s) == min(SHAPE)
    assert row["rel_delta_fro"] == pytest.approx(float((0.05 * u @ v).norm() / base_w.norm()), rel=1e-5)


def test_delta_on_the_lift_mask_only_has_all_its_energy_there(base_w):
    k = lora_budget(SHAPE, 2)
    mask = lift_mask(base_w, k=k, filter_rank=4)
    delta = torch.randn(SHAPE) * mask
    row, _ = layer_delta(base_w, base_w + delta, filter_rank=4, lora_rank=2)
    assert row["energy_on_lift_mask"] == pytest.approx(1.0)
    assert row["k"] == k and row["changed_fraction"] == pytest.approx(k / base_w.numel())
    assert row["max_abs_delta"] == pytest.approx(float(delta.abs().max()), rel=1e-5)
    overlap = (mask & magnitude_mask(base_w, k=k)).sum() / k
    assert 0 < row["energy_on_magnitude_mask"] < 1 and overlap < 1  # the masks differ


def test_scaling_keeps_the_subspaces_and_doubles_the_spectral_norm(base_w):
    row, _ = layer_delta(base_w, 2 * base_w, filter_rank=3, lora_rank=2)
    assert row["rel_delta_fro"] == pytest.approx(1.0, rel=1e-5)
    assert row["spectral_norm_change"] == pytest.approx(1.0, rel=1e-5)
    assert row["left_angle_max_deg"] < 0.1 and row["right_angle_max_deg"] < 0.1
    assert row["left_cos2_mean"] == pytest.approx(1.0, abs=1e-5)


def test_swapping_the_top_directions_rotates_by_ninety_degrees():
    # W = diag(3, 2, 1, ...) ; W' swaps which coordinate holds the top value: top-1 subspaces
    # e1 and e2 are orthogonal.
    w = torch.diag(torch.tensor([3.0, 2.0, 1.0, 0.5]))
    tuned = torch.diag(torch.tensor([2.0, 3.0, 1.0, 0.5]))
    row, _ = layer_delta(w, tuned, filter_rank=1, lora_rank=1)
    assert row["left_angle_max_deg"] == pytest.approx(90.0, abs=1e-3)
    assert row["left_cos2_mean"] == pytest.approx(0.0, abs=1e-6)
    assert row["spectral_norm_change"] == pytest.approx(0.0, abs=1e-6)


def test_shapes_must_match(base_w):
    with pytest.raises(LiftError, match="shapes differ"):
        layer_delta(base_w, base_w[:, :-1], filter_rank=2, lora_rank=2)


@pytest.fixture(scope="module")
def tuned_pair(tiny_llama_dir, tmp_path_factory):
    """The tiny Llama and a copy whose layer-0 q_proj alone got a rank-1 change, saved."""
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    tuned = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    weight = tuned.model.layers[0].self_attn.q_proj.weight
    with torch.no_grad():
        weight += 0.1 * torch.ones(weight.shape[0], 1) @ torch.linspace(-1, 1, weight.shape[1])[None]
    path = tmp_path_factory.mktemp("tuned")
    tuned.save_pretrained(path)
    return base, tuned, path


def test_delta_table_has_a_row_per_block_linear_and_finds_the_changed_one(tuned_pair):
    base, tuned, _ = tuned_pair
    result = delta_table(base, tuned, filter_rank=2, lora_rank=2)
    table = result.table.set_index("layer")
    assert list(result.table.columns) == DELTA_COLUMNS and len(table) == 14  # 2 blocks x 7
    changed = table.loc["model.layers.0.self_attn.q_proj"]
    assert changed["rel_delta_fro"] > 0 and changed["delta_effective_rank"] == pytest.approx(1, abs=1e-2)
    assert (table.drop(index="model.layers.0.self_attn.q_proj")["rel_delta_fro"] == 0).all()
    assert set(result.spectra) == set(table.index)


def test_expert_matrices_are_compared_one_by_one():
    from transformers import MixtralConfig, MixtralForCausalLM

    config = MixtralConfig(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, num_local_experts=2,
                           num_experts_per_tok=1, max_position_embeddings=32)
    base = MixtralForCausalLM(config)
    tuned = MixtralForCausalLM(config)
    tuned.load_state_dict(base.state_dict())
    expert = next(l for l in list_linear_layers(tuned) if l.expert == 1)
    with torch.no_grad():
        dict(tuned.named_parameters())[expert.name.split("[")[0]][1] += 0.01
    table = delta_table(base, tuned, filter_rank=1, lora_rank=1).table.set_index("layer")
    assert expert.name in table.index and (table["rel_delta_fro"] > 0).sum() == 1
    assert table.loc[expert.name, "delta_effective_rank"] == pytest.approx(1, abs=1e-3)


def _run_folder(path, base, tuned_dir, method="lift"):
    from transformers import AutoModelForCausalLM

    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"format": "lift-run/1", "model": str(base),
                                                  "method": method, "filter_rank": 2, "lora_rank": 3}))
    (path / "metrics.jsonl").write_text('{"step": 0}\n')
    if tuned_dir is not None:
        AutoModelForCausalLM.from_pretrained(tuned_dir).save_pretrained(path / "model")
    return path


def test_run_folders_resolve_to_base_and_saved_model(tmp_path, tiny_llama_dir, tuned_pair):
    run = _run_folder(tmp_path / "cmp" / "lift", tiny_llama_dir, tuned_pair[2])
    _run_folder(tmp_path / "cmp" / "lora", tiny_llama_dir, None)  # saved nothing
    pair = run_pair(run)
    assert (pair.base, pair.method, pair.filter_rank, pair.lora_rank) == (str(tiny_llama_dir), "lift", 2, 3)
    assert run_pair(run, lora_rank=5).lora_rank == 5
    assert expand_run_dirs([tmp_path / "cmp"]) == [run]  # a comparison folder: runs with a model
    with pytest.raises(LiftError, match="--save"):
        run_pair(tmp_path / "cmp" / "lora")
    with pytest.raises(LiftError, match="not a run folder"):
        run_pair(tmp_path)


def test_diff_cli_end_to_end(tmp_path, tiny_llama_dir, tuned_pair, capsys):
    for method in ("lift", "full"):
        _run_folder(tmp_path / "cmp" / method, tiny_llama_dir, tuned_pair[2], method)
    out = tmp_path / "delta.csv"
    assert main(["diff", "--runs", str(tmp_path / "cmp"), "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["run", "method", *DELTA_COLUMNS] and len(table) == 28
    assert set(table["method"]) == {"lift", "full"} and (table["lora_rank"] == 3).all()
    assert "table written to" in capsys.readouterr().out
    assert main(["diff", "--base", str(tiny_llama_dir), "--tuned", str(tuned_pair[2])]) == 0


@pytest.mark.parametrize("argv, message", [
    (["--tuned", "x"], "--tuned needs --base"),
    (["--run", "{tmp}"], "not a run folder"),
    (["--runs", "{tmp}/nowhere"], "is not a folder"),
    (["--run", "{tmp}", "--base", "builtin"], "--base goes with --tuned"),
])
def test_diff_cli_user_errors_are_one_line(tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["diff", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_generations_of_two_models_side_by_side():
    from lift_core.models.loading import load_model, load_tokenizer

    model, tok = load_model("builtin", kind="causal"), load_tokenizer("builtin")
    prompts = run_prompts({}, 2)
    assert [len(v) for v in prompts.values()] == [2, 2]
    table = before_after(model, model, tok, prompts)
    assert list(table["task"]) == ["target", "target", "source", "source"]
    assert (table["base"] == table["tuned"]).all() and table["base"].str.len().gt(0).all()
    assert table.loc[table["task"] == "source", "base_correct"].any()  # the base knows its source
    with pytest.raises(LiftError, match="1..50"):
        run_prompts({}, 0)


def test_diff_cli_prints_before_after_generations(tmp_path, capsys):
    from lift_core.models.loading import load_model, load_tokenizer

    tuned = tmp_path / "tuned"
    load_model("builtin", kind="causal").save_pretrained(tuned)  # unchanged: same answers
    load_tokenizer("builtin").save_pretrained(tuned)
    out = tmp_path / "gen.csv"
    assert main(["diff", "--base", "builtin", "--tuned", str(tuned), "--generations", "1",
                 "--generations-out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "base -> tuned" in printed and "[target]" in printed and "[source]" in printed
    table = pd.read_csv(out)
    assert list(table["task"]) == ["target", "source"] and (table["base"] == table["tuned"]).all()


def test_spread_pick_spreads():
    assert spread_pick(list(range(150)), 3) == [0, 50, 100]
    assert spread_pick([1, 2], 5) == [1, 2]


def _long_table():
    rows = []
    for run, method, rank in (("lift-s0", "lift", 30.0), ("lora-s0", "lora", 3.5)):
        for i, role in enumerate(("q", "k", "v")):
            rows.append({"run": run, "method": method, "layer": f"model.layers.0.{role}", "block": 0,
                         "role": role, "rel_delta_fro": 0.1 * (i + 1), "delta_effective_rank": rank,
                         "left_angle_max_deg": 10.0 * i, "energy_on_lift_mask": 0.9,
                         "energy_on_magnitude_mask": 0.3, "mask_share": 0.06, "lora_rank": 4})
    return pd.DataFrame(rows)


def test_per_layer_figure_has_a_line_per_run_in_the_methods_colours():
    fig = figs.per_layer_figure(_long_table(), "delta_effective_rank", lora_rank=4)
    assert [t.name for t in fig.data] == ["LIFT · lift-s0", "LoRA · lora-s0", "LoRA rank 4"]
    assert list(fig.layout.xaxis.ticktext) == ["0.q", "0.k", "0.v"]  # one block: every layer named
    assert list(fig.data[0].text) == ["0.q", "0.k", "0.v"]  # the hover names the layer
    assert fig.data[0].line.color != fig.data[1].line.color and fig.layout.yaxis.type == "log"
    assert list(fig.data[2].y) == [4, 4]  # in data units, also on the log axis
    assert list(fig.layout.yaxis.tickvals) == [5, 10, 20]  # 1-2-5 ticks within 3.5..30, in full


def test_layers_of_several_blocks_are_ticked_by_block():
    table = pd.concat([_long_table(), _long_table().assign(block=1)], ignore_index=True)
    table["layer"] = [f"model.layers.{b}.{r}" for b, r in zip(table["block"], table["role"])]
    fig = figs.per_layer_figure(table, "rel_delta_fro")
    assert list(fig.layout.xaxis.ticktext) == ["block 0", "block 1"]
    assert list(fig.layout.xaxis.tickvals) == [0, 3]


def test_mask_energy_and_spectrum_figures():
    fig = figs.mask_energy_figure(_long_table())
    assert len(fig.data) == 3 and list(fig.data[0].y) == [0.9, 0.9]
    assert list(fig.data[2].y) == [0.06, 0.06] and "6.0%" in fig.data[2].name
    spectra = {"lift-s0": np.linspace(1, 0.1, 20), "lora-s0": np.array([1.0, 0.5, 1e-9, 0.0])}
    fig = figs.delta_spectrum_figure(spectra, {"lift-s0": "lift", "lora-s0": "lora"}, lora_rank=2)
    assert len(fig.data) == 3 and len(fig.data[1].y) == 2  # round-off below 1e-6 σ₁ dropped
    assert list(fig.data[2].x) == [2, 2] and fig.data[2].name == "LoRA rank 2"
    assert len(figs.delta_spectrum_figure({}, {}).data) == 0


def test_method_summary_is_one_row_per_run():
    summary = method_summary(_long_table().assign(
        max_abs_delta=1.0, delta_stable_rank=1.0, spectral_norm_change=0.0))
    assert list(summary["run"]) == ["lift-s0", "lora-s0"]
    assert summary.loc[0, "rel_delta_fro"] == pytest.approx(0.2)
