"""Checkpoint and resume (lift_core.train.checkpoint, finetune(resume=True), --resume).

A run that fails or is killed after a checkpoint and is resumed equals the uninterrupted run
with the same seed: the same loss curve and the same final weights, for a sparse method
(with a mask refresh after the resume point), full fine-tuning and LoRA.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lift_core.errors import LiftError
from lift_core.train.checkpoint import CHECKPOINT_DIR, checkpoint_path
from lift_core.train.config import FinetuneConfig
from lift_core.train.loop import finetune

ROOT = Path(__file__).resolve().parents[1]
# 6 steps, checkpoints at 2 and 4, mask refreshes at 3 and 6 (one after the resume point).
SMALL = dict(steps=6, update_interval=3, eval_every=3, eval_limit=2, max_new_tokens=4,
             train_examples=32, batch_size=4, threads=1, checkpoint_every=2)


class _FailAfter:
    """A callback that makes the run fail once ``step`` is recorded (as a crash would)."""

    def __init__(self, step):
        self.step = step

    def __call__(self, row):
        if row.get("step") == self.step:
            raise RuntimeError("simulated crash")


def _losses(run_dir):
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def _weights(run_dir, method):
    name = "adapter/adapter_model.safetensors" if method == "lora" else "model/model.safetensors"
    return load_file(str(Path(run_dir) / name))


@pytest.mark.parametrize("method", ["lift", "full", "lora"])
def test_resumed_run_equals_uninterrupted(tmp_path, method):
    whole = finetune(FinetuneConfig(method=method, out_dir=str(tmp_path / "whole"), **SMALL),
                     progress=False)
    assert whole["status"] == "completed"
    broken_dir = tmp_path / "broken"
    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune(FinetuneConfig(method=method, out_dir=str(broken_dir), **SMALL),
                 callbacks=_FailAfter(3), progress=False)
    assert checkpoint_path(broken_dir).name == CHECKPOINT_DIR  # the one of step 2
    resumed = finetune(FinetuneConfig(method=method, out_dir=str(broken_dir), **SMALL),
                       resume=True, progress=False)
    assert resumed["status"] == "completed" and resumed["steps_done"] == 6
    assert resumed["target_acc_before"] == whole["target_acc_before"]
    if method == "lift":
        assert resumed["mask_refreshes"] == whole["mask_refreshes"] >= 1
    expected, got = _losses(tmp_path / "whole"), _losses(broken_dir)
    assert [s for s, _ in got] == [1, 2, 3, 4, 5, 6]  # step 3 of the crash was cut off
    for (_, a), (_, b) in zip(expected, got):
        assert b == pytest.approx(a, rel=1e-6)
    final_whole, final_resumed = _weights(tmp_path / "whole", method), _weights(broken_dir, method)
    assert final_whole.keys() == final_resumed.keys()
    for name, tensor in final_whole.items():
        torch.testing.assert_close(final_resumed[name], tensor, rtol=1e-6, atol=1e-8)
    assert not (broken_dir / CHECKPOINT_DIR).exists()  # a completed run drops its checkpoint


def test_resume_refuses_a_folder_without_checkpoint(tmp_path):
    finetune(FinetuneConfig(out_dir=str(tmp_path), **{**SMALL, "steps": 1,
                                                       "checkpoint_every": None}),
             progress=False)
    with pytest.raises(LiftError, match="no checkpoint"):
        finetune(FinetuneConfig(out_dir=str(tmp_path), **SMALL), resume=True, progress=False)


def _cli(*args):
    return [sys.executable, "-m", "lift_core", "finetune", *args]


def test_sigkill_then_resume_through_the_cli(tmp_path):
    run_dir = tmp_path / "run"
    options = ["--steps", "40", "--checkpoint-every", "2", "--eval-every", "40",
               "--eval-limit", "2", "--max-new-tokens", "4", "--train-examples", "32",
               "--batch-size", "4", "--threads", "1", "--no-progress", "--no-save"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(_cli(*options, "--out", str(run_dir)), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while checkpoint_path(run_dir) is None and proc.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (run_dir / "summary.json").exists()
    done = subprocess.run(_cli("--resume", str(run_dir), "--no-progress"), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps_done"] == 40 and summary["resumed"]
    steps = [step for step, _ in _losses(run_dir)]
    assert steps == list(range(1, 41))  # no step lost or repeated in the record
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    elapsed = [row["elapsed"] for row in rows]
    assert elapsed == sorted(elapsed)  # the clock goes on across the resume


def test_resume_with_other_settings_is_one_line_error(tmp_path, capsys):
    from lift_core.cli.main import main

    assert main(["finetune", "--resume", str(tmp_path), "--steps", "3"]) == 2
    assert capsys.readouterr().err.startswith("error: --resume takes no other")
    assert main(["finetune", "--resume", str(tmp_path)]) == 2
    assert "is not a run folder" in capsys.readouterr().err


def test_the_job_panel_resumes_a_stopped_run(tmp_path, monkeypatch):
    import threading

    from streamlit.testing.v1 import AppTest

    from lift_core.runs.jobs import JobManager

    root = tmp_path / "runs"
    monkeypatch.setenv("LIFT_RUNS_DIR", str(root))
    monkeypatch.setenv("LIFT_SAMPLE_RUNS", str(tmp_path / "no_samples"))
    run_dir = root / "lift-stopped"
    stop = threading.Event()
    config = FinetuneConfig(out_dir=str(run_dir), save=False, **{**SMALL, "steps": 4})
    finetune(config, stop_event=stop, progress=False,
             callbacks=lambda row: stop.set() if row.get("step") == 2 else None)
    assert checkpoint_path(run_dir) is not None  # the stop wrote one at step 2
    # the job that ran it (already over), as the panel finds it
    JobManager(root, launcher=[sys.executable, "-c", "pass"]).start(
        [], run_dirs=[run_dir], label="lift, 4 steps", extra={"kind": "finetune", "steps": 4},
        resume=True)
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.run()
        at.switch_page("pages/finetune.py").run()
        assert not at.exception, at.exception
        at.button(key="ft_live_resume").click().run()
        assert not at.exception, at.exception
        job = JobManager(root).last()
        assert job.argv[-2:] == ["--resume", str(run_dir)] and job.label == "lift, 4 steps (resumed)"
        deadline = time.monotonic() + 90
        while job.is_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["resumed"], job.log_tail()
        assert [step for step, _ in _losses(run_dir)] == [1, 2, 3, 4]
    finally:
        JobManager(root).stop(timeout=20)


def test_a_run_stopped_in_its_last_evaluation_resumes_to_that_evaluation(tmp_path, monkeypatch):
    import threading

    from lift_core.train.trainer import Trainer

    stop, evaluate = threading.Event(), Trainer.evaluate

    def stop_in_the_last_evaluation(self, *, between_batches=None, **kwargs):
        if self.steps_done == self.config.steps and not stop.is_set():
            stop.set()  # between_batches raises before the first generation batch
        return evaluate(self, between_batches=between_batches, **kwargs)

    monkeypatch.setattr(Trainer, "evaluate", stop_in_the_last_evaluation)
    config = FinetuneConfig(out_dir=str(tmp_path), save=False, **{**SMALL, "steps": 3})
    assert finetune(config, stop_event=stop, progress=False)["status"] == "stopped"
    resumed = finetune(config, resume=True, progress=False)
    assert resumed["status"] == "completed" and resumed["eval_step"] == 3
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3 and "target_acc" in rows[-1]
