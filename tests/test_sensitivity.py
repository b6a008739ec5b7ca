"""The noise-sensitivity test: exact restore, zero noise, the selections, both measures, CLI, page."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from lift_core.analysis.sensitivity import (
    SensitivityConfig,
    format_summary,
    most_damaging,
    noise_sensitivity,
    selected_entries,
    summarize,
)
from lift_core.cli.main import main
from lift_core.errors import LiftError
from lift_core.lowrank.scoring import PrincipalScorer
from lift_core.models.loading import load_model, load_tokenizer

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture(scope="module")
def llama(char_llama):
    return load_model(char_llama), load_tokenizer(char_llama)


def test_weights_come_back_bit_exact_and_zero_noise_changes_nothing(llama):
    model, tokenizer = llama
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    config = SensitivityConfig(scales=(0, 1), draws=2, budget_rank=2, filter_rank=2, eval_limit=3)
    seen = []
    result = noise_sensitivity(model, tokenizer, config, progress=lambda *step: seen.append(step))
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), before[name]), name
    table = result.table
    assert len(table) == 4 * 2 * 2 and set(result.metrics) >= {"source_loss", "target_acc"}
    clean = table[table.scale == 0]
    for metric in result.metrics:
        assert (clean[metric] == result.baseline[metric]).all(), metric
    noisy = table[table.scale == 1]
    assert (noisy.spectral_norm_change > 0).all()
    assert (noisy.source_loss != result.baseline["source_loss"]).all()
    assert seen[-1][0] == seen[-1][1] == 2 * 7 + 1 + 16  # 14 block linears, clean run, 16 draws
    summary = result.summary()
    assert len(summary) == 8 and (summary[summary.scale == 0].source_loss_std == 0).all()
    assert "±" in format_summary(summary, result.metrics).iloc[0]["source_loss"]
    assert set(most_damaging(summary, "source_loss").index) == {0.0, 1.0}


def test_selections_have_k_entries_and_lift_smallest_is_the_other_end():
    torch.manual_seed(1)
    weight = torch.randn(24, 16)
    scorer = PrincipalScorer(weight)
    config = SensitivityConfig(draws=2, filter_rank=3)
    picks = {name: set(index.tolist()) for name, index in selected_entries(scorer, 40, config).items()}
    assert set(picks) == {"lift", "magnitude", "random#0", "random#1", "lift_smallest"}
    assert all(len(p) == 40 for p in picks.values())
    assert not picks["lift"] & picks["lift_smallest"]
    scores = scorer.scores(3).reshape(-1)
    assert min(scores[list(picks["lift"])]) >= max(scores[list(picks["lift_smallest"])])
    assert picks["magnitude"] == set(weight.abs().reshape(-1).topk(40).indices.tolist())
    assert picks["random#0"] != picks["random#1"]  # a fresh random set per draw


def test_encoder_cosine_is_one_without_noise_and_drops_with_it():
    model, tokenizer = load_model("minilm"), load_tokenizer("minilm")
    layer = "encoder.layer.0.intermediate.dense"
    config = SensitivityConfig(selectors=("lift", "lift-smallest"), scales=(0, 4), draws=1, layer=layer)
    result = noise_sensitivity(model, tokenizer, config)
    table = result.table.set_index(["selector", "scale"])
    assert result.metrics == ("cosine", "cosine_min", "spectral_norm_change") and result.layers == [layer]
    assert (result.table[["cosine", "cosine_min"]] <= 1).all().all()
    assert table.loc[("lift", 0.0), "cosine"] == pytest.approx(1, abs=1e-12)
    assert table.loc[("lift", 0.0), "spectral_norm_change"] == 0
    assert table.loc[("lift_smallest", 4.0), "cosine"] < 1


@pytest.mark.parametrize("args, message", [
    (["--selectors", "lift,foo"], "unknown selector 'foo'"),
    (["--scales", "0.5,-1"], "noise scale -1 is out of range"),
    (["--draws", "0"], "draws must be a whole number from 1 to 20"),
    (["--draws", "20", "--scales", "1,2,3,4"], "at most 200 are allowed"),
    (["--scales", "a"], "--scales must be numbers"),
])
def test_cli_refuses_bad_input_in_one_line(args, message, capsys, tmp_path):
    assert main(["sensitivity", *args, "--out", str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "s.csv").exists()


def test_cli_writes_every_draw_and_prints_the_summary(char_llama, capsys, tmp_path):
    out = tmp_path / "sens.csv"
    code = main(["sensitivity", "--model", str(char_llama), "--selectors", "lift,random", "--scales", "0.5",
                 "--draws", "2", "--budget-rank", "1", "--filter-rank", "2", "--eval-limit", "2",
                 "--layer", "model.layers.1.mlp.down_proj", "--no-progress", "--out", str(out)])
    assert code == 0
    table = pd.read_csv(out)
    assert list(table.columns[:3]) == ["selector", "scale", "draw"] and len(table) == 4
    printed = capsys.readouterr().out
    assert "clean model: source_loss" in printed and "±" in printed


def test_cli_unknown_layer_is_one_line(char_llama, capsys, tmp_path):
    code = main(["sensitivity", "--model", str(char_llama), "--layer", "nope", "--scales", "1", "--draws", "1",
                 "--out", str(tmp_path / "s.csv")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == ("error: the model has no linear layer named 'nope' "
                                 "(`python -m lift_core layers` lists them)")


def test_config_refuses_what_it_cannot_do():
    with pytest.raises(LiftError, match="no selectors"):
        SensitivityConfig(selectors=())
    with pytest.raises(LiftError, match="eval limit"):
        SensitivityConfig(eval_limit=0)
    assert SensitivityConfig(selectors=("LIFT-smallest", "lift_smallest")).selectors == ("lift_smallest",)


def test_page_runs_the_test_and_offers_the_csv():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/sensitivity.py").run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 0  # nothing computed before the button
    at.radio(key="sens_scope").set_value("only the sidebar's layer").run()
    at.multiselect(key="sens_selectors").set_value(["lift", "random"]).run()
    at.multiselect(key="sens_scales").set_value([0.5, 2.0]).run()
    at.number_input(key="sens_draws").set_value(1).run()
    at.button(key="sens_run").click().run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 1 and len(at.get("download_button")) == 1
    assert "Most damaging selection" in " ".join(m.value for m in at.markdown)
    at.selectbox(key="sens_metric").set_value("spectral_norm_change").run()
    assert not at.exception and len(at.get("plotly_chart")) == 1
    at.multiselect(key="sens_scales").set_value([]).run()  # no scale: one error line, no crash
    assert any("no noise scales" in e.value for e in at.error)


def test_figure_has_one_line_per_selector_on_a_log_axis_without_scale_zero():
    from lift_ui.figures.sensitivity import sensitivity_figure

    table = pd.DataFrame({"selector": ["lift"] * 4 + ["random"] * 4, "scale": [0, 0.5, 0.5, 2] * 2,
                          "draw": [0, 0, 1, 0] * 2, "source_loss": [1, 2, 4, 8, 1, 1, 3, 5],
                          "spectral_norm_change": [0.0] * 8})
    summary = summarize(table, ("source_loss", "spectral_norm_change"))
    fig = sensitivity_figure(summary, "source_loss", "source loss", clean=1.0, draws=2)
    assert [t.name for t in fig.data] == ["LIFT", "random"]
    assert list(fig.data[0].x) == [0.5, 2] and list(fig.data[0].y) == [3, 8]
    assert fig.data[0].error_y.array[0] == pytest.approx(2 ** 0.5)  # std of 2 and 4
    assert fig.layout.xaxis.type == "log" and list(fig.layout.xaxis.ticktext) == ["0.5σ", "2σ"]
    assert "± %{customdata[0]" in fig.data[0].hovertemplate
