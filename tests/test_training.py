"""finetune(): the run record, stopping, failures, and every bad-input message."""

import json
import threading

import pytest
import torch

from tests.tiny_models import save_char_llama

from lift_core.errors import LiftError
from lift_core.runs.records import read_run
from lift_core.train.config import FinetuneConfig
from lift_core.train.loop import finetune
from lift_core.train.trainer import linear_schedule

SUMMARY_FIELDS = {
    "method", "status", "error", "target_acc", "source_acc", "target_acc_before",
    "source_acc_before", "forgetting", "trainable_params", "optimizer_state_bytes",
    "peak_memory_bytes", "peak_memory_measure", "wall_seconds", "steps_done", "seconds_per_step",
}


def _config(model, out=None, **kwargs):
    settings = dict(model=model, steps=4, eval_every=2, eval_limit=6, max_new_tokens=4,
                    batch_size=4, train_examples=40, update_interval=2, lora_rank=2,
                    filter_rank=2, out_dir=str(out) if out else None)
    settings.update(kwargs)
    return FinetuneConfig(**settings)


def test_run_record_has_config_metrics_and_summary(char_llama, tmp_path):
    summary = finetune(_config(char_llama, tmp_path / "run"), progress=False)
    record = read_run(tmp_path / "run")
    assert summary["status"] == "completed" and summary["steps_done"] == 4
    assert SUMMARY_FIELDS <= set(summary) and record.summary == summary
    assert record.config["lr_used"] == summary["lr_used"] > 0
    assert {"versions", "device_used", "budget"} <= set(record.config)
    assert record.config["budget"]["trainable_params"] == summary["trainable_params"]
    metrics = record.metrics
    assert metrics["step"].tolist() == [0, 1, 2, 3, 4]
    assert metrics.dropna(subset=["target_acc"])["step"].tolist() == [0, 2, 4]
    assert {"loss", "lr", "elapsed", "mask_churn"} <= set(metrics.columns)
    assert metrics["mask_churn"].notna().sum() == 2  # refreshes at steps 2 and 4
    assert summary["forgetting"] == pytest.approx(
        summary["source_acc_before"] - summary["source_acc"])
    assert summary["optimizer_state_bytes"] > 0 and summary["peak_memory_bytes"] > 0


def test_callbacks_get_every_row_and_the_summary(char_llama):
    rows, ends = [], []

    class Watcher:
        def on_metrics(self, row):
            rows.append(row)

        def on_end(self, summary):
            ends.append(summary)

    plain = []
    finetune(_config(char_llama, method="lora"), callbacks=[Watcher(), plain.append])
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4] and rows == plain
    assert ends[0]["status"] == "completed"


def test_stop_event_stops_with_the_record_intact(char_llama, tmp_path):
    stop = threading.Event()

    def stop_after_two(row):
        if row["step"] == 2:
            stop.set()

    summary = finetune(_config(char_llama, tmp_path / "run", steps=10), callbacks=stop_after_two,
                       stop_event=stop)
    record = read_run(tmp_path / "run")
    assert summary["status"] == "stopped" and summary["steps_done"] == 2
    assert record.summary["status"] == "stopped"
    assert record.metrics["step"].max() == 2
    assert summary["eval_step"] == 2  # no extra final evaluation after a stop


