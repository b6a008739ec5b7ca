"""The finetune sub-command: parsing, an end-to-end run, one-line errors."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lift_core.cli.finetune import (
    add_finetune_parser,
    config_from_args,
    run_finetune,
    summary_paragraph,
)
from lift_core.errors import LiftError
from lift_core.train.config import FinetuneConfig

REPO = Path(__file__).resolve().parents[1]


def _parse(*argv):
    parser = argparse.ArgumentParser(prog="lift")
    add_finetune_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["finetune", *argv])


QUICK = ["--steps", "3", "--eval-every", "3", "--eval-limit", "4", "--max-new-tokens", "3",
         "--batch-size", "4", "--train-examples", "20", "--lora-rank", "2", "--filter-rank", "2",
         "--no-progress"]


def test_defaults_come_from_the_config():
    config = config_from_args(_parse("--out", "somewhere"))
    assert config == FinetuneConfig(out_dir="somewhere")
    assert config.model == "builtin" and config.method == "lift"


def test_options_reach_the_config():
    args = _parse("--method", "lora", "--lr", "3e-4", "--lora-rank", "8", "--filter-rank", "6",
                  "--update-interval", "7", "--seed", "3", "--device", "cpu", "--out", "x",
                  "--overwrite")
    config = config_from_args(args)
    assert (config.method, config.lr, config.lora_rank, config.filter_rank) == ("lora", 3e-4, 8, 6)
    assert (config.update_interval, config.seed, config.device, config.overwrite) == (7, 3, "cpu", True)


def test_unknown_method_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        _parse("--method", "galore", "--out", "x")
    assert "invalid choice: 'galore'" in capsys.readouterr().err


def test_end_to_end_run_prints_a_summary(char_llama, tmp_path, capsys):
    code = run_finetune(_parse("--model", char_llama, "--method", "magnitude",
                               "--out", str(tmp_path / "run"), *QUICK))
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("magnitude on ") and "completed after 3/3 steps" in out
    assert "forgetting" in out and str(tmp_path / "run") in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["method"] == "magnitude" and summary["status"] == "completed"


def test_bad_values_raise_lift_error():
    with pytest.raises(LiftError, match="learning rate must be > 0"):
        run_finetune(_parse("--lr", "0", "--out", "x"))
    with pytest.raises(LiftError, match="steps must be"):
        run_finetune(_parse("--steps", "-1", "--out", "x"))


def test_malformed_data_is_one_line_through_the_main_cli(char_llama, tmp_path, capsys):
    cli = pytest.importorskip("lift_core.cli.main")
    data = tmp_path / "bad.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n\n{"instruction": "c"}\n')
    code = cli.main(["finetune", "--model", char_llama, "--train-data", str(data),
                     "--out", str(tmp_path / "run"), *QUICK])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "bad.jsonl, line 3" in err and "output" in err


def test_existing_out_dir_is_one_line_through_the_main_cli(char_llama, tmp_path, capsys):
    cli = pytest.importorskip("lift_core.cli.main")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    code = cli.main(["finetune", "--model", char_llama, "--out", str(run), *QUICK])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: output directory") and "\n" not in err
    assert (run / "metrics.jsonl").read_text() == '{"step": 1}\n'


@pytest.mark.skipif(not (REPO / "lift_core" / "__main__.py").exists(),
                    reason="python -m lift_core is not wired yet")
def test_python_m_lift_core_finetune_stops_cleanly_on_sigterm(char_llama, tmp_path):
    import signal
    import time

    run = tmp_path / "run"
    args = [sys.executable, "-m", "lift_core", "finetune", "--model", char_llama, "--out", str(run),
            "--steps", "100000", "--eval-every", "100000", "--eval-limit", "2", "--threads", "1",
            "--max-new-tokens", "2", "--batch-size", "2", "--no-progress"]
    child = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.2)
    while time.time() < deadline and (run / "metrics.jsonl").read_text().count("\n") < 3:
        time.sleep(0.2)  # wait for a couple of training steps
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=60)
    summary = json.loads((run / "summary.json").read_text())
    assert child.returncode == 1 and summary["status"] == "stopped", err
    assert summary["steps_done"] >= 1 and "stopped on request" in err
    assert out.startswith("lift on ") and "stopped after" in out


def _summary(**changes) -> dict:
    summary = {"method": "lift", "model": "builtin", "status": "completed", "steps": 20,
               "steps_done": 20, "wall_seconds": 9.0, "seconds_per_step": 0.1,
               "target_acc_before": 0.04, "source_acc_before": 0.96, "target_acc": 0.5,
               "source_acc": 0.9, "forgetting": 0.06, "eval_step": 20, "trainable_params": 10,
               "optimizer_state_bytes": 0, "peak_memory_bytes": 0, "budget_clipped_layers": 0}
    return {**summary, **changes}


def test_a_stopped_run_does_not_print_step_0_as_after():
    # Issue 9: stopped at step 7, the last evaluation was step 0's, printed as "after".
    text = summary_paragraph(_summary(status="stopped", steps_done=7, eval_step=0,
                                      target_acc=0.04, source_acc=0.96, forgetting=0.0))
    assert "stopped after 7/20 steps" in text
    assert "no evaluation after training (before: target accuracy 4.0%, source accuracy 96.0%)" in text
    assert "->" not in text and "forgetting" not in text


def test_a_failed_run_names_its_last_evaluation():
    text = summary_paragraph(_summary(status="failed", steps_done=15, eval_step=10))
    assert "last evaluation at step 10: target accuracy 4.0% -> 50.0%" in text


def test_a_completed_run_reads_as_before():
    text = summary_paragraph(_summary())
    assert "completed after 20/20 steps" in text and "last evaluation" not in text
    assert "target accuracy 4.0% -> 50.0%, source accuracy 96.0% -> 90.0% (forgetting +6.0 points)" in text


# --- options generated from FinetuneConfig ------------------------------------------------


def _options(parser_builder, command):
    parser = argparse.ArgumentParser(prog="lift")
    parser_builder(parser.add_subparsers(dest="command"))
    sub = parser._subparsers._group_actions[0].choices[command]
    return {action.dest: action for action in sub._actions}


def test_every_config_field_is_an_option_with_its_docstring_as_help():
    from dataclasses import fields

    from lift_core.train.options import field_docs

    options = _options(add_finetune_parser, "finetune")
    docs = field_docs(FinetuneConfig)
    for f in fields(FinetuneConfig):
        assert f.name in options, f"FinetuneConfig.{f.name} has no finetune option"
        assert docs[f.name] and options[f.name].help.replace("%%", "%").startswith(docs[f.name])
    assert options["max_length"].option_strings == ["--max-length"]
    assert options["out_dir"].option_strings == ["--out"] and options["out_dir"].required
    assert options["method"].choices == FinetuneConfig.choices()["method"]


def test_field_docstrings_are_read_from_the_class_source():
    from dataclasses import dataclass

    from lift_core.train.options import config_fields, field_docs

    assert field_docs(FinetuneConfig)["steps"] == "Optimizer steps."
    assert field_docs(FinetuneConfig)["lora_rank"].startswith("LoRA rank, and the budget")

    @dataclass
    class Undocumented:
        size: int = 1

    with pytest.raises(TypeError, match="Undocumented.size has no docstring"):
        config_fields(Undocumented)


def test_new_settings_reach_the_config():
    config = config_from_args(_parse("--max-length", "64", "--warmup-ratio", "0.1",
                                      "--eval-batch-size", "8", "--max-grad-norm", "0",
                                      "--trust-remote-code", "--out", "x"))
    assert (config.max_length, config.warmup_ratio, config.eval_batch_size) == (64, 0.1, 8)
    assert config.max_grad_norm == 0.0 and config.trust_remote_code is True


@pytest.mark.parametrize("settings", [
    {},
    {"method": "lora", "lr": 1.2345678e-4, "max_length": 64, "eval_limit": 3, "svd": "randomized",
     "warmup_ratio": 0.1, "overwrite": True, "trust_remote_code": True, "threads": 2},
])
def test_options_written_from_a_config_parse_back_to_it(settings):
    from lift_core.train.options import finetune_options

    config = FinetuneConfig(out_dir="x", **settings)
    argv = finetune_options(config)
    assert config_from_args(_parse(*argv)) == config
    assert len(argv) == sum(2 - isinstance(v, bool) for v in settings.values()) + 2  # + --out
