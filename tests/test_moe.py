"""Mixture-of-experts models: every expert matrix is a layer of its own (listing, analysis,
masks, LIFT's budget and refresh); adapters say they leave experts out (issue 15 item 1)."""

import logging

import pytest
import torch

from lift_core.models.loading import layer_weight, layers_table, list_linear_layers, load_model

EXPERTS = 4


@pytest.fixture(scope="module")
def mixtral_dir(tmp_path_factory):
    """A tiny Mixtral (2 blocks, 4 experts of 2 picked per token) with the built-in tokenizer."""
    from transformers import MixtralConfig, MixtralForCausalLM

    from lift_core.models.builtin import build_tokenizer

    tokenizer = build_tokenizer()
    config = MixtralConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           num_local_experts=EXPERTS, num_experts_per_tok=2,
                           max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id,
                           architectures=["MixtralForCausalLM"])
    path = tmp_path_factory.mktemp("tiny_mixtral")
    torch.manual_seed(0)
    MixtralForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def mixtral(mixtral_dir):
    return load_model(mixtral_dir)


def test_every_expert_matrix_is_listed_with_role_and_expert_index(mixtral):
    layers = list_linear_layers(mixtral, blocks_only=True)
    block0 = [(l.role, l.expert, l.shape) for l in layers if l.block == 0]
    assert block0[:4] == [("q", None, (32, 32)), ("k", None, (16, 32)),
                          ("v", None, (16, 32)), ("o", None, (32, 32))]
    assert block0[4:] == ([("gate_up", e, (96, 32)) for e in range(EXPERTS)]
                          + [("down", e, (32, 48)) for e in range(EXPERTS)])
    # Every weight of the blocks' attention and experts is covered, each entry once.
    covered = sum(l.numel for l in layers)
    experts = sum(p.numel() for n, p in mixtral.named_parameters() if ".experts." in n)
    attention = sum(p.numel() for n, p in mixtral.named_parameters() if "self_attn" in n)
    assert covered == experts + attention
    down = next(l for l in layers if l.role == "down" and l.expert == 3 and l.block == 1)
    assert down.name == "model.layers.1.mlp.experts.down_proj[3]"
    assert "expert 3" in down.label
    assert torch.equal(layer_weight(mixtral, down), mixtral.model.layers[1].mlp.experts.down_proj[3])
    table = layers_table(mixtral)
    assert list(table.columns) == ["layer", "block", "role", "expert", "out", "in", "params"]


def test_analysis_covers_the_experts(mixtral):
    from lift_core.analysis.layers import analyze_model

    result = analyze_model(mixtral, lora_rank=2, filter_rank=2, blocks_only=True,
                           keep_masks=True)
    assert len(result.table) == 2 * (4 + 2 * EXPERTS)
    name = "model.layers.0.mlp.experts.gate_up_proj[2]"
    assert result.masks[name].shape == (96, 32)


def test_lift_masks_budgets_and_trains_each_expert(mixtral_dir):
    from lift_core.lowrank.masks import compute_mask, lora_budget
    from lift_core.train.config import FinetuneConfig
    from lift_core.train.trainer import Trainer

    config = FinetuneConfig(model=mixtral_dir, method="lift", steps=4, batch_size=4,
                            train_examples=16, lora_rank=2, filter_rank=2, lr=1e-2,
                            update_interval=2, device="cpu")
    trainer = Trainer(config).setup()
    model, optimizer = trainer.unwrapped_model, trainer.optimizer
    experts = model.model.layers[0].mlp.experts.gate_up_proj  # (experts, 96, 32)
    mask = optimizer.mask_of(experts)
    k = lora_budget((96, 32), 2)
    assert [int(mask[e].sum()) for e in range(EXPERTS)] == [k] * EXPERTS
    first = compute_mask("lift", experts[1].detach(), k=k, filter_rank=2)
    assert torch.equal(mask[1], first)  # each expert's own top-k of |W_r|
    rows = trainer.method_setup.layers
    assert sum(r["layer"].endswith("]") for r in rows) == 2 * 2 * EXPERTS
    assert trainer.trainable_params == sum(r["k"] for r in rows)
    before = experts.detach().clone()
    for _ in range(4):
        trainer.step()
    assert trainer.mask_refreshes == 2  # refreshed at steps 2 and 4, experts included
    moved = experts.detach() != before
    assert moved.any()
    trainer.close()


def test_lora_says_it_leaves_the_experts_out(mixtral_dir, caplog):
    from lift_core.train.config import FinetuneConfig
    from lift_core.train.trainer import Trainer

    config = FinetuneConfig(model=mixtral_dir, method="lora", steps=1, batch_size=4,
                            train_examples=8, lora_rank=2, device="cpu")
    with caplog.at_level(logging.WARNING, logger="lift_core"):
        trainer = Trainer(config).setup()
    assert any("does not adapt the 16 expert matrices" in r.getMessage() for r in caplog.records)
    assert all("[" not in r["layer"] for r in trainer.method_setup.layers)


def test_layers_cli_shows_the_expert_index(mixtral_dir, capsys):
    from lift_core.cli.main import main

    assert main(["layers", "--model", mixtral_dir]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["layer", "block", "role", "expert", "out", "in", "params"]
    assert lines[1].split()[:3] == ["model.layers.0.self_attn.q_proj", "0", "q"]  # no expert
    assert lines[5].split()[:4] == ["model.layers.0.mlp.experts.gate_up_proj[0]", "0", "gate_up", "0"]
    assert "<NA>" not in "\n".join(lines)


def test_saved_deltas_cover_the_experts_parameters(mixtral):
    from lift_core.train.export import block_linear_weights

    weights = block_linear_weights(mixtral)
    assert weights["model.layers.0.mlp.experts.down_proj"].shape == (EXPERTS, 32, 48)
    assert weights["model.layers.0.self_attn.q_proj"].shape == (32, 32)
    assert len(weights) == 2 * (4 + 2)  # per block: q, k, v, o and two experts parameters
