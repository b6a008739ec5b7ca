"""The analyze/layers CLI end to end, and its one-line errors."""

import os
import subprocess
import sys

import pandas as pd
import pytest

from lift_core.cli.main import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "lift_core", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_analyze_minilm_end_to_end(tmp_path):
    out, masks = tmp_path / "report.csv", tmp_path / "masks.safetensors"
    proc = _run("analyze", "--model", "minilm", "--lora-rank", "8", "--filter-rank", "8",
                "--out", str(out), "--save-masks", str(masks))
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(out)
    assert len(table) == 37
    assert {"layer", "out", "in", "k", "stable_rank", "energy_at_r",
            "jaccard_lift_vs_magnitude"} <= set(table.columns)
    assert masks.stat().st_size > 0
    assert "37 layers analyzed" in proc.stdout
    assert "layer/s" in proc.stderr or "layer" in proc.stderr  # the progress bar


def test_layers_command(capsys, tiny_llama_dir):
    assert main(["layers", "--model", str(tiny_llama_dir)]) == 0
    assert "q_proj" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "/no/such/dir"], "does not exist"),
        (["--model", "nobody/no-such-model-xyz"], "could not reach the Hugging Face hub"),
        (["--filter-rank", "0"], "filter rank must be"),
        (["--filter-rank", "500"], "exceeds min(out, in)"),
        (["--lora-rank", "0"], "budget (LoRA) rank"),
        (["--out", "/no/such/folder/report.csv"], "does not exist"),
    ],
)
def test_analyze_errors_are_one_line(capsys, args, message):
    assert main(["analyze", "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("error:") and "\n" not in err


def test_errors_from_a_subprocess_have_no_traceback():
    proc = _run("analyze", "--model", "/no/such/dir")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "does not exist" in proc.stderr


def test_bad_svd_choice_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["analyze", "--svd", "fast"])
    assert info.value.code == 2
