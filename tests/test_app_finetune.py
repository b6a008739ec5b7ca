"""AppTest of the Fine-tune page: a real short run on the built-in model, launched, watched, stopped.

The page starts `python -m lift_core finetune` through the JobManager (LIFT_RUNS_DIR points at
a temp folder), the test polls until the record has training steps, presses Stop and checks
the record says "stopped". Also: the LR follows the method until typed, a second launch is
refused while one runs, a reload finds the running job again, an encoder-only model is
refused with the core's message.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lift_core.runs.jobs import JobManager
from lift_core.train.methods import default_lr

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT = 120


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "runs"
    monkeypatch.setenv("LIFT_RUNS_DIR", str(root))
    monkeypatch.setenv("LIFT_SAMPLE_RUNS", str(tmp_path / "no_samples"))
    yield root
    JobManager(root).stop(timeout=20)  # never leave a job behind


def _page(runs: Path) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/finetune.py").run()
    assert not at.exception, at.exception
    return at


def _wait(predicate, timeout=90.0, every=0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def _training_steps(run_dir: Path) -> int:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        return 0
    return sum(1 for line in metrics.read_text().splitlines() if '"loss"' in line)


def test_learning_rate_follows_the_method_until_typed(runs):
    at = _page(runs)
    lr = lambda: at.text_input(key="_w_ft_lr").value
    assert lr() == f"{default_lr('lift'):g}"
    at.selectbox(key="_w_ft_method").set_value("full").run()
    full = f"{default_lr('full'):g}"
    assert lr() == full and f"--method full --lr {full}" in at.code[0].value
    at.text_input(key="_w_ft_lr").set_value("3e-4").run()
    at.selectbox(key="_w_ft_method").set_value("lora").run()
    assert lr() == "3e-4" and "--lr 0.0003" in at.code[0].value  # typed: kept
    at.text_input(key="_w_ft_lr").set_value("").run()  # cleared: back to the default
    assert lr() == f"{default_lr('lora'):g}"


@pytest.mark.parametrize("typed", ["inf", "nan", "-1e-3", "0", "fast"])
def test_a_learning_rate_no_run_can_use_is_refused_in_the_form(runs, typed):
    at = _page(runs)
    at.text_input(key="_w_ft_lr").set_value(typed).run()
    assert not at.exception, at.exception
    assert any(f"learning rate {typed!r} must be a finite number > 0" in e.value for e in at.error)
    assert not [b for b in at.button if b.key == "ft_run"]  # nothing to launch
    assert JobManager(runs).last() is None


# A job that writes the start of a real run record, then dies by SIGKILL (as from the OOM killer).
_KILLED_JOB = """
import os, signal, sys
from lift_core.runs.records import RunWriter
writer = RunWriter(sys.argv[1])
writer.write_config({"method": "lift", "steps": 200, "update_interval": 100})
writer.append_metrics({"step": 0, "target_acc": 0.1, "source_acc": 0.9, "elapsed": 1.0})
writer.append_metrics({"step": 1, "loss": 2.0, "lr": 1e-3, "elapsed": 1.5})
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_job_shows_as_interrupted_not_running(runs):
    run = runs / "lift-killed"
    job = JobManager(runs, launcher=[sys.executable, "-c", _KILLED_JOB]).start(
        [str(run)], run_dirs=[run], label="lift, 200 steps", extra={"kind": "finetune", "steps": 200})
    assert _wait(lambda: not job.is_alive(), timeout=30)
    at = _page(runs)
    assert any(s.value == "Last job: lift, 200 steps" for s in at.subheader)
    assert any(e.value.startswith("The run was interrupted: process") for e in at.error), [e.value for e in at.error]
    assert any("step 1/200" in p.proto.text for p in at.get("progress"))


