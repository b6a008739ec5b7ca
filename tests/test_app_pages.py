"""AppTests: every explorer page runs through app.py, reacts to the sidebar, and survives bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT = 120  # seconds per script run: generous, the machine is shared


@pytest.fixture
def app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    return at


def _open(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def _charts(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


def _pick_layer(at: AppTest, block: int, role: str) -> None:
    at.selectbox(key="_w_block").set_value(block).run()
    layer = next(o for o in at.selectbox(key="_w_layer").options if o.startswith(f"{role} ·"))
    at.selectbox(key="_w_layer").select_index(at.selectbox(key="_w_layer").options.index(layer)).run()
    assert not at.exception, at.exception


def test_home_lists_the_default_models_layers(app):
    assert app.selectbox(key="_w_model").value == "minilm"
    assert app.title[0].value == "LIFT Studio"
    assert len(app.dataframe) == 1
    assert any("not fine-tuned" in i.value for i in app.sidebar.info)  # MiniLM is an encoder


def test_spectrum_page_follows_layer_rank_and_mode(app):
    at = _open(app, "spectrum")
    assert _charts(at) == 2 and len(at.metric) == 4
    _pick_layer(at, 2, "k")
    at.slider(key="_w_filter_rank").set_value(32).run()
    at.radio(key="_w_svd").set_value("randomized").run()
    assert not at.exception
    assert _charts(at) == 2
    assert at.metric[3].label == "Energy kept at r = 32"
    assert "block 2 · k" in at.caption[0].value


def test_principal_weights_page_pools_zooms_and_switches_budget(app):
    at = _open(app, "principal_weights")
    assert _charts(at) == 6
    assert any("pooled in 3x3 blocks" in c.value for c in at.caption)
    _pick_layer(at, 1, "up")  # 1536 x 384: pooled harder
    assert any("pooling factor 10" in c.value for c in at.caption)
    at.toggle(key="pw_zoom").set_value(True).run()
    at.slider(key="pw_row").set_value(700).run()
    assert any("rows 700–827" in c.value for c in at.caption)
    at.radio(key="_w_budget_mode").set_value("density %").run()
    at.slider(key="_w_density_pct").set_value(10.0).run()
    assert not at.exception
    assert _charts(at) == 6
    assert any("(10.00%)" in c.value for c in at.sidebar.caption)


def test_overlap_page_sweeps_and_whole_model(app):
    at = _open(app, "overlap")
    assert _charts(at) == 3
    at.slider(key="_w_lora_rank").set_value(16).run()
    assert _charts(at) == 3
    at.button[0].click().run()  # "Analyze every layer"
    assert not at.exception, at.exception
    assert _charts(at) == 4
    assert len(at.get("download_button")) == 1
    table = at.dataframe[0].value
    assert len(table) == 36 and table["jaccard_lift_vs_magnitude"].between(0, 1).all()


def test_choices_survive_a_page_switch(app):
    at = _open(app, "spectrum")
    _pick_layer(at, 3, "v")
    at.slider(key="_w_filter_rank").set_value(20).run()
    at = _open(at, "principal_weights")
    assert at.slider(key="_w_filter_rank").value == 20
    assert at.selectbox(key="_w_block").value == 3
    assert at.selectbox(key="_w_layer").value.endswith("layer.3.attention.self.value")


@pytest.mark.parametrize("bad", ["/no/such/model-dir", "no/such-model"])
def test_bad_model_input_shows_an_error_in_place(app, bad, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = _open(app, "spectrum")
    at.selectbox(key="_w_model").set_value("other…").run()
    at.text_input(key="_w_model_text").input(bad).run()
    assert not at.exception, at.exception
    assert len(at.sidebar.error) == 1
    assert _charts(at) == 0
    at.selectbox(key="_w_model").set_value("minilm").run()  # still usable afterwards
    assert not at.exception and _charts(at) == 2


def test_builtin_model_loads_or_says_why(app):
    at = _open(app, "spectrum")
    at.selectbox(key="_w_model").set_value("builtin").run()
    assert not at.exception, at.exception
    if at.sidebar.error:  # the built-in weights may be missing on a fresh checkout
        assert "builtin" in at.sidebar.error[0].value
    else:
        assert _charts(at) == 2
        assert not any("not fine-tuned" in i.value for i in at.sidebar.info)


def test_a_model_too_large_for_memory_is_refused_from_its_config(monkeypatch):
    import lift_core.models.loading

    from lift_ui import caches as state

    monkeypatch.setattr(lift_core.models.loading, "available_memory_bytes", lambda: 1 << 20)
    state.model_facts.clear()  # the size check runs with the config, which is cached
    try:
        at = AppTest.from_file(APP, default_timeout=TIMEOUT)
        at.switch_page("pages/spectrum.py").run()
        assert not at.exception, at.exception
        assert "memory is available" in at.sidebar.error[0].value
        assert _charts(at) == 0
    finally:
        state.model_facts.clear()


def _typed_array(obj: dict):
    """Plotly's JSON keeps numpy arrays as base64 typed arrays; decode them for the asserts."""
    import base64

    import numpy as np

    if set(obj) >= {"dtype", "bdata"}:
        values = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=obj["dtype"])
        shape = obj.get("shape")
        return values.reshape([int(n) for n in str(shape).split(",")] if shape else -1)
    return obj


