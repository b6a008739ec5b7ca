"""Each method trains exactly what it should, at a budget matched to LoRA."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lift_core.errors import LiftError
from lift_core.lowrank.masks import lora_budget
from lift_core.train.methods import (
    DEFAULT_LRS,
    METHODS,
    SPARSE_METHODS,
    block_linear_names,
    check_method,
    default_lr,
    setup_method,
)


def _tiny_llama() -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def _train_a_few_steps(method: str, **kwargs):
    model = _tiny_llama()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    setup = setup_method(model, method, lr=1e-2, lora_rank=2, filter_rank=2,
                         update_interval=kwargs.pop("update_interval", 1000), **kwargs)
    ids = torch.randint(0, 40, (4, 12), generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        setup.model(input_ids=ids, labels=ids).loss.backward()
        setup.optimizer.step()
        setup.optimizer.zero_grad()
    return model, before, setup


def _changed(model, before) -> dict:
    return {n: ~torch.isclose(p.detach(), before[n], rtol=0, atol=0) for n, p in
            model.named_parameters() if n in before}


def test_check_method_lists_the_allowed_methods():
    with pytest.raises(LiftError, match="unknown method 'galore'.*lift, full, lora"):
        check_method("galore")


def test_default_lrs_follow_the_paper_sparse_and_lora_above_full():
    assert set(DEFAULT_LRS) == set(METHODS)
    for method in ("lift", "lora", "magnitude", "random", "lift_smallest"):
        assert default_lr(method) > default_lr("full") > 0


@pytest.mark.parametrize("method", SPARSE_METHODS)
def test_sparse_methods_change_only_masked_block_entries(method):
    model, before, setup = _train_a_few_steps(method)
    linears = {f"{n}.weight" for n in block_linear_names(model)}
    for name, diff in _changed(model, before).items():
        if name in linears:
            param = model.get_parameter(name)
            mask = setup.optimizer.mask_of(param)
            assert not diff[~mask].any(), f"{name} changed outside its mask"
            assert diff[mask].float().mean() > 0.5, f"{name} barely trained"
        else:
            assert not diff.any(), f"{name} should be frozen"
    expected = sum(lora_budget(model.get_parameter(n).shape, 2) for n in linears)
    assert setup.trainable_params == expected


def test_full_changes_every_block_linear_and_nothing_else():
    model, before, setup = _train_a_few_steps("full")
    linears = {f"{n}.weight" for n in block_linear_names(model)}
    for name, diff in _changed(model, before).items():
        if name in linears:
            assert diff.float().mean() > 0.9, f"{name} did not train"
        else:
            assert not diff.any(), f"{name} should be frozen"  # embeddings, lm_head, norms
    assert setup.trainable_params == sum(model.get_parameter(n).numel() for n in linears)


def test_lora_is_peft_and_leaves_the_base_weights_alone():
    from peft import PeftModel

    names = block_linear_names(_tiny_llama())
    model, before, setup = _train_a_few_steps("lora")
    assert isinstance(setup.model, PeftModel)
    for name, param in setup.model.named_parameters():
        base = name.removeprefix("base_model.model.").replace(".base_layer", "")
        if "lora_" in name:
            assert param.requires_grad
        else:
            assert torch.equal(param.detach(), before[base]), f"{name} changed"
    lora_b = [p for n, p in setup.model.named_parameters() if "lora_B" in n]
    assert all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero, so it has trained
    shapes = [before[f"{n}.weight"].shape for n in names]
    assert len(lora_b) == len(names)  # one adapter per block linear, none on lm_head
    assert setup.trainable_params == sum((m + n) * 2 for m, n in shapes)


def test_budget_is_clipped_to_the_whole_matrix_and_noted():
    model = _tiny_llama()
    setup = setup_method(model, "magnitude", lr=1e-3, lora_rank=40, filter_rank=2,
                         update_interval=10)
    assert len(setup.clipped_layers) == len(block_linear_names(model))
    assert all(row["k"] == row["shape"][0] * row["shape"][1] for row in setup.layers)


def test_filter_rank_larger_than_a_matrix_is_a_clear_error():
    with pytest.raises(LiftError, match="filter rank 64 exceeds the rank of model.layers.0"):
        setup_method(_tiny_llama(), "lift", lr=1e-3, lora_rank=2, filter_rank=64,
                     update_interval=10)


def test_mask_refresh_reports_churn():
    _, _, setup = _train_a_few_steps("lift", update_interval=1)
    events = setup.optimizer.pop_refresh_events()
    assert events and all(0 <= e["changed_fraction"] <= 1 for e in events)


@pytest.mark.parametrize("method", ["lift", "lora"])
def test_gpt2_conv1d_layers_train_too(method):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=40, n_embd=32, n_layer=1, n_head=4,
                                       n_positions=32))
    linears = {f"{n}.weight" for n in block_linear_names(model)}
    # Keep the parameter objects: peft renames them (".base_layer") when it wraps the model.
    before = [(n, p, p.detach().clone()) for n, p in model.named_parameters()]
    setup = setup_method(model, method, lr=1e-2, lora_rank=2, filter_rank=2, update_interval=100)
    ids = torch.randint(0, 40, (2, 8))
    setup.model(input_ids=ids, labels=ids).loss.backward()
    setup.optimizer.step()
    moved = {n for n, p, old in before if not torch.equal(p.detach(), old)}
    if method == "lift":
        assert moved == linears
    else:
        assert not moved  # LoRA B starts at zero and the base stays frozen
        assert setup.model.peft_config["default"].fan_in_fan_out


def test_lora_rank_above_the_budget_is_clipped_per_layer():
    # Issue 9: --lora-rank 100000 on the 0.8M built-in model built 985.6M trainable numbers.
    model = _tiny_llama()
    shapes = {n: tuple(model.get_submodule(n).weight.shape) for n in block_linear_names(model)}
    setup = setup_method(model, "lora", lr=1e-2, lora_rank=100000, filter_rank=2,
                         update_interval=10)
    entries = sum(m * n for m, n in shapes.values())
    assert setup.trainable_params <= entries
    assert setup.clipped_layers == list(shapes)
    for row in setup.layers:
        m, n = row["shape"]
        assert row["lora_rank"] == m * n // (m + n)
        assert row["k"] == (m + n) * row["lora_rank"] <= m * n
    for name, (m, n) in shapes.items():
        module = setup.model.get_submodule(f"base_model.model.{name}")
        rank = m * n // (m + n)
        assert module.lora_A["default"].weight.shape == (rank, n)
        assert module.scaling["default"] == 2.0  # alpha = 2 * rank in every layer
    assert setup.trainable_params == sum(row["k"] for row in setup.layers)


def test_lora_rank_within_the_budget_is_not_clipped():
    setup = setup_method(_tiny_llama(), "lora", lr=1e-2, lora_rank=3, filter_rank=2,
                         update_interval=10)
    assert not setup.clipped_layers
    assert all(row["lora_rank"] == 3 for row in setup.layers)


def _adapter_changes(method: str, **kwargs):
    """Train ``method`` 3 steps: (setup, weights before, weights as wrapped, names that moved)."""
    torch.manual_seed(0)
    original = _tiny_llama()
    ids = torch.randint(0, 40, (4, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits_before = original(input_ids=ids).logits
    weights = {n: p.detach().clone() for n, p in original.named_parameters()}
    setup = setup_method(original, method, lr=1e-2, lora_rank=2, filter_rank=2,
                         update_interval=100, **kwargs)
    with torch.no_grad():  # the wrapped model starts as the same function as the original
        assert torch.allclose(setup.model(input_ids=ids).logits, logits_before, atol=1e-5)
    wrapped = {n: p.detach().clone() for n, p in setup.model.named_parameters()}
    for _ in range(3):
        setup.model(input_ids=ids, labels=ids).loss.backward()
        setup.optimizer.step()
        setup.optimizer.zero_grad()
    moved = {n for n, p in setup.model.named_parameters() if not torch.equal(p.detach(), wrapped[n])}
    return setup, weights, wrapped, moved


@pytest.mark.parametrize("method", ["pissa", "dora"])
def test_pissa_and_dora_train_only_their_adapters(method):
    setup, _, wrapped, moved = _adapter_changes(method)
    adapters = {n for n in wrapped if "lora_" in n}
    assert moved and moved <= adapters  # base weights, embeddings, norms, lm_head stay put
    assert {n for n, p in setup.model.named_parameters() if p.requires_grad} == adapters
    assert not any("lm_head" in n or "embed" in n for n in adapters)  # only block linears
    assert setup.trainable_params == sum(wrapped[n].numel() for n in adapters)
    assert setup.optimizer.state_bytes() == 8 * setup.trainable_params  # two fp32 moments


def test_dora_adds_a_trained_magnitude_per_output_row():
    setup, _, wrapped, moved = _adapter_changes("dora")
    magnitudes = {n: wrapped[n] for n in wrapped if "lora_magnitude_vector" in n}
    assert len(magnitudes) == len(setup.layers) and moved & set(magnitudes)
    for row, (name, vector) in zip(setup.layers, magnitudes.items()):
        m, n = row["shape"]
        assert vector.shape == (m,) and row["k"] == (m + n) * 2 + m


@pytest.mark.parametrize("svd, init", [("exact", "pissa"), ("randomized", "pissa_niter_4")])
def test_pissa_starts_from_the_principal_factors_and_keeps_the_residual_frozen(svd, init):
    setup, original, wrapped, moved = _adapter_changes("pissa", svd=svd)
    assert setup.model.peft_config["default"].init_lora_weights == init
    for row in setup.layers:
        prefix = f"base_model.model.{row['layer']}"
        a, b = wrapped[f"{prefix}.lora_A.default.weight"], wrapped[f"{prefix}.lora_B.default.weight"]
        base = wrapped[f"{prefix}.base_layer.weight"]
        scaling = setup.model.get_submodule(prefix).scaling["default"]
        # The frozen base holds W minus the adapter's start, and stays so while training.
        assert torch.allclose(base + scaling * b @ a, original[f"{row['layer']}.weight"], atol=1e-5)
        assert f"{prefix}.base_layer.weight" not in moved
        if svd == "exact":  # B·A starts as W's best rank-2 approximation
            u, s, vh = torch.linalg.svd(original[f"{row['layer']}.weight"], full_matrices=False)
            assert torch.allclose(scaling * b @ a, u[:, :2] @ torch.diag(s[:2]) @ vh[:2], atol=1e-5)


@pytest.mark.parametrize("method", ["pissa", "dora"])
def test_pissa_and_dora_on_gpt2_conv1d_start_as_the_same_function_and_train(method):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=40, n_embd=32, n_layer=1, n_head=4,
                                       n_positions=32)).eval()  # eval: no dropout noise
    ids = torch.randint(0, 40, (2, 8))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    setup = setup_method(model, method, lr=1e-2, lora_rank=2, filter_rank=2, update_interval=100)
    assert setup.model.peft_config["default"].fan_in_fan_out  # Conv1D stores (in, out)
    with torch.no_grad():
        assert torch.allclose(setup.model(input_ids=ids).logits, before, atol=1e-5)
    setup.model(input_ids=ids, labels=ids).loss.backward()
    setup.optimizer.step()
    with torch.no_grad():
        assert not torch.allclose(setup.model(input_ids=ids).logits, before, atol=1e-5)