def test_encoder_only_model_gets_the_cores_message(runs):
    at = _page(runs)
    at.radio(key="_w_ft_model_kind").set_value("other").run()
    at.text_input(key="_w_ft_model_text").set_value("minilm").run()
    at.button(key="ft_run").click().run()
    assert not at.exception
    assert any("can be explored but not fine-tuned" in e.value for e in at.error)
    assert JobManager(runs).last() is None


def test_run_live_second_launch_reload_and_stop(runs):
    at = _page(runs)
    at.number_input(key="_w_ft_steps").set_value(2000).run()
    at.number_input(key="_w_ft_eval_every").set_value(500).run()
    at.number_input(key="_w_ft_eval_limit").set_value(8).run()
    command = at.code[0].value
    assert command.startswith("python -m lift_core finetune --method lift") and "--steps 2000" in command
    at.button(key="ft_run").click().run()
    assert not at.exception, at.exception
    job = JobManager(runs).active()
    assert job is not None and job.argv[3:] == command.split()[3:]  # the previewed argv, exactly
    run_dir = Path(job.run_dirs[0])
    assert run_dir.parent == runs and run_dir.name.startswith("lift-")

    assert _wait(lambda: _training_steps(run_dir) >= 3), JobManager(runs).last().log_tail()
    at.run()  # the live panel re-reads the record
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) >= 3  # loss, churn, accuracy
    assert any("step" in p.proto.text for p in at.get("progress"))
    assert any(m.label.startswith("Trainable numbers") for m in at.metric)

    # Another session: a second launch is refused with the job manager's message.
    other = _page(runs)
    assert any(s.value.startswith("Running: lift") for s in other.subheader)  # reattached
    other.button(key="ft_run").click().run()
    assert any("already running" in e.value for e in other.error)
    assert not other.exception

    at.button(key="ft_live_stop").click().run()
    assert not at.exception, at.exception
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["steps_done"] >= 3
    assert JobManager(runs).active() is None
    assert any("Stopped on request" in w.value for w in at.warning)


def test_a_job_that_fails_shows_its_log(runs):
    at = _page(runs)
    at.number_input(key="_w_ft_filter_rank").set_value(4000).run()  # > every matrix's rank
    at.button(key="ft_run").click().run()
    assert not at.exception, at.exception
    job = JobManager(runs).last()
    assert job is not None and _wait(lambda: not job.is_alive(), timeout=60)
    at.run()
    assert not at.exception, at.exception
    assert any("failed" in e.value for e in at.error)
    assert any("filter" in c.value.lower() for c in at.code[1:]), [c.value for c in at.code]


def test_compare_all_runs_as_one_job_and_stops_cleanly(runs):
    at = _page(runs)
    at.number_input(key="_w_ft_steps").set_value(2000).run()
    at.number_input(key="_w_ft_eval_every").set_value(1000).run()
    at.number_input(key="_w_ft_eval_limit").set_value(8).run()
    at.multiselect(key="ft_compare_methods").set_value(["lora", "lift"]).run()
    command = at.code[1].value
    assert command.startswith("python -m lift_core compare --methods lora,lift") and "--lr" not in command
    at.button(key="ft_compare").click().run()
    assert not at.exception, at.exception
    job = JobManager(runs).active()
    assert job is not None and job.extra["kind"] == "compare" and job.argv[3:] == command.split()[3:]
    out = Path(job.run_dirs[0]).parent
    assert [Path(d).name for d in job.run_dirs] == ["lora", "lift"]
    assert _wait(lambda: _training_steps(out / "lora") >= 3), JobManager(runs).last().log_tail()
    at.run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 3  # accuracy overlay, loss overlay, trade-off
    at.button(key="ft_live_stop").click().run()
    assert not at.exception, at.exception
    state = json.loads((out / "compare.json").read_text())
    assert [r["status"] for r in state["runs"]] == ["stopped", "not started"]
    assert any("lora: stopped" in p.proto.text for p in at.get("progress"))


