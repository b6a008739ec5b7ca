"""`python -m lift_core compare`: a queue of real runs, compare.json, summary table, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from lift_core.cli.compare import parse_methods
from lift_core.cli.main import build_parser, main
from lift_core.errors import LiftError
from lift_core.runs.compare import compare_configs, method_table, read_compare
from lift_core.runs.records import read_run
from lift_core.train.methods import default_lr

REPO = Path(__file__).resolve().parents[1]
TINY = ["--steps", "3", "--eval-every", "2", "--eval-limit", "4", "--threads", "1", "--no-progress"]


def test_two_methods_end_to_end(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--methods", "lift,lora", "--out", str(out), *TINY]) == 0
    state = read_compare(out)
    assert state["methods"] == ["lift", "lora"] and state["status"] == "completed"
    assert [r["status"] for r in state["runs"]] == ["completed", "completed"]
    for method in ("lift", "lora"):
        record = read_run(out / method)  # a normal run record, with the method's own default LR
        assert record.summary["status"] == "completed" and record.config["method"] == method
        assert record.config["lr_used"] == default_lr(method) and record.config["steps"] == 3
        assert list(record.metrics["step"]) == [0, 1, 2, 3]
    text = capsys.readouterr().out
    assert "lift" in text and "lora" in text and "comparison completed" in text
    # The same folder again is refused (one line, exit 2) unless --overwrite.
    assert main(["compare", "--methods", "lift", "--out", str(out), *TINY]) == 2


def test_bad_input_is_refused_before_training(tmp_path):
    with pytest.raises(LiftError, match="unknown method"):
        parse_methods("lift,nope")
    with pytest.raises(LiftError, match="twice"):
        parse_methods("lift,lift")
    with pytest.raises(LiftError, match="steps"):
        compare_configs(["lift"], tmp_path / "x", steps=0)
    (tmp_path / "y" / "full").mkdir(parents=True)
    (tmp_path / "y" / "full" / "junk").write_text("x")
    with pytest.raises(LiftError, match="not empty"):
        compare_configs(["lift", "full"], tmp_path / "y")
    assert not (tmp_path / "y" / "lift").exists()


def test_sigterm_stops_the_current_run_and_skips_the_rest(tmp_path):
    out = tmp_path / "cmp"
    cmd = [sys.executable, "-m", "lift_core", "compare", "--methods", "lift,full,lora", "--out", str(out),
           "--steps", "5000", "--eval-every", "5000", "--eval-limit", "4", "--threads", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    metrics = out / "lift" / "metrics.jsonl"
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().count('"loss"') >= 3:
            break
        time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, output
    state = read_compare(out)
    assert state["status"] == "stopped"
    assert [r["status"] for r in state["runs"]] == ["stopped", "not started", "not started"]
    summary = json.loads((out / "lift" / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["steps_done"] >= 3
    assert not (out / "full").exists()
    assert "lift, stopped" not in output and "lift stopped" in output


def test_method_table_mean_and_std_per_method():
    table = pd.DataFrame({"method": ["lora", "lift", "lift"], "target_acc": [0.3, 0.5, 0.7],
                          "forgetting": [0.2, 0.1, 0.1]})
    for col in ("target_acc_before", "source_acc_before", "source_acc", "trainable_params",
                "optimizer_state_bytes", "seconds_per_step", "wall_seconds"):
        table[col] = 1.0
    out = method_table(table)
    assert list(out["method"]) == ["lift", "lora"] and list(out["runs"]) == [2, 1]
    assert out.loc[0, "target_acc_mean"] == pytest.approx(0.6)
    assert out.loc[0, "target_acc_std"] == pytest.approx(0.1414, abs=1e-3)
    assert pd.isna(out.loc[1, "target_acc_std"])


def test_summary_table_shows_no_after_numbers_for_a_run_stopped_before_evaluating(tmp_path):
    from lift_core.cli.compare import summary_text
    from tests.fake_runs import write_run

    run = write_run(tmp_path / "lift", "lift", 0, status="stopped")
    summary = json.loads((run / "summary.json").read_text())
    # Stopped at step 7 of 60: the last complete evaluation is step 0's.
    summary.update(steps_done=7, eval_step=0, target_acc=summary["target_acc_before"],
                   source_acc=summary["source_acc_before"], forgetting=0.0)
    (run / "summary.json").write_text(json.dumps(summary))
    state = {"status": "stopped", "wall_seconds": 1.0,
             "runs": [{"method": "lift", "path": str(run), "status": "stopped", "error": None}]}
    row = summary_text(state).splitlines()[1]
    assert row.split()[:3] == ["lift", "stopped", "7/60"]
    assert row.count("n/a") == 3  # target after, source after, forgetting


def test_every_shared_config_field_is_an_option_with_its_docstring_as_help():
    from dataclasses import fields

    from lift_core.train.options import PER_METHOD_FIELDS
    from lift_core.cli.compare import add_compare_parser
    from lift_core.train.options import field_docs
    from lift_core.train.config import FinetuneConfig
    from tests.test_finetune_cli import _options

    options = _options(add_compare_parser, "compare")
    docs = field_docs(FinetuneConfig)
    assert set(PER_METHOD_FIELDS) == {"method", "lr", "out_dir"}
    for f in fields(FinetuneConfig):
        if f.name in PER_METHOD_FIELDS:
            assert f.name not in options, f"{f.name} differs per method"
        else:
            assert options[f.name].help.replace("%%", "%").startswith(docs[f.name]), f.name
    args = build_parser().parse_args(["compare", "--out", "x", "--max-length", "64", "--overwrite"])
    assert (args.max_length, args.overwrite, args.out) == (64, True, "x")
