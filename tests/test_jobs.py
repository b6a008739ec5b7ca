"""The job manager: one job at a time, reattach from another manager, clean stop, no zombies."""

import sys
import time

import pytest

from lift_core.errors import LiftError
from lift_core.runs.jobs import JobManager, _CHILDREN

# A stand-in job: writes a file, then waits; on SIGTERM it writes "stopped" and exits 0,
# as the finetune CLI does.
_SCRIPT = """
import signal, sys, time, pathlib
out = pathlib.Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
def stop(*_):
    (out / "status").write_text("stopped"); sys.exit(0)
signal.signal(signal.SIGTERM, stop)
(out / "status").write_text("running"); print("started", flush=True)
time.sleep(float(sys.argv[2]))
(out / "status").write_text("completed")
"""


def _manager(tmp_path):
    return JobManager(tmp_path / "runs", launcher=[sys.executable, "-c", _SCRIPT])


def _wait_for(predicate, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_start_refuses_a_second_job_and_stop_is_clean(tmp_path):
    manager = _manager(tmp_path)
    run = tmp_path / "runs" / "a"
    job = manager.start([str(run), "60"], run_dirs=[run], label="demo")
    assert _wait_for(lambda: (run / "status").exists())
    assert manager.active().job_id == job.job_id
    with pytest.raises(LiftError, match="already running"):
        manager.start([str(tmp_path / "b"), "1"], run_dirs=[tmp_path / "b"], label="second")
    assert manager.stop(timeout=10)
    assert (run / "status").read_text() == "stopped"
    assert manager.active() is None and manager.last().job_id == job.job_id
    assert "started" in manager.last().log_tail()


def test_another_manager_reattaches_without_the_popen(tmp_path):
    first = _manager(tmp_path)
    run = tmp_path / "runs" / "a"
    job = first.start([str(run), "60"], run_dirs=[run], label="demo")
    assert _wait_for(lambda: (run / "status").exists())
    # A reloaded page or another session: a new manager on the same folder, and no Popen
    # object to poll (as in another process).
    child = _CHILDREN.pop(job.pid)
    second = _manager(tmp_path)
    assert second.active() is not None and second.active().pid == job.pid
    assert second.stop(timeout=10)
    child.wait(timeout=5)
    assert (run / "status").read_text() == "stopped"


def test_finished_job_is_not_active_and_next_one_starts(tmp_path):
    manager = _manager(tmp_path)
    run = tmp_path / "runs" / "a"
    manager.start([str(run), "0"], run_dirs=[run], label="quick")
    assert _wait_for(lambda: manager.active() is None)
    assert (run / "status").read_text() == "completed"
    run2 = tmp_path / "runs" / "b"
    manager.start([str(run2), "0"], run_dirs=[run2], label="next")
    assert _wait_for(lambda: manager.active() is None)


def test_refuses_a_run_folder_that_holds_a_run(tmp_path):
    manager = _manager(tmp_path)
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    (run / "summary.json").write_text("{}")
    with pytest.raises(LiftError, match="already holds a run"):
        manager.start([str(run), "0"], run_dirs=[run], label="x")


def test_stop_without_a_job_is_a_no_op(tmp_path):
    assert _manager(tmp_path).stop()
