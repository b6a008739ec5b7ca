"""Checkpoints load in their own dtype (or the one asked for); LIFT trains bf16 weights with
fp32 masks and moments, and changes nothing outside its masks (issue 15 item 2)."""

import pytest
import torch

from lift_core.errors import LiftError
from lift_core.models.loading import load_model
from lift_core.train.config import FinetuneConfig


@pytest.fixture(scope="module")
def bf16_llama(tmp_path_factory):
    """A random 2-block Llama with the built-in tokenizer, saved in bfloat16."""
    from transformers import LlamaForCausalLM

    from lift_core.models.builtin import BuiltinRecipe, build_config, build_tokenizer

    path = tmp_path_factory.mktemp("bf16_llama")
    tokenizer = build_tokenizer()
    recipe = BuiltinRecipe(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48)
    torch.manual_seed(0)
    LlamaForCausalLM(build_config(recipe, tokenizer)).to(torch.bfloat16).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def _dtypes(model) -> set:
    return {p.dtype for p in model.parameters()}


def test_auto_keeps_the_checkpoint_dtype_and_a_named_dtype_is_used(bf16_llama):
    assert _dtypes(load_model(bf16_llama, dtype="auto")) == {torch.bfloat16}
    assert _dtypes(load_model(bf16_llama, dtype="float32")) == {torch.float32}
    assert _dtypes(load_model(bf16_llama)) == {torch.float32}  # analysis: fp32 as before
    assert _dtypes(load_model("builtin", dtype="auto")) == {torch.float32}  # an fp32 checkpoint


def test_unknown_dtype_is_one_line():
    with pytest.raises(LiftError, match=r"unknown dtype 'fp8' \(allowed: auto, float32, bfloat16, float16\)"):
        FinetuneConfig(dtype="fp8")


def test_dtype_is_a_finetune_option():
    from lift_core.cli.main import build_parser

    args = build_parser().parse_args(["finetune", "--dtype", "bfloat16", "--out", "unused"])
    assert args.dtype == "bfloat16"


def test_lift_trains_bf16_weights_with_fp32_moments_inside_its_masks(bf16_llama):
    from lift_core.train.trainer import Trainer

    config = FinetuneConfig(model=bf16_llama, method="lift", steps=3, batch_size=4,
                            train_examples=16, lora_rank=2, filter_rank=2, lr=1e-2,
                            update_interval=100, device="cpu")
    trainer = Trainer(config).setup()
    model, optimizer = trainer.unwrapped_model, trainer.optimizer
    assert _dtypes(model) == {torch.bfloat16}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(3):
        assert torch.isfinite(torch.tensor(trainer.step()["loss"]))
    trainer.close()
    changed = 0
    for name, p in model.named_parameters():
        assert p.dtype == torch.bfloat16
        moved = p.detach() != before[name]
        if p in optimizer.state and "indices" in optimizer.state[p]:
            state = optimizer.state[p]
            assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32
            assert not (moved & ~optimizer.mask_of(p)).any()  # nothing outside the mask
            changed += int(moved.sum())
        else:
            assert not moved.any(), name  # not trained at all
    assert changed > 0


def test_memory_estimate_counts_bf16_weights_at_two_bytes(bf16_llama):
    from lift_core.models.preflight import check_training_fits

    cpu = torch.device("cpu")
    auto = check_training_fits(FinetuneConfig(model=bf16_llama, method="full"), cpu)
    fp32 = check_training_fits(FinetuneConfig(model=bf16_llama, method="full", dtype="float32"), cpu)
    params = sum(p.numel() for p in load_model(bf16_llama).parameters())
    assert auto.model_bytes == 2 * params and fp32.model_bytes == 4 * params
    assert auto.optimizer_bytes == fp32.optimizer_bytes  # fp32 moments either way
    assert auto.gradient_bytes * 2 == fp32.gradient_bytes  # full: gradients in bf16
