"""AppTests of the Workshop page: sample runs render with computed explanations; the demo launches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lift_core.runs.jobs import JobManager
from tests.fake_runs import write_sample_set
from tests.test_claims import write_sample_sweep

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


def test_workshop_tests_the_claims_on_the_sample_sweep(tmp_path, monkeypatch):
    samples = write_sample_sweep(write_sample_set(tmp_path / "samples"))
    monkeypatch.setenv("LIFT_SAMPLE_RUNS", str(samples))
    monkeypatch.setenv("LIFT_RUNS_DIR", str(tmp_path / "runs"))
    at = _open()
    # budget curve, frontier, forgetting at target, noise curve; then the four of the runs
    assert len(at.get("plotly_chart")) == 8
    assert [s.value for s in at.subheader][:3] == [
        "LIFT > magnitude > random at equal budget (final target accuracy): holds",
        "LIFT forgets less than full fine-tuning and LoRA at matched target accuracy: does not hold",
        "principal weights are the most noise-sensitive (source loss after noise): mixed"]
    text = _text(at)
    assert "holds at every budget" in text and "LIFT forgets more than full FT" in text
    captions = " ".join(c.value for c in at.caption)
    assert "15 completed runs" in captions and "15 recorded runs" in captions
    # The sweep's runs are read as a sweep, not as more runs of the five-method comparison.
    assert "LIFT lost" in text and "39,424 numbers" in text


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
    # The five-method runs' four charts, and four more when the sample sweep is there.
    sweep = (REPO_SAMPLES / "sweep" / "sweep.json").is_file()
    assert len(at.get("plotly_chart")) == (8 if sweep else 4)


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
