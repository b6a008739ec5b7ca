"""Faults in training and eval data (issue 9): bounded memory, one line, never a traceback.

Each test reproduced a defect before its fix: a huge record read whole and tokenized in
full (GBs of memory), prompts that fill max_length failing as a "lower the learning rate"
NaN, ``"output": null`` as a traceback, a UTF-8 BOM refused, a folder called missing,
and a giant eval prompt sent whole through the model.
"""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lift_core.errors import LiftError
from lift_core.runs.records import read_run
from lift_core.train.config import FinetuneConfig
from lift_core.train.loop import finetune
from lift_core.train.tasks import format_alpaca_prompt, load_examples

REPO = Path(__file__).resolve().parents[1]
GOOD = {"instruction": "What is 2+3?", "output": "2+3=5. #### 5"}


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _peak_rss_mb(code: str, imports: str = "from lift_core.train.tasks import load_examples") -> tuple:
    """Run ``code`` in a fresh interpreter: its peak RSS growth after ``imports`` (MB), stdout."""
    script = (f"import resource\n{imports}\n"
              "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              f"{code}\n"
              "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    *lines, last = done.stdout.strip().splitlines()
    return float(last), "\n".join(lines)


# --- reading data files ------------------------------------------------------------------


@pytest.mark.parametrize("content, where", [
    ('{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": null}\n', "line 2"),
    ('[{"instruction": null, "output": "b"}]', "record 1"),
])
def test_null_instruction_or_output_is_one_line_naming_file_and_place(tmp_path, content, where):
    path = tmp_path / "data.jsonl"
    path.write_text(content)
    with pytest.raises(LiftError) as info:
        load_examples(path)
    message = str(info.value)
    assert str(path) in message and where in message and "got null" in message
    assert "\n" not in message


@pytest.mark.parametrize("name, text", [
    ("bom.jsonl", json.dumps(GOOD) + "\n"),
    ("bom.json", json.dumps([GOOD])),
])
def test_utf8_file_with_a_bom_is_read(tmp_path, name, text):
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    [example] = load_examples(path)
    assert example.prompt == format_alpaca_prompt(GOOD["instruction"])
    assert example.answer == GOOD["output"]


def test_a_folder_given_as_a_data_file_is_called_a_folder(tmp_path):
    folder = tmp_path / "data.jsonl"
    folder.mkdir()
    with pytest.raises(LiftError, match="is a folder"):
        load_examples(folder)
    for field in ("train_data", "target_eval", "source_eval"):
        flag = field.replace("_", "-")
        with pytest.raises(LiftError, match=f"{flag} file .* is a folder, not a file"):
            FinetuneConfig(**{field: str(folder)})


def test_an_oversized_jsonl_record_is_refused_naming_file_and_line(tmp_path):
    from lift_core.train.tasks import MAX_RECORD_CHARS

    huge = {"instruction": "x" * (MAX_RECORD_CHARS + 1), "output": "1"}
    path = _jsonl(tmp_path / "big.jsonl", [GOOD, GOOD, huge, GOOD])
    with pytest.raises(LiftError) as info:
        load_examples(path)
    message = str(info.value)
    assert f"{path}, line 3" in message and f"{MAX_RECORD_CHARS:,} characters" in message
    assert "\n" not in message


def test_an_oversized_json_array_record_is_refused_naming_the_record(tmp_path):
    from lift_core.train.tasks import MAX_RECORD_CHARS

    path = tmp_path / "big.json"
    path.write_text(json.dumps([GOOD, {"instruction": "a", "input": "y" * MAX_RECORD_CHARS,
                                       "output": "1"}]))
    with pytest.raises(LiftError, match=r"big\.json, record 2: .* characters"):
        load_examples(path)


def test_a_50mb_line_is_refused_without_reading_it_whole(tmp_path):
    path = tmp_path / "huge.jsonl"
    with path.open("w") as handle:
        handle.write(json.dumps(GOOD) + "\n")
        handle.write('{"instruction": "' + "x" * 50_000_000 + '", "output": "1"}\n')
    growth, out = _peak_rss_mb(
        f"try:\n    load_examples({str(path)!r})\nexcept Exception as exc:\n    print(exc)")
    assert "line 2" in out and "characters" in out
    assert growth < 40, f"reading the data file grew the process by {growth:.0f} MB"


# --- training examples -------------------------------------------------------------------


def test_a_huge_prompt_is_tokenized_in_bounded_memory():
    # Before the fix the whole 2M-character prompt went through the tokenizer (~400 bytes
    # a character) and into a (batch, 2M) tensor: about 1.5 GB for one step's batch.
    growth, out = _peak_rss_mb(
        "examples = [Example('x' * 2_000_000, '1'), Example('Q: 1+1\\nA: ', '2')]\n"
        "batches = TrainBatches(examples, build_tokenizer(), batch_size=2, seed=0,"
        " max_length=64, device=torch.device('cpu'))\n"
        "print(tuple(batches.next()['input_ids'].shape), batches.dropped)",
        imports="import torch\ntorch.set_num_threads(1)\n"
                "from lift_core.models.builtin import build_tokenizer\n"
                "from lift_core.train.tasks import Example\n"
                "from lift_core.train.data import TrainBatches")
    assert out == "(2, 13) 1"  # <bos> + 10 + answer + <eos>; the 2M-character prompt is left out
    assert growth < 150, f"one batch grew the process by {growth:.0f} MB"


def _quick(model, **kwargs):
    settings = dict(model=model, method="lora", steps=2, eval_every=2, eval_limit=3,
                    max_new_tokens=3, batch_size=4, lora_rank=2, filter_rank=2, max_length=64)
    settings.update(kwargs)
    return FinetuneConfig(**settings)


def _records(n_long, n_fitting):
    long = {"instruction": "explain " * 20, "output": "#### 1"}  # > 64 characters of prompt
    return [long] * n_long + [{"instruction": f"{i}+1", "output": f"#### {i + 1}"}
                              for i in range(n_fitting)]


def test_prompts_that_fill_max_length_are_dropped_with_a_warning(char_llama, tmp_path, caplog):
    data = _jsonl(tmp_path / "train.jsonl", _records(n_long=3, n_fitting=5))
    logger = logging.getLogger("lift_core.train.data")  # its own handler: the CLI may stop
    logger.addHandler(caplog.handler)                 # propagation at "lift_core"
    try:
        summary = finetune(_quick(char_llama, train_data=str(data), out_dir=str(tmp_path / "run")),
                           progress=False)
    finally:
        logger.removeHandler(caplog.handler)
    assert summary["status"] == "completed"
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "3 of 8 training examples" in warning and "max_length (64 tokens)" in warning
    assert read_run(tmp_path / "run").config["data"] == {
        "train": 8, "train_dropped": 3, "target": 3, "source": 3}


def test_when_every_prompt_fills_max_length_the_run_is_refused(char_llama, tmp_path):
    # Before the fix: status "failed", "the loss became nan ... try a lower learning rate".
    data = _jsonl(tmp_path / "train.jsonl", _records(n_long=4, n_fitting=0))
    with pytest.raises(LiftError) as info:
        finetune(_quick(char_llama, train_data=str(data)), progress=False)
    message = str(info.value)
    assert "all 4 training examples" in message and "max_length (64 tokens)" in message
    assert "learning rate" not in message and "\n" not in message


# --- evaluation --------------------------------------------------------------------------


def test_a_giant_eval_prompt_keeps_memory_bounded(char_llama, tmp_path):
    # Before the fix the 300k-character prompt went whole through the model: attention over
    # 300k positions (terabytes), a RuntimeError traceback.
    giant = {"instruction": "y" * 300_000, "output": "#### 7"}
    data = _jsonl(tmp_path / "target.jsonl", [giant, {"instruction": "1+1", "output": "#### 2"}])
    summary = finetune(_quick(char_llama, target_eval=str(data)), progress=False)
    assert summary["status"] == "completed" and summary["target_acc"] is not None
