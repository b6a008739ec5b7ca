"""Checks before loading: output locations that cannot be written, runs that cannot fit."""

import os
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lift_core.errors import LiftError
from lift_core.models.loading import meta_model
from lift_core.models.preflight import (
    check_output_dir,
    check_output_file,
    check_training_fits,
    estimate_training_memory,
)
from lift_core.train.config import FinetuneConfig
from lift_core.train.methods import METHODS, setup_method

_CONFIG = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                      architectures=["LlamaForCausalLM"])


def _one_line_error(check, *args) -> str:
    with pytest.raises(LiftError) as info:
        check(*args)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("out, words", [
    ("", "is empty"),
    ("   ", "is empty"),
    ("/proc/x", "cannot create output folder /proc/x"),
    ("/proc/x/deeper", "cannot create output folder /proc/x/deeper"),
    ("/sys/x", "cannot create output folder /sys/x"),
])
def test_output_dirs_that_cannot_be_made_are_refused(out, words):
    assert words in _one_line_error(check_output_dir, out)


def test_output_dir_under_a_file_is_refused(tmp_path):
    (tmp_path / "some_file").write_text("x")
    message = _one_line_error(check_output_dir, str(tmp_path / "some_file" / "sub"))
    assert "some_file is a file" in message
    assert "is a file, not a folder" in _one_line_error(check_output_dir, tmp_path / "some_file")


def test_a_writable_new_folder_passes_and_nothing_is_left_behind(tmp_path):
    check_output_dir(tmp_path / "runs" / "a" / "b")
    check_output_dir(tmp_path)  # existing, writable
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_folder_is_refused(tmp_path):
    tmp_path.chmod(0o500)
    try:
        assert "permission denied" in _one_line_error(check_output_dir, tmp_path / "new")
    finally:
        tmp_path.chmod(0o700)


@pytest.mark.parametrize("out, words", [
    ("/proc/x.csv", "cannot write /proc/x.csv"),
    ("/proc/m.safetensors", "cannot write /proc/m.safetensors"),
    ("/no/such/folder/report.csv", "does not exist"),
    ("", "is empty"),
])
def test_output_files_that_cannot_be_written_are_refused(out, words):
    assert words in _one_line_error(check_output_file, out)


def test_output_file_checks_leave_nothing_behind(tmp_path):
    check_output_file(tmp_path / "report.csv")
    assert list(tmp_path.iterdir()) == []
    assert "it is a folder" in _one_line_error(check_output_file, tmp_path)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("lora_rank", [2, 100000])
def test_estimate_counts_what_setup_method_trains(method, lora_rank):
    estimate = estimate_training_memory(meta_model(_CONFIG), method, lora_rank)
    torch.manual_seed(0)
    setup = setup_method(LlamaForCausalLM(_CONFIG), method, lr=1e-3, lora_rank=lora_rank,
                         filter_rank=2, update_interval=10)
    assert estimate.trainable_params == setup.trainable_params
    model_params = sum(p.numel() for p in LlamaForCausalLM(_CONFIG).parameters())
    assert estimate.model_bytes == 4 * model_params
    ids = torch.randint(0, 40, (2, 8))
    setup.model(input_ids=ids, labels=ids).loss.backward()
    setup.optimizer.step()
    assert setup.optimizer.state_bytes() == estimate.optimizer_bytes


def test_full_fine_tuning_is_estimated_above_the_sparse_methods():
    model = meta_model(_CONFIG)
    full, lift = (estimate_training_memory(model, m, 2) for m in ("full", "lift"))
    assert full.gradient_bytes > lift.gradient_bytes
    assert full.optimizer_bytes > lift.optimizer_bytes


@pytest.mark.parametrize("method, copies", [("lora", 0), ("pissa", 3), ("dora", 2)])
def test_every_lora_family_method_counts_its_adapter_weights(method, copies):
    assert method in METHODS  # so the exact-match test above covers it too
    estimate = estimate_training_memory(meta_model(_CONFIG), method, 2)
    setup = setup_method(LlamaForCausalLM(_CONFIG), method, lr=1e-3, lora_rank=2,
                         filter_rank=2, update_interval=10)
    adapters = [p for p in setup.model.parameters() if p.requires_grad]  # A, B (DoRA: magnitude)
    assert estimate.trainable_bytes == sum(p.numel() * p.element_size() for p in adapters)
    assert estimate.gradient_bytes == estimate.trainable_bytes
    largest = max(row["shape"][0] * row["shape"][1] for row in setup.layers)
    assert estimate.transient_bytes == copies * 4 * largest  # PiSSA's SVD, DoRA's W + BA


def test_a_run_that_cannot_fit_is_refused_in_one_line(tiny_llama_dir, monkeypatch):
    config = FinetuneConfig(model=str(tiny_llama_dir), method="full")
    cpu = torch.device("cpu")
    assert check_training_fits(config, cpu).total_bytes > 0
    monkeypatch.setattr("lift_core.models.loading.available_memory_bytes", lambda: 200_000)
    message = _one_line_error(check_training_fits, config, cpu)
    assert message.startswith(f"full on {tiny_llama_dir} needs about ")
    assert "optimizer state" in message and "gradients" in message and "free on cpu" in message


def test_filter_rank_too_large_is_refused_before_loading(tiny_llama_dir):
    config = FinetuneConfig(model=str(tiny_llama_dir), method="lift", filter_rank=64)
    assert "filter rank 64 exceeds" in _one_line_error(check_training_fits, config,
                                                       torch.device("cpu"))


def test_an_encoder_is_left_to_the_loader(tiny_bert_dir):
    assert check_training_fits(FinetuneConfig(model=str(tiny_bert_dir)), torch.device("cpu")) is None
