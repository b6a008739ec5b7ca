"""AppTests of the Workshop page: sample runs render with computed explanations; the demo launches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lift_core.runs.jobs import JobManager
from tests.fake_runs import write_sample_set

APP = str(Path(__file__).resolve().parents[1] / "app.py")
REPO_SAMPLES = Path(__file__).resolve().parents[1] / "sample_runs"


def _open() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/workshop.py").run()
    assert not at.exception, at.exception
    return at


def _text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_workshop_explains_the_recorded_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFT_SAMPLE_RUNS", str(write_sample_set(tmp_path / "samples")))
    monkeypatch.setenv("LIFT_RUNS_DIR", str(tmp_path / "runs"))
    at = _open()
    assert len(at.get("plotly_chart")) == 4  # accuracy, trade-off, memory, churn
    text = _text(at)
    # Numbers computed from these records (tests/fake_runs.py: LIFT forgets least of the three).
    assert "LIFT lost" in text and "less than full FT" in text and "less than LoRA" in text
    assert "above magnitude" in text and "above random" in text
    assert "39,424 numbers" in text and "27 GB vs 1.3 GB" in text
    assert "python -m lift_core finetune --method lift" in at.code[0].value
    assert "--eval-limit" in at.code[0].value


def test_workshop_without_sample_runs_still_offers_the_demo(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFT_SAMPLE_RUNS", str(tmp_path / "none"))
    monkeypatch.setenv("LIFT_RUNS_DIR", str(tmp_path / "runs"))
    at = _open()
    assert any("No completed sample runs" in i.value for i in at.info)
    assert at.button(key="ws_demo")


@pytest.mark.skipif(not any(REPO_SAMPLES.glob("*/summary.json")), reason="sample_runs/ not generated yet")
def test_workshop_renders_the_shipped_sample_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("LIFT_SAMPLE_RUNS", raising=False)
    monkeypatch.setenv("LIFT_RUNS_DIR", str(tmp_path / "runs"))
    at = _open()
    assert len(at.get("plotly_chart")) == 4


def test_demo_button_launches_a_job_and_stop_ends_it(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setenv("LIFT_SAMPLE_RUNS", str(tmp_path / "none"))
    monkeypatch.setenv("LIFT_RUNS_DIR", str(runs))
    at = _open()
    at.button(key="ws_demo").click().run()
    assert not at.exception, at.exception
    job = JobManager(runs).active()
    try:
        assert job is not None and job.extra["kind"] == "demo"
        assert any(s.value.startswith("Running: live demo") for s in at.subheader)
        at.button(key="ws_live_stop").click().run()
        assert not at.exception, at.exception
        assert JobManager(runs).active() is None
        summary = Path(job.run_dirs[0]) / "summary.json"
        if summary.exists():  # stopped after set-up: the record says so
            assert json.loads(summary.read_text())["status"] == "stopped"
    finally:
        JobManager(runs).stop(timeout=20)