def _figure(at: AppTest, index: int):
    """The plotly Figure of the index-th chart (columns are read left, then right)."""
    import json

    import plotly.graph_objects as go

    return go.Figure(json.loads(at.get("plotly_chart")[index].proto.spec, object_hook=_typed_array))


def test_principal_weights_pooled_map_and_metrics_say_what_they_show(app):
    at = _open(app, "principal_weights")
    _pick_layer(at, 0, "up")  # 1536x384, LIFT vs magnitude Jaccard ~0.1
    jaccard = float(next(m.value for m in at.metric if m.label.startswith("Jaccard")))
    assert jaccard < 0.2
    caption = next(c.value for c in at.caption if "most common kind" in c.value)
    both = int(re.search(r"(\d+)% mostly both", caption).group(1))
    assert both < 20, caption  # the picture agrees with the number, not "almost all both"
    assert _figure(at, 4).data[0].colorbar.ticktext[3] == "mostly both"
    # Columns are read left then right: |W|, LIFT mask, |W_r|, magnitude mask.
    w, lift, w_r, mag = (_figure(at, i).data[0] for i in range(4))
    assert w.zmax == w_r.zmax and w.zmin == w_r.zmin == 0  # one scale for each pair
    assert lift.zmax == mag.zmax
    assert all(m.label.endswith("whole matrix") for m in at.metric)
    at.toggle(key="pw_zoom").set_value(True).run()
    labels = [m.label for m in at.metric]
    assert sum(l.endswith("whole matrix") for l in labels) == 3 and sum(l.endswith("this window") for l in labels) == 3


def test_overlap_budget_marker_sits_at_the_budget_in_use(app):
    at = _open(app, "overlap")
    at.radio(key="_w_budget_mode").set_value("density %").run()
    at.slider(key="_w_density_pct").set_value(5.0).run()
    assert not at.exception, at.exception
    budget = {t.name: t for t in _figure(at, 1).data}
    assert list(budget["current"].x) == pytest.approx([5.0, 5.0], abs=1e-3)  # k / (m·n), not the LoRA rank
    pairwise = _figure(at, 2).data[0].z
    star = next(t for name, t in budget.items() if name.startswith("now:"))
    assert list(star.x) == pytest.approx([5.0], abs=1e-3) and star.y[0] == pytest.approx(pairwise[0][1])
    assert any(name.startswith("budget clipped") for name in budget)  # the clipped budgets are marked
    assert any("Analyze every layer" == b.label for b in at.button)


def test_overlap_intro_names_the_chosen_model_not_minilm(app):
    at = _open(app, "overlap")
    at.selectbox(key="_w_model").set_value("builtin").run()
    assert not at.exception, at.exception
    if at.sidebar.error:  # the built-in weights may be missing on a fresh checkout
        pytest.skip(at.sidebar.error[0].value)
    intro = at.markdown[0].value
    assert "MiniLM" not in intro and "of builtin" in intro


def test_home_reports_what_the_sample_runs_measured(app):
    from lift_ui.train_form import sample_records

    if not sample_records():
        pytest.skip("no sample runs in this checkout")
    text = " ".join(m.value for m in app.markdown)
    assert "What the shipped sample runs measured" in text
    assert re.search(r"LIFT (lost|gained) \d+\.\d points of source accuracy", text)
