"""Faults around run records: racing writers, --overwrite, a full disk, a killed run, bad files.

Each test reproduces a defect of issue 9 (sections 2 and 3) and checks the fix: exactly one
writer per run folder (threads and real processes), --overwrite never touching a live run or
a model, ENOSPC ending a run "failed" with whole metrics lines and no temporary files (the
disk is simulated full by a mock of os.write), a run killed by SIGKILL listed as
"interrupted", and records that cannot be read listed with the reason.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest

from lift_core.errors import LiftError
from lift_core.errors import RecordWriteError
from lift_core.runs.folder import CLAIM_FILE
from lift_core.runs.records import RunRecorder, RunWriter, list_runs, read_run, runs_table
from tests.test_training import _config

REPO = Path(__file__).resolve().parents[1]


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text
    return text


# --- one writer per folder ---------------------------------------------------------------


def test_racing_threads_never_share_a_run_folder(tmp_path):
    """60 trials of 4 recorders started at the same instant: exactly one writes the record."""
    for trial in range(60):
        folder, barrier, results = tmp_path / f"t{trial}", threading.Barrier(4), {}

        def race(name):
            recorder = RunRecorder(folder)  # the early check passes for all four
            barrier.wait()
            try:
                recorder.start({"writer": name})
                for step in range(3):
                    recorder.row({"step": step, "writer": name})
                recorder.end({"status": "completed", "writer": name})
                results[name] = "won"
            except LiftError as exc:
                results[name] = _one_line(exc)

        threads = [threading.Thread(target=race, args=(f"w{i}",)) for i in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        winners = [n for n, r in results.items() if r == "won"]
        assert len(winners) == 1, results
        assert all("in use by a running run" in r or "not empty" in r
                   for r in results.values() if r != "won"), results
        record = read_run(folder)
        assert record.config["writer"] == record.summary["writer"] == winners[0]
        assert record.metrics["writer"].tolist() == [winners[0]] * 3 and record.status == "completed"
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "metrics.jsonl", "summary.json"]


_RACER = """
import json, sys, time
from lift_core.errors import LiftError
from lift_core.runs.records import RunRecorder
root, start, trials, me = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
for trial in range(trials):
    due = start + 0.08 * trial
    while time.time() < due:  # all racers go at the same instant
        pass
    try:
        recorder = RunRecorder(f"{root}/t{trial}")
        recorder.start({"writer": me})
        for step in range(3):
            recorder.row({"step": step, "writer": me})
        recorder.end({"status": "completed", "writer": me})
        print(json.dumps([trial, "won"]), flush=True)
    except LiftError as exc:
        print(json.dumps([trial, str(exc)]), flush=True)