def test_the_form_sets_the_config_fields_and_previews_them(runs):
    from dataclasses import fields

    from lift_core.cli.main import build_parser
    from lift_core.cli.finetune import config_from_args
    from lift_core.train.config import FinetuneConfig
    from lift_ui.train_form import APP_SKIPPED_FIELDS, default_threads, form_fields

    names = [f.name for f in fields(FinetuneConfig)]
    assert [f.name for f in form_fields()] == [n for n in names if n not in APP_SKIPPED_FIELDS]
    at = _page(runs)
    widgets = {w.key: w for kind in ("number_input", "text_input", "selectbox", "checkbox")
               for w in at.get(kind)}
    for f in form_fields():
        if f.name in ("model", "lr"):  # a model kind + path, and an LR that follows the method
            continue
        default = default_threads() if f.name == "threads" else f.default
        shown = widgets[f"_w_ft_{f.name}"].value
        assert shown == ("" if default is None and f.kind is str else default), f.name
    at.number_input(key="_w_ft_max_length").set_value(64).run()
    at.selectbox(key="_w_ft_svd").set_value("randomized").run()
    at.number_input(key="_w_ft_eval_limit").set_value(5).run()
    argv = at.code[0].value.split()[3:]  # after "python -m lift_core"
    config = config_from_args(build_parser().parse_args(argv))
    assert config == FinetuneConfig(max_length=64, svd="randomized", eval_limit=5,
                                    lr=default_lr("lift"), threads=default_threads(),
                                    out_dir=config.out_dir)
    at.text_input(key="_w_ft_train_data").set_value("/no/such.jsonl").run()
    assert any("train-data file /no/such.jsonl does not exist" in e.value for e in at.error)
    assert not [b for b in at.button if b.key == "ft_run"]  # the core's check, before a launch


def test_data_files_are_checked_with_the_clis_loader_and_previewed(runs, tmp_path):
    good = tmp_path / "train.jsonl"
    good.write_text("".join(json.dumps({"instruction": f"add {i} and 1", "output": f"#### {i + 1}"}) + "\n"
                            for i in range(5)))
    at = _page(runs)
    at.text_input(key="_w_ft_train_data").set_value(str(good)).run()
    assert not at.exception, at.exception
    assert any(f"{good}" in m.value and "5 examples" in m.value for m in at.markdown)
    head = at.dataframe[0].value
    assert len(head) == 3 and "add 0 and 1" in head["prompt"].iloc[0] and head["answer"].iloc[0] == "#### 1"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "x"}\n')  # no output field
    at.text_input(key="_w_ft_train_data").set_value(str(bad)).run()
    assert any("output" in e.value for e in at.error), [e.value for e in at.error]


# A job in the middle of its set-up: the folder claimed, progress.json at the masks, no config yet.
_SETTING_UP_JOB = """
import json, pathlib, sys, time
run = pathlib.Path(sys.argv[1])
run.mkdir(parents=True)
(run / "progress.json").write_text(json.dumps(
    {"phase": "computing masks", "done": 3, "total": 8, "layer": "model.layers.0.mlp.up_proj"}))
time.sleep(60)
"""


def test_the_live_panel_shows_the_set_up_phase_with_a_bar(runs):
    run = runs / "lift-setting-up"
    job = JobManager(runs, launcher=[sys.executable, "-c", _SETTING_UP_JOB]).start(
        [str(run)], run_dirs=[run], label="lift, 200 steps", extra={"kind": "finetune", "steps": 200})
    assert _wait(lambda: (run / "progress.json").exists(), timeout=30) and job.is_alive()
    at = _page(runs)
    assert any(s.value == "Running: lift, 200 steps" for s in at.subheader)
    assert any(i.value.startswith("Setting up") for i in at.info)
    bars = [p.proto for p in at.get("progress")]
    assert any(b.text == "Computing masks: 3/8 matrices · model.layers.0.mlp.up_proj" and b.value == 37
               for b in bars), [(b.text, b.value) for b in bars]
