"""AppTests of the What changed page: no saved run, saved runs (model and adapter), two folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from tests.fake_runs import write_run

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture(scope="module")
def tuned_builtin(tmp_path_factory):
    """The built-in model with every block linear nudged, saved with its tokenizer."""
    from lift_core.models.loading import load_model, load_tokenizer

    model = load_model("builtin", kind="causal")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layers." in name and p.dim() == 2:
                p.add_(1e-3 * torch.randn(p.shape, generator=gen))
    path = tmp_path_factory.mktemp("tuned_builtin")
    model.save_pretrained(path)
    load_tokenizer("builtin").save_pretrained(path)
    return path


def _open(monkeypatch, samples: Path, runs: Path) -> AppTest:
    monkeypatch.setenv("LIFT_SAMPLE_RUNS", str(samples))
    monkeypatch.setenv("LIFT_RUNS_DIR", str(runs))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/what_changed.py").run()
    assert not at.exception, at.exception
    return at


def test_without_saved_runs_the_page_says_how_and_offers_two_folders(tmp_path, monkeypatch, tuned_builtin):
    write_run(tmp_path / "samples" / "lift-seed0", "lift", 0)  # a record, but no saved model
    at = _open(monkeypatch, tmp_path / "samples", tmp_path / "runs")
    assert at.radio(key="wc_mode").value == "Two model folders"
    assert any("fine-tuned model" in i.value for i in at.info)
    at.radio(key="wc_mode").set_value("Saved runs").run()
    assert any("--save" in i.value for i in at.info)

    at.radio(key="wc_mode").set_value("Two model folders").run()
    at.text_input(key="wc_tuned").set_value(str(tuned_builtin)).run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 5 and len(at.dataframe) == 1
    assert len(at.dataframe[0].value) == 28  # 4 blocks x 7 linears of the built-in model
    at.text_input(key="wc_tuned").set_value(str(tmp_path / "nowhere")).run()
    assert not at.exception and at.error  # a bad folder: one line in place


def test_saved_runs_show_table_charts_and_generations(tmp_path, monkeypatch, tuned_builtin):
    import shutil

    runs = tmp_path / "runs"
    run = write_run(runs / "lift-1", "lift", 0)
    shutil.copytree(tuned_builtin, run / "model")
    at = _open(monkeypatch, tmp_path / "samples", runs)
    assert at.radio(key="wc_mode").value == "Saved runs"
    assert at.multiselect(key="wc_runs").value == ["runs/lift-1"]
    table = at.dataframe[0].value
    assert set(table["run"]) == {"runs/lift-1"} and (table["rel_delta_fro"] > 0).all()
    assert len(at.get("plotly_chart")) == 5
    at.number_input(key="wc_gen_n").set_value(1).run()
    at.button(key="wc_gen").click().run()
    assert not at.exception, at.exception
    answers = at.dataframe[1].value
    assert list(answers["task"]) == ["target", "source"] and answers["tuned"].str.len().gt(0).all()


def test_a_lora_run_with_only_an_adapter_is_merged_into_its_base(tmp_path, monkeypatch):
    from peft import LoraConfig, get_peft_model

    from lift_core.models.loading import load_model

    runs = tmp_path / "runs"
    run = write_run(runs / "lora-1", "lora", 0)
    model = get_peft_model(load_model("builtin", kind="causal"),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(run / "adapter")
    at = _open(monkeypatch, tmp_path / "samples", runs)
    table = at.dataframe[0].value.set_index("layer")
    changed = table[table["rel_delta_fro"] > 0]
    assert set(changed["role"]) == {"q", "v"}
    assert (changed["delta_effective_rank"] <= 4 + 1e-6).all()  # a rank-4 LoRA's ΔW
