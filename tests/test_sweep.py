"""`python -m lift_core sweep`: a real grid on the built-in model, resume, failures, stop, bad grids."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lift_core.cli.main import main
from lift_core.errors import LiftError
from lift_core.runs.folder import RunClaim
from lift_core.runs.records import read_run
from lift_core.sweeps.plan import parse_grid, plan_runs, run_name
from lift_core.sweeps.runner import read_index, run_sweep, sweep_status

# Four steps with an evaluation at step 2 on a 2-example subset (eval-limit 4: the whole sets).
TINY = ["--steps", "4", "--eval-every", "2", "--eval-limit", "4", "--eval-subset", "2",
        "--train-examples", "32", "--batch-size", "8", "--threads", "1", "--no-save", "--no-progress"]
GRID = ["--methods", "lift,full", "--lrs", "1e-3,1e-2", "--seeds", "0"]
REPO = Path(__file__).resolve().parents[1]
NAMES = ["lift-lr0.001-s0", "lift-lr0.01-s0", "full-lr0.001-s0", "full-lr0.01-s0"]


def _summary_mtimes(out):
    return {name: (out / name / "summary.json").stat().st_mtime_ns for name in NAMES}


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "s"
    assert main(["sweep", *GRID, *TINY, "--out", str(out)]) == 0
    return out


def test_a_grid_writes_one_record_per_run_and_the_index(sweep_dir, capsys):
    index = read_index(sweep_dir)
    assert index["kind"] == "lift-sweep" and index["status"] == "completed"
    assert index["done"] == index["total"] == 4 and index["eta_seconds"] == 0
    assert [r["name"] for r in index["runs"]] == NAMES == [r["dir"] for r in index["runs"]]
    assert index["grid"] == {"methods": ["lift", "full"], "lrs": [0.001, 0.01], "seeds": [0],
                             "budgets": None}
    assert index["argv"][:3] == ["sweep", "--methods", "lift,full"] and "--eval-subset" in index["argv"]
    for entry in index["runs"]:
        record = read_run(sweep_dir / entry["dir"])
        assert record.summary["status"] == entry["status"] == "completed" and entry["seconds"] > 0
        assert (record.config["method"], record.config["lr_used"]) == (entry["method"], entry["lr"])
    assert not (sweep_dir / ".lift-claim.json").exists()  # released at the end
    assert main(["sweep", "--report", str(sweep_dir)]) == 0
    report = capsys.readouterr().out
    assert "lift" in report and "full" in report and (sweep_dir / "frontier.csv").is_file()


def test_eval_subset_shrinks_the_intermediate_evaluations_only(sweep_dir):
    run = sweep_dir / NAMES[0]
    evals = [r for r in map(json.loads, open(run / "metrics.jsonl")) if "target_acc" in r]
    assert [(r["step"], r.get("eval_examples")) for r in evals] == [(0, None), (2, 2), (4, None)]
    # The answers each evaluation keeps (3 per set) show how many examples it generated.
    kept = {line["step"]: len(line["generations"])
            for line in map(json.loads, open(run / "generations.jsonl"))}
    assert kept == {0: 6, 2: 4, 4: 6}
    assert read_run(run).summary["eval_step"] == 4  # the summary's numbers are the whole sets'


def test_running_it_again_skips_every_completed_run(sweep_dir, capsys):
    before = _summary_mtimes(sweep_dir)
    seconds = [r["seconds"] for r in read_index(sweep_dir)["runs"]]
    assert main(["sweep", *GRID, *TINY, "--out", str(sweep_dir)]) == 0
    assert _summary_mtimes(sweep_dir) == before
    index = read_index(sweep_dir)
    assert index["done"] == 4 and [r["seconds"] for r in index["runs"]] == seconds
    assert "sweep completed: 4/4" in capsys.readouterr().out


def test_only_the_failed_run_is_trained_again(sweep_dir, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(sweep_dir, out)
    summary = json.loads((out / NAMES[1] / "summary.json").read_text())
    (out / NAMES[1] / "summary.json").write_text(json.dumps({**summary, "status": "failed"}))
    before = _summary_mtimes(out)
    assert main(["sweep", *GRID, *TINY, "--out", str(out)]) == 0
    after = _summary_mtimes(out)
    assert [name for name in NAMES if after[name] != before[name]] == [NAMES[1]]
    assert read_run(out / NAMES[1]).summary["status"] == "completed"


def test_a_completed_run_with_other_settings_is_not_taken_as_done(sweep_dir, capsys):
    tiny = [("3" if i and TINY[i - 1] == "--steps" else v) for i, v in enumerate(TINY)]
    assert main(["sweep", *GRID, *tiny, "--out", str(sweep_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "steps 4" in err and "\n" not in err


def test_a_failed_run_does_not_end_the_sweep_and_a_stop_does(tmp_path):
    # lr 1e30 makes the loss NaN at step 2 (an expected result of an LR sweep); the second run is
    # stopped at its first evaluation, the third never starts.
    grid = parse_grid("full", "1e30,1e-3,1e-2", "0")
    runs = plan_runs(grid, tmp_path / "s", steps=2, eval_every=2, eval_limit=2, train_examples=16,
                     batch_size=4, threads=1, save=False)
    stop = threading.Event()

    def stop_in_second_run(index, row):
        if row is not None and index["runs"][1]["status"] == "running":
            stop.set()

    index = run_sweep(runs, grid, tmp_path / "s", stop_event=stop, on_change=stop_in_second_run)
    assert [r["status"] for r in index["runs"]] == ["failed", "stopped", "pending"]
    assert "loss" in index["runs"][0]["error"] and index["status"] == "stopped"
    assert index["done"] == 1 and index["eta_seconds"] == pytest.approx(2 * index["runs"][0]["seconds"], abs=0.2)
    assert read_run(tmp_path / "s" / runs[1].name).summary["status"] == "stopped"
    assert sweep_status(tmp_path / "s") == "stopped"


def test_a_stopped_run_with_a_checkpoint_resumes_from_it(tmp_path):
    grid = parse_grid("lift", "1e-2", "0")
    runs = plan_runs(grid, tmp_path / "s", steps=4, eval_every=4, eval_limit=2, train_examples=16,
                     batch_size=4, threads=1, save=False, checkpoint_every=2)
    stop = threading.Event()

    def stop_at_step_2(index, row):
        if row is not None and row.get("step") == 2:
            stop.set()

    assert run_sweep(runs, grid, tmp_path / "s", stop_event=stop, on_change=stop_at_step_2)["status"] == "stopped"
    index_file = tmp_path / "s" / "sweep.json"  # as a killed sweep leaves it
    index_file.write_text(json.dumps({**json.loads(index_file.read_text()), "status": "running"}))
    assert sweep_status(tmp_path / "s") == "interrupted"  # "running", but no process holds it
    index = run_sweep(runs, grid, tmp_path / "s")
    summary = read_run(tmp_path / "s" / runs[0].name).summary
    assert index["status"] == "completed" and summary["resumed"] and summary["steps_done"] == 4


def test_a_folder_another_sweep_holds_is_refused(tmp_path, capsys):
    out = tmp_path / "s"
    out.mkdir()
    claim = RunClaim.acquire(out, overwrite=False)  # a live sweep (this process) holds it
    try:
        assert main(["sweep", "--methods", "lift", *TINY, "--out", str(out)]) == 2
    finally:
        claim.release()
    assert "in use by another sweep" in capsys.readouterr().err


@pytest.mark.parametrize("args, words", [
    (["--methods", "lift,nope"], "unknown method"),
    (["--methods", ""], "empty"),
    (["--lrs", "0"], "numbers > 0"),
    (["--lrs", "1e-3,abc"], "'abc' is not a number"),
    (["--lrs", "1e-3,0.001"], "repeats 0.001"),
    (["--seeds", ""], "empty"),
    (["--seeds", "0,0"], "repeats 0"),
    (["--budgets", "0"], "whole numbers >= 1"),
    (["--budgets", "2", "--lora-rank", "4"], "not both"),
    (["--steps", "0"], "steps"),
])
def test_bad_grid_values_exit_2_with_one_line(tmp_path, capsys, args, words):
    assert main(["sweep", *args, "--out", str(tmp_path / "s"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and words in err and "\n" not in err
    assert not (tmp_path / "s").exists()


def test_plan_order_names_and_budgets(tmp_path):
    runs = plan_runs(parse_grid("lift,full", None, "0,1", "1,4"), tmp_path)
    names = [r.name for r in runs]
    assert names[:3] == ["lift-b1-lr0.01-s0", "lift-b4-lr0.01-s0", "full-lr0.001-s0"]
    assert len(names) == 6 and names[3] == "lift-b1-lr0.01-s1"
    assert [r.config.lora_rank for r in runs[:2]] == [1, 4] and runs[2].budget is None
    assert runs[0].config.lr is None  # no --lrs: the method's own rate, recorded as lr_used
    assert run_name("full", 1e-4, 2) == "full-lr0.0001-s2"
    with pytest.raises(LiftError, match="same run"):
        plan_runs(parse_grid("lift", "0.0010000001,0.001"), tmp_path)


@pytest.mark.slow  # a fresh interpreter and a model set-up: ~28 s on a loaded 2-core machine
def test_ctrl_c_stops_the_current_run_and_the_sweep(tmp_path):
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "lift_core", "sweep", "--methods", "lift", "--lrs", "1e-3,1e-2",
           "--steps", "5000", "--eval-every", "5000", "--eval-limit", "2", "--train-examples", "16",
           "--threads", "1", "--no-save", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    metrics = out / "lift-lr0.001-s0" / "metrics.jsonl"
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().count('"loss"') >= 2:
            break
        time.sleep(0.3)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, output
    index = read_index(out)
    assert index["status"] == "stopped" and [r["status"] for r in index["runs"]] == ["stopped", "pending"]
    assert "run 1/2 lift-lr0.001-s0" in output and "run the same command again" in output
    assert not (out / "lift-lr0.01-s0").exists() and not (out / ".lift-claim.json").exists()