"""


def test_racing_processes_never_share_a_run_folder(tmp_path):
    """4 real processes race for the same folder in each of 40 trials: one winner each time."""
    trials, start = 40, time.time() + 2.0
    racers = [subprocess.Popen([sys.executable, "-c", _RACER, str(tmp_path), str(start), str(trials), f"p{i}"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for i in range(4)]
    outcomes = {t: [] for t in range(trials)}
    for racer in racers:
        out, err = racer.communicate(timeout=60)
        assert racer.returncode == 0 and not err, err
        for line in out.splitlines():
            trial, result = json.loads(line)
            outcomes[trial].append(result)
    for trial, results in outcomes.items():
        assert results.count("won") == 1, (trial, results)
        assert all("\n" not in r for r in results)
        record = read_run(tmp_path / f"t{trial}")
        assert record.config["writer"] == record.summary["writer"] == record.metrics["writer"].iloc[0]
        assert len(record.metrics) == 3


_HOLDER = """
import sys, time
from lift_core.runs.records import RunWriter
writer = RunWriter(sys.argv[1], overwrite=True)
writer.write_config({"method": "lift", "steps": 200})
writer.append_metrics({"step": 0, "target_acc": 0.1, "source_acc": 0.9, "elapsed": 1.0})
writer.append_metrics({"step": 1, "loss": 2.0, "elapsed": 1.5})
print("ready", flush=True)
time.sleep(120)
"""


def _holder(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_overwrite_refuses_a_live_run_and_takes_over_a_killed_one(tmp_path):
    folder = tmp_path / "run"
    holder = _holder(folder)
    try:
        assert runs_table([folder])["status"].tolist() == ["running"]
        with pytest.raises(LiftError, match=f"in use by a running run \\(process {holder.pid} on") as info:
            RunWriter(folder, overwrite=True)
        _one_line(info.value)
        with pytest.raises(LiftError, match="in use by a running run"):
            RunRecorder(folder, overwrite=True)  # the early check, before any model is loaded
    finally:
        holder.kill()
        holder.wait()
    assert runs_table([folder])["status"].tolist() == ["interrupted"]
    # Many writers take over the dead run's folder at once: never two at the same time.
    results, barrier, active = [], threading.Barrier(6), []

    def take_over():
        barrier.wait()
        try:
            writer = RunWriter(folder, overwrite=True)
        except LiftError as exc:
            results.append(_one_line(exc))
            return
        active.append(1)
        results.append(len(active))
        writer.write_config({"method": "full"})
        time.sleep(0.05)
        active.pop()
        writer.write_summary({"status": "completed"})

    threads = [threading.Thread(target=take_over) for _ in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert 1 in results and not [r for r in results if isinstance(r, int) and r > 1], results
    assert all("in use by a running run" in r for r in results if isinstance(r, str)), results
    record = read_run(folder)
    assert record.config["method"] == "full" and record.status == "completed"
    assert not (folder / CLAIM_FILE).exists() and not list(folder.glob(".*.tmp"))


def test_runs_are_never_written_into_a_model_directory(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (model / "model.safetensors").write_bytes(b"weights")
    for overwrite, message in ((True, "never written there, even with --overwrite"), (False, "not empty")):
        with pytest.raises(LiftError, match=message) as info:
            RunWriter(model, overwrite=overwrite)
        assert "config.json" in _one_line(info.value)
    assert json.loads((model / "config.json").read_text()) == {"model_type": "llama"}
    # Weights beside a run's own record, a sub-folder, or other data without a run config: refused too.
    run = tmp_path / "run"
    writer = RunWriter(run)
    writer.write_config({"method": "lift"})
    writer.write_summary({"status": "completed"})
    (run / "adapter.safetensors").write_bytes(b"x")
    with pytest.raises(LiftError, match="adapter.safetensors"):
        RunWriter(run, overwrite=True)
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    with pytest.raises(LiftError, match="sub/"):
        RunWriter(data, overwrite=True)


# --- a full disk ---------------------------------------------------------------------------


@contextmanager
def disk_full(folder: Path, *, after_metrics_bytes: int = 0, pwrite_too: bool = False):
    """os.write into ``folder`` takes ``after_metrics_bytes`` more bytes of metrics, then the
    disk is full for every file there: the write that crosses the limit is cut short (as a
    real one is) and the next one fails with ENOSPC."""
    real_write, real_pwrite = os.write, os.pwrite
    state = {"left": after_metrics_bytes, "full": False}
    folder = os.path.realpath(folder)

    def target(fd):
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return ""

    def write(fd, data):
        name = target(fd)
        if not name.startswith(folder):
            return real_write(fd, data)
        if state["full"] or (not name.endswith("metrics.jsonl") and state["left"] <= 0):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if not name.endswith("metrics.jsonl"):
            return real_write(fd, data)
        if len(data) > state["left"]:
            state["full"] = True
            return real_write(fd, bytes(data[: state["left"]]))
        state["left"] -= len(data)
        return real_write(fd, data)

    def pwrite(fd, data, offset):
        if pwrite_too and target(fd).startswith(folder):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_pwrite(fd, data, offset)

    with mock.patch("os.write", write), mock.patch("os.pwrite", pwrite):
        yield state


def _assert_whole_lines(folder: Path) -> None:
    text = (folder / "metrics.jsonl").read_text()
    assert text == "" or text.endswith("\n")
    assert all(json.loads(line) for line in text.splitlines())
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_full_disk_mid_run_fails_the_run_in_one_line(char_llama, tmp_path):
    from lift_core.train.loop import finetune

    run = tmp_path / "run"
    with disk_full(run, after_metrics_bytes=250), pytest.raises(RecordWriteError) as info:
        finetune(_config(char_llama, run, steps=6), progress=False)
    assert "No space left on device" in _one_line(info.value)
    assert info.value.__suppress_context__ or info.value.__context__ is None  # no chained traceback
    _assert_whole_lines(run)
    record = read_run(run)
    assert record.summary is None and record.status == "failed"
    assert "No space left on device" in record.note and "metrics.jsonl" in record.note
    assert len(record.metrics) >= 1


def test_the_cli_prints_one_line_when_the_disk_fills_up(char_llama, tmp_path, capsys):  # noqa: F811
    from lift_core.cli.main import main

    run = tmp_path / "run"
    args = ["finetune", "--model", char_llama, "--steps", "6", "--eval-every", "3", "--eval-limit", "4",
            "--max-new-tokens", "4", "--batch-size", "4", "--train-examples", "40", "--no-progress",
            "--out", str(run)]
    with disk_full(run, after_metrics_bytes=250):
        assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot write") and "No space left on device" in err
    assert "\n" not in err and "Traceback" not in err
    assert runs_table([run])["status"].tolist() == ["failed"]
    _assert_whole_lines(run)


def test_a_summary_that_does_not_fit_is_a_failure_not_a_running_run(char_llama, tmp_path):  # noqa: F811
    from lift_core.train.loop import finetune

    run, real_fsync = tmp_path / "run", os.fsync

    def fill_at_summary(fd):  # the disk fills up just as summary.json is written
        if os.readlink(f"/proc/self/fd/{fd}").split("/")[-1].startswith(".summary.json."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    with mock.patch("os.fsync", fill_at_summary), pytest.raises(RecordWriteError, match="summary.json"):
        finetune(_config(char_llama, run, steps=2), progress=False)
    _assert_whole_lines(run)
    assert runs_table([run])[["status", "steps_done"]].values.tolist() == [["failed", 2]]
    assert "summary.json" in read_run(run).note


def test_when_nothing_fits_any_more_the_run_shows_interrupted(char_llama, tmp_path):  # noqa: F811
    from lift_core.train.loop import finetune

    run = tmp_path / "run"
    with disk_full(run, after_metrics_bytes=250, pwrite_too=True), pytest.raises(RecordWriteError):
        finetune(_config(char_llama, run, steps=6), progress=False)
    _assert_whole_lines(run)
    assert read_run(run).status == "interrupted"  # never "running": the writer is gone


def test_a_failed_start_leaves_no_trace(tmp_path):
    run, real_write = tmp_path / "run", os.write

    def config_does_not_fit(fd, data):
        if ".config.json." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    recorder = RunRecorder(run)
    with mock.patch("os.write", config_does_not_fit), pytest.raises(RecordWriteError, match="config.json"):
        recorder.start({"method": "lift"})
    assert list(run.iterdir()) == []
    with disk_full(run), pytest.raises(RecordWriteError, match="cannot start a run record"):
        RunRecorder(run).start({"method": "lift"})  # not even the claim fits
    assert list(run.iterdir()) == []
    RunRecorder(run).start({"method": "lift"})  # the folder is free again


# --- the listing tells the truth --------------------------------------------------------------


def _wait_for_rows(path: Path, rows: int, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and sum(1 for line in path.read_text().splitlines() if '"loss"' in line) >= rows:
            return True
        time.sleep(0.2)
    return False


def test_a_run_killed_by_sigkill_is_listed_as_interrupted(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "lift_core", "finetune", "--steps", "200", "--eval-every", "50",
                             "--eval-limit", "10", "--threads", "1", "--no-progress", "--out", str(run)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "log", "w"))
    try:
        assert _wait_for_rows(run / "metrics.jsonl", 2, timeout=120), (tmp_path / "log").read_text()
        assert runs_table([run])["status"].tolist() == ["running"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    row = runs_table([run]).iloc[0]
    metrics = read_run(run).metrics
    assert row["status"] == "interrupted" and f"process {proc.pid}" in row["note"]
    assert row["steps_done"] == metrics["step"].max() >= 2
    assert row["target_acc_before"] == metrics.loc[metrics["step"] == 0, "target_acc"].iloc[0]
    assert row["source_acc_before"] == metrics.loc[metrics["step"] == 0, "source_acc"].iloc[0]
    assert list_runs(tmp_path) == [run]


@pytest.mark.parametrize("name, text, reason", [
    ("config.json", "[1, 2, 3]", "holds a JSON list, not an object"),
    ("summary.json", "[1, 2, 3]", "holds a JSON list, not an object"),
    ("config.json", '{"method": ', "is not valid JSON"),
    ("metrics.jsonl", '{"step": 0}\n{oops\n{"step": 1}\n', "line 2 is not valid JSON"),
    ("metrics.jsonl", '{"step": 0}\n[1]\n', "line 2 is not a metrics row"),
])
def test_an_unreadable_record_is_listed_with_its_reason(tmp_path, name, text, reason):
    good, bad = tmp_path / "good", tmp_path / "bad"
    for folder in (good, bad):
        writer = RunWriter(folder)
        writer.write_config({"method": "lift", "steps": 1})
        writer.append_metrics({"step": 0, "target_acc": 0.1, "source_acc": 0.9})
        writer.write_summary({"status": "completed", "steps_done": 1})
    (bad / name).write_text(text)
    assert list_runs(tmp_path) == [bad, good]
    table = runs_table(list_runs(tmp_path))
    assert table["status"].tolist() == ["unreadable", "completed"]
    assert reason in table["note"].iloc[0] and str(bad) in table["note"].iloc[0]


def test_a_cut_last_line_is_skipped_and_flagged_once_the_run_ended(tmp_path):
    run = tmp_path / "run"
    writer = RunWriter(run)
    writer.write_config({"method": "lift"})
    writer.append_metrics({"step": 0})
    writer.append_metrics({"step": 1})
    writer.write_summary({"status": "completed"})
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 2, "lo')
    record = read_run(run)
    assert record.metrics["step"].tolist() == [0, 1] and "cut off" in record.note