def test_nan_loss_fails_with_a_message(tmp_path):
    model = save_char_llama(tmp_path / "nan_model", poison=True)
    summary = finetune(_config(model, tmp_path / "run", method="full"))
    assert summary["status"] == "failed" and "loss became nan at step 1" in summary["error"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"


def test_out_of_memory_fails_with_a_clear_message(char_llama, tmp_path):
    def exhaust(row):
        if row["step"] == 1:
            raise MemoryError()

    summary = finetune(_config(char_llama, tmp_path / "run"), callbacks=exhaust)
    assert summary["status"] == "failed" and "out of memory on cpu" in summary["error"]


def test_a_bug_in_a_callback_is_recorded_and_raised(char_llama, tmp_path):
    def broken(row):
        raise KeyError("boom")

    with pytest.raises(KeyError):
        finetune(_config(char_llama, tmp_path / "run"), callbacks=broken)
    assert read_run(tmp_path / "run").summary["status"] == "failed"


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "galore"}, "unknown method 'galore' \\(allowed: lift, full, lora"),
    ({"lr": 0}, "learning rate must be > 0"),
    ({"lr": -1e-3}, "learning rate must be > 0"),
    ({"steps": 0}, "steps must be a whole number >= 1"),
    ({"device": "tpu"}, "unknown device 'tpu'"),
    ({"svd": "fast"}, "unknown svd"),
    ({"train_data": "/no/such/file.jsonl"}, "train-data file /no/such/file.jsonl does not exist"),
])
def test_bad_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(LiftError, match=message) as info:
        FinetuneConfig(**kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_a_gpu_says_so():
    with pytest.raises(LiftError, match="no CUDA GPU is available"):
        FinetuneConfig(device="cuda")


def test_malformed_data_file_names_the_line(char_llama, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"instruction": "1+1", "output": "2"}\n{"instruction": "2+2", "output": \n')
    with pytest.raises(LiftError, match="train.jsonl, line 2: malformed JSON"):
        finetune(_config(char_llama, tmp_path / "run", train_data=str(data)))
    assert not (tmp_path / "run").exists()  # nothing written for a run that never started


def test_encoder_only_model_cannot_be_fine_tuned(tmp_path):
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=4, max_position_embeddings=64)
    BertModel(config).save_pretrained(tmp_path / "bert")
    with pytest.raises(LiftError, match="can be explored but not fine-tuned"):
        finetune(_config(str(tmp_path / "bert")))


def test_existing_run_directory_is_never_overwritten_by_default(char_llama, tmp_path):
    finetune(_config(char_llama, tmp_path / "run", steps=1, eval_every=1))
    before = (tmp_path / "run" / "summary.json").read_text()
    with pytest.raises(LiftError, match="not empty"):
        finetune(_config(char_llama, tmp_path / "run", steps=1))
    assert (tmp_path / "run" / "summary.json").read_text() == before
    again = finetune(_config(char_llama, tmp_path / "run", steps=1, overwrite=True))
    assert again["status"] == "completed"


def test_linear_schedule_warms_up_then_decays_to_zero():
    factor = linear_schedule(warmup_steps=2, total_steps=10)
    assert [round(factor(s), 3) for s in (0, 1, 2, 6, 10)] == [0.5, 1.0, 1.0, 0.5, 0.0]


def test_a_stop_before_the_first_evaluation_ends_at_once(char_llama, tmp_path):
    stop = threading.Event()
    stop.set()
    summary = finetune(_config(char_llama, tmp_path / "run"), stop_event=stop)
    assert summary["status"] == "stopped" and summary["steps_done"] == 0
    assert summary["target_acc"] is None and read_run(tmp_path / "run").summary == summary


def test_clipped_budget_is_noted(char_llama, tmp_path):
    summary = finetune(_config(char_llama, tmp_path / "run", steps=1, lora_rank=20,
                               method="random"))
    config = read_run(tmp_path / "run").config
    assert summary["budget_clipped_layers"] == len(config["budget"]["clipped_layers"]) > 0


def test_each_evaluation_keeps_three_target_and_source_answers(char_llama, tmp_path):
    finetune(_config(char_llama, tmp_path / "run", eval_limit=3), progress=False)
    from lift_ui.run_data import read_generations

    evals = read_run(tmp_path / "run").metrics.dropna(subset=["target_acc"])
    kept_at = read_generations(tmp_path / "run").set_index("step")["generations"]
    assert kept_at.index.tolist() == evals["step"].tolist() == [0, 2, 4]
    for _, row in evals.iterrows():
        kept = kept_at[row["step"]]
        assert [g["task"] for g in kept] == ["target"] * 3 + ["source"] * 3
        assert {"prompt", "answer", "gold", "correct"} <= set(kept[0])
        # all 3 prompts of each set are kept here, so the scored answers give the accuracy
        for task in ("target", "source"):
            hits = [g["correct"] for g in kept if g["task"] == task]
            assert row[f"{task}_acc"] == pytest.approx(sum(hits) / 3)


def test_evaluations_record_their_batches_in_progress_json(char_llama, tmp_path, monkeypatch):
    from lift_core.train import run_files

    written = []

    def spy(path, obj, **kwargs):  # the real write, and a copy of each state
        written.append(dict(obj))
        return write_json(path, obj, **kwargs)

    write_json = run_files.write_json
    monkeypatch.setattr(run_files, "write_json", spy)
    finetune(_config(char_llama, tmp_path / "run", eval_limit=3, eval_batch_size=2), progress=False)
    first = [(p["phase"], p.get("done"), p.get("total")) for p in written if p["step"] == 0]
    # 2 batches of 2 prompts per eval set: the bar moves batch by batch, then training starts
    assert first == [("evaluating before training", d, 4) for d in range(4)] + [("training", None, None)]
    assert [p["phase"] for p in written if p["step"] == 4][-1] == "training"
    assert {p["phase"] for p in written if p["step"] == 2} == {"evaluating", "training"}
    assert json.loads((tmp_path / "run" / "progress.json").read_text())["phase"] == "training"
