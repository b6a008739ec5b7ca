"""AppTests of the Runs page: records found, picked, overlaid, summarized and exported."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.fake_runs import write_interrupted_run, write_run, write_sample_set

APP = str(Path(__file__).resolve().parents[1] / "app.py")
REPO_SAMPLES = Path(__file__).resolve().parents[1] / "sample_runs"


def _open(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def test_runs_page_overlays_picked_runs_and_exports_csv(tmp_path, monkeypatch):
    samples = write_sample_set(tmp_path / "samples", seeds=(0, 1))
    runs = tmp_path / "runs"
    write_run(runs / "lift-20260101-000000", "lift", 5, finished=False)  # still running
    monkeypatch.setenv("LIFT_SAMPLE_RUNS", str(samples))
    monkeypatch.setenv("LIFT_RUNS_DIR", str(runs))
    at = _open("runs")
    picker = at.multiselect(key="runs_picked")
    assert len(picker.options) == 11 and "runs/lift-20260101-000000" in picker.options
    assert len(picker.value) == 10  # the sample runs by default
    assert len(at.get("plotly_chart")) == 3 and len(at.dataframe) == 1
    csv = at.get("download_button")[0]
    assert csv.proto.label.startswith("Download")

    picker.set_value(["sample_runs/lift-seed0", "runs/lift-20260101-000000"]).run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert dict(zip(table["label"], table["status"])) == {
        "sample_runs/lift-seed0": "completed", "runs/lift-20260101-000000": "running"}

    at.multiselect(key="runs_picked").set_value([]).run()
    assert any("Pick one or more" in i.value for i in at.info)


def test_one_bad_run_never_breaks_the_runs_page(tmp_path, monkeypatch):
    samples = write_sample_set(tmp_path / "samples", seeds=(0,))
    runs = tmp_path / "runs"
    write_run(runs / "bad-config", "lift", 1)
    (runs / "bad-config" / "config.json").write_text("[1, 2, 3]")
    write_run(runs / "bad-summary", "lift", 2)
    (runs / "bad-summary" / "summary.json").write_text("[1, 2, 3]")
    write_interrupted_run(runs / "killed", "lora", 3)
    monkeypatch.setenv("LIFT_SAMPLE_RUNS", str(samples))
    monkeypatch.setenv("LIFT_RUNS_DIR", str(runs))
    at = _open("runs")
    warning = " ".join(w.value for w in at.warning)
    assert "2 run record(s) cannot be read" in warning and "holds a JSON list, not an object" in warning
    picker = at.multiselect(key="runs_picked")
    assert {"runs/bad-config", "runs/bad-summary", "runs/killed"} <= set(picker.options)
    picker.set_value(["sample_runs/lora-seed0", "runs/killed", "runs/bad-config"]).run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert dict(zip(table["label"], table["status"])) == {
        "sample_runs/lora-seed0": "completed", "runs/killed": "interrupted", "runs/bad-config": "unreadable"}
    killed = table[table["label"] == "runs/killed"].iloc[0]
    assert killed["steps_done"] == 30 and killed["target_acc_before"] is not None  # from step 0
    assert "ended without writing a summary" in killed["note"]
    assert any("(2 of the picked runs)" in c.value for c in at.caption)  # the trade-off leaves them out


def test_runs_page_without_records_says_how_to_make_some(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFT_SAMPLE_RUNS", str(tmp_path / "none"))
    monkeypatch.setenv("LIFT_RUNS_DIR", str(tmp_path / "runs"))
    at = _open("runs")
    assert any("No run records yet" in i.value for i in at.info)


@pytest.mark.skipif(not any(REPO_SAMPLES.glob("*/summary.json")), reason="sample_runs/ not generated yet")
def test_runs_page_renders_the_shipped_sample_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("LIFT_SAMPLE_RUNS", raising=False)
    monkeypatch.setenv("LIFT_RUNS_DIR", str(tmp_path / "runs"))
    at = _open("runs")
    assert at.multiselect(key="runs_picked").value
    assert len(at.get("plotly_chart")) == 3


def test_runs_page_names_filters_diffs_deletes_and_restores(tmp_path, monkeypatch):
    samples = write_sample_set(tmp_path / "samples", seeds=(0,))
    runs = tmp_path / "runs"
    write_run(runs / "lift-a", "lift", 7)
    monkeypatch.setenv("LIFT_SAMPLE_RUNS", str(samples))
    monkeypatch.setenv("LIFT_RUNS_DIR", str(runs))
    at = _open("runs")
    table = at.dataframe[0].value
    assert {"seed", "lr"} <= set(table.columns) and "tags" not in table  # differing settings; no empty columns
    diff = at.table[0].value  # the config diff of the picked runs, long side down
    assert "method" in [*diff.index, *diff.columns]
    at.text_input(key="runs_filter").set_value("magnitude").run()
    assert at.multiselect(key="runs_picked").options == ["sample_runs/magnitude-seed0"]
    at.text_input(key="runs_filter").set_value("").run()

    at.selectbox(key="runs_manage_pick").set_value("runs/lift-a").run()
    boxes = {w.label: w for w in at.text_input}
    boxes["Name"].set_value("my first run")
    boxes["Tags (comma-separated)"].set_value("demo, lr")
    at.button[[b.label for b in at.button].index("Save")].click().run()
    assert not at.exception, at.exception
    at.text_input(key="runs_filter").set_value("demo").run()
    assert at.multiselect(key="runs_picked").options == ["my first run (runs/lift-a)"]  # named
    at.multiselect(key="runs_picked").set_value(["runs/lift-a"]).run()
    assert at.dataframe[0].value["tags"].tolist() == ["demo, lr"]
    at.text_input(key="runs_filter").set_value("").run()

    at.button(key="runs_trash").click().run()
    assert not at.exception, at.exception
    assert not any("runs/lift-a" in o for o in at.multiselect(key="runs_picked").options)
    restore = [b for b in at.button if b.key and b.key.startswith("runs_restore_")]
    assert len(restore) == 1
    restore[0].click().run()
    assert "my first run (runs/lift-a)" in at.multiselect(key="runs_picked").options
    assert (runs / "lift-a" / "notes.json").is_file()


def test_runs_page_shows_the_answers_kept_at_evaluations(tmp_path, monkeypatch):
    import json

    run = write_run(tmp_path / "runs" / "lift-gens", "lift", 0, steps=4, eval_every=2)
    lines = [{"step": step, "generations": [
        {"task": t, "prompt": f"{t} prompt", "answer": str(step), "gold": "4", "correct": step == 4}
        for t in ("target", "source")]} for step in (0, 2, 4)]
    (run / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 6, "gen')
    monkeypatch.setenv("LIFT_SAMPLE_RUNS", str(tmp_path / "none"))
    monkeypatch.setenv("LIFT_RUNS_DIR", str(tmp_path / "runs"))
    at = _open("runs")
    answers = [d.value for d in at.dataframe if "gold" in d.value.columns]
    assert len(answers) == 1
    assert answers[0]["step"].tolist() == [0, 4, 0, 4] and answers[0]["correct"].tolist() == [False, True] * 2
