"""Careless input through the real CLI: one ``error:`` line before anything loads, or a clean run.

Each case is one of issue 9's defects (sections 1, 4 and 5), reproduced first: bad output
locations found only after the model was set up or the whole analysis ran, a LoRA rank
that built a thousand times more numbers than the model has, a run that cannot fit in
memory, a model with its own code that made transformers ask on stdin, and model folders
outside the operator's allowed roots.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lift_core.cli.main import main
from lift_core.models.builtin import ensure_builtin_model

REPO = Path(__file__).resolve().parents[1]
# The issue's `F`, cut to what a test needs: the built-in model, two steps, tiny evaluations.
F = ["finetune", "--steps", "2", "--eval-every", "10", "--eval-limit", "2", "--batch-size", "4",
     "--max-new-tokens", "2", "--train-examples", "20", "--no-progress"]


@pytest.fixture
def nothing_loads(monkeypatch):
    """Fail the test if any model weights are loaded."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded although the input was bad")

    monkeypatch.setattr("lift_core.models.loading.load_model", refuse)


def _one_error_line(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


# --- output locations, checked before anything loads ------------------------------------


@pytest.mark.parametrize("out, words", [
    ("", "the output folder is empty"),
    ("/proc/x", "cannot create output folder /proc/x: nothing can be created in /proc"),
    ("/sys/x", "cannot create output folder /sys/x: nothing can be created in /sys"),
])
def test_finetune_out_that_cannot_be_made(capsys, nothing_loads, out, words):
    assert words in _one_error_line(capsys, main([*F, "--out", out]))


def test_finetune_out_under_a_file(capsys, nothing_loads, tmp_path):
    (tmp_path / "some_file").write_text("x")
    err = _one_error_line(capsys, main([*F, "--out", str(tmp_path / "some_file" / "sub")]))
    assert "some_file is a file" in err


def test_compare_out_empty_is_refused(capsys, nothing_loads):
    err = _one_error_line(capsys, main(["compare", "--methods", "lift", "--out", ""]))
    assert "the output folder is empty" in err


@pytest.mark.parametrize("extra", [["--out", "/proc/x.csv"],
                                   ["--save-masks", "/proc/m.safetensors"]])
def test_analyze_outputs_are_tried_before_the_analysis(capsys, nothing_loads, tmp_path, extra):
    args = ["analyze", "--model", "builtin", "--no-progress", "--out", str(tmp_path / "r.csv"), *extra]
    err = _one_error_line(capsys, main(args))
    assert "cannot write /proc/" in err and "nothing can be created in /proc" in err
    assert not (tmp_path / "r.csv").exists()


# --- memory: the LoRA budget rule, and runs that cannot fit ------------------------------


def test_lora_rank_100000_is_clipped_and_said_so(capsys, tmp_path):
    run = tmp_path / "run"
    assert main([*F, "--method", "lora", "--lora-rank", "100000", "--out", str(run)]) == 0
    captured = capsys.readouterr()
    budget = json.loads((run / "config.json").read_text())["budget"]
    # Before: 985.6M trainable numbers on the 0.8M model, trainable_fraction 1227.7.
    assert budget["trainable_params"] <= budget["block_linear_entries"]
    assert budget["trainable_fraction"] <= 1
    assert len(budget["clipped_layers"]) == len(budget["layers"]) == 28
    assert all(row["lora_rank"] == row["shape"][0] * row["shape"][1] // sum(row["shape"])
               for row in budget["layers"])
    assert "warning: LoRA rank 100000 exceeds m*n/(m+n) in 28 of 28 layers" in captured.err
    assert "the LoRA rank exceeded m*n/(m+n)" in captured.out


def test_a_run_that_cannot_fit_is_refused_before_loading(capsys, nothing_loads, tmp_path,
                                                          monkeypatch):
    monkeypatch.setattr("lift_core.models.loading.available_memory_bytes", lambda: 8 * 2**20)
    err = _one_error_line(capsys, main([*F, "--method", "full", "--out", str(tmp_path / "run")]))
    assert err.startswith("error: full on builtin needs about ") and "free on cpu" in err
    assert not (tmp_path / "run").exists()


# --- models: remote code without a prompt, missing tokenizer, allowed roots ----------------


@pytest.fixture(scope="module")
def remote_code_model(tmp_path_factory) -> Path:
    """The built-in model re-declared as a model with its own code (auto_map), all local."""
    path = tmp_path_factory.mktemp("remote") / "tiny-remote"
    shutil.copytree(ensure_builtin_model(), path)
    (path / "configuration_tiny.py").write_text(
        "from transformers import LlamaConfig\n\n\n"
        "class TinyRemoteConfig(LlamaConfig):\n    model_type = 'tiny-remote'\n")
    (path / "modeling_tiny.py").write_text(
        "from transformers import LlamaForCausalLM\n\n"
        "from .configuration_tiny import TinyRemoteConfig\n\n\n"
        "class TinyRemoteForCausalLM(LlamaForCausalLM):\n    config_class = TinyRemoteConfig\n")
    config = json.loads((path / "config.json").read_text())
    config.update(model_type="tiny-remote", architectures=["TinyRemoteForCausalLM"],
                  auto_map={"AutoConfig": "configuration_tiny.TinyRemoteConfig",
                            "AutoModelForCausalLM": "modeling_tiny.TinyRemoteForCausalLM"})
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_trust_remote_code_runs_with_no_stdin(remote_code_model, tmp_path):
    # Before: estimate_parameters built the model without the flag, transformers asked on
    # stdin and the command died with a traceback (the app's jobs have no stdin).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run(
        [sys.executable, "-m", "lift_core", *F, "--steps", "1", "--threads", "1",
         "--model", str(remote_code_model), "--trust-remote-code", "--out", str(tmp_path / "run")],
        cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "completed after 1/1 steps" in proc.stdout


def test_remote_code_without_the_flag_is_one_line(capsys, remote_code_model):
    err = _one_error_line(capsys, main(["layers", "--model", str(remote_code_model)]))
    assert "opt in with --trust-remote-code" in err


def test_missing_tokenizer_is_one_complete_line(capsys, tmp_path):
    model = tmp_path / "no-tokenizer"
    model.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(ensure_builtin_model() / name, model / name)
    err = _one_error_line(capsys, main([*F, "--model", str(model), "--out", str(tmp_path / "run")]))
    assert err == (f"error: {model} has no tokenizer (no tokenizer.json, tokenizer_config.json or "
                   "vocabulary file); save the model's tokenizer there with "
                   "tokenizer.save_pretrained(...)")


def test_model_roots_refuse_outside_paths_alike(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("LIFT_MODEL_ROOTS", str(tmp_path))
    existing, missing = str(ensure_builtin_model()), "/no/such/model"
    errors = [_one_error_line(capsys, main(["layers", "--model", name])) for name in (existing, missing)]
    assert [e.replace(name, "<path>") for e, name in zip(errors, (existing, missing))] == [
        "error: model path <path> is outside the allowed model folders (LIFT_MODEL_ROOTS); use "
        "a directory under them, an embedded model or a hub id"] * 2
    assert main(["layers", "--model", "builtin"]) == 0  # embedded models stay allowed


def test_the_app_model_box_does_not_reveal_paths_outside_the_roots(monkeypatch, tmp_path):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LIFT_MODEL_ROOTS", str(tmp_path))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.run()
    at.selectbox(key="_w_model").set_value("other…").run()
    shown = []
    for name in (str(ensure_builtin_model()), "/no/such/model"):
        at.text_input(key="_w_model_text").input(name).run()
        assert not at.exception
        shown.append([e.value.replace(name, "<path>") for e in at.sidebar.error])
    assert shown[0] == shown[1] == [
        "model path <path> is outside the allowed model folders (LIFT_MODEL_ROOTS); use a "
        "directory under them, an embedded model or a hub id"]
    assert any(str(tmp_path) in c.value for c in at.sidebar.caption)


def test_the_app_listens_only_on_this_machine_by_default():
    import tomllib

    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"  # before: every address (*:8501)
