"""The shipped built-in model, its tokenizer, its integrity check and its rebuild recipe."""

import shutil
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import lift_core.models.builtin as bm
from lift_core.errors import LiftError
from lift_core.models.loading import load_model, load_tokenizer
from lift_core.train.evaluation import accuracy
from lift_core.train.tasks import source_eval_examples, target_eval_examples


@pytest.fixture(scope="module")
def shipped():
    return load_model("builtin", kind="causal"), load_tokenizer("builtin")


def test_shipped_directory_is_intact_and_small():
    assert bm.builtin_dir_problem(bm.SHIPPED_DIR) is None
    assert bm.ensure_builtin_model() == bm.SHIPPED_DIR
    total = sum(p.stat().st_size for p in bm.SHIPPED_DIR.iterdir())
    assert total < 8 * 2**20


def test_shipped_model_loads_through_the_alias_and_auto_classes(shipped):
    model, tokenizer = shipped
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not model.training
    assert len(tokenizer) == model.config.vocab_size
    plain = AutoModelForCausalLM.from_pretrained(bm.SHIPPED_DIR)
    assert torch.equal(plain.lm_head.weight, model.lm_head.weight)
    assert AutoTokenizer.from_pretrained(bm.SHIPPED_DIR)("ab")["input_ids"] == tokenizer("ab")["input_ids"]


def test_shipped_model_knows_the_source_but_not_the_target(shipped):
    model, tokenizer = shipped
    assert accuracy(model, tokenizer, source_eval_examples()) >= 0.9
    assert accuracy(model, tokenizer, target_eval_examples()) <= 0.3


def test_tokenizer_is_character_level_with_bos_first():
    tok = bm.build_tokenizer()
    text = "Q: 7+5-3\nA: 7+5=12. #### 12"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id and len(ids) == len(text) + 1
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok("é")["input_ids"][1] == tok.unk_token_id
    padded = tok(["a", "abc"], padding=True)
    assert padded["input_ids"][0][-1] == tok.pad_token_id


def test_encode_batch_puts_the_loss_on_answer_and_eos_only():
    from lift_core.train.tasks import Example

    tok = bm.build_tokenizer()
    batch = bm.encode_batch(tok, [Example("1+1=", "2"), Example("rev ab = ", "ba")])
    labels = batch["labels"]
    assert labels[0].tolist()[5:7] == [tok.convert_tokens_to_ids("2"), tok.eos_token_id]
    assert (labels[0, :5] == -100).all() and (labels[0, 7:] == -100).all()
    assert batch["attention_mask"].sum().item() == 7 + 13  # <bos> prompt answer <eos>


def _copy_of_shipped(tmp_path):
    copy = tmp_path / "shipped"
    shutil.copytree(bm.SHIPPED_DIR, copy)
    return copy


def test_integrity_check_finds_missing_corrupt_and_bad_files(tmp_path):
    copy = _copy_of_shipped(tmp_path)
    assert bm.builtin_dir_problem(copy) is None
    (copy / "model.safetensors").write_bytes(b"version https://git-lfs.github.com/spec/v1\n")
    assert "checksum" in bm.builtin_dir_problem(copy)
    (copy / "config.json").write_text("{not json")
    assert "config.json" in bm.builtin_dir_problem(copy)
    (copy / "tokenizer.json").unlink()
    assert "tokenizer.json is missing" == bm.builtin_dir_problem(copy)


def test_broken_shipped_model_is_rebuilt_once_into_the_cache(tmp_path, monkeypatch):
    broken = _copy_of_shipped(tmp_path)
    (broken / "model.safetensors").unlink()
    monkeypatch.setattr(bm, "SHIPPED_DIR", broken)
    monkeypatch.setenv("LIFT_STUDIO_CACHE", str(tmp_path / "cache"))
    tiny = bm.BuiltinRecipe(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                            steps=2, batch_size=4, warmup_steps=1)
    builds = []
    original = bm.build_builtin_model

    def fast_build(out_dir, progress=None, seed=0):
        builds.append(out_dir)
        return original(out_dir, progress, seed, tiny)

    monkeypatch.setattr(bm, "build_builtin_model", fast_build)
    messages = []
    path = bm.ensure_builtin_model(progress=lambda f, m: messages.append((f, m)))
    assert path == tmp_path / "cache" / "builtin"
    assert bm.builtin_dir_problem(path) is None
    assert "model.safetensors is missing" in messages[0][1] and messages[-1][0] == 1.0
    assert bm.ensure_builtin_model() == path and len(builds) == 1
    AutoModelForCausalLM.from_pretrained(path)


def test_recipe_validation():
    with pytest.raises(LiftError, match="multiple of num_heads"):
        bm.BuiltinRecipe(hidden_size=130)
    with pytest.raises(LiftError, match="steps must be >= 1"):
        bm.BuiltinRecipe(steps=0)


@pytest.mark.slow
def test_recipe_rebuilds_a_model_that_passes_the_same_bar(tmp_path):
    start = time.perf_counter()
    out = bm.build_builtin_model(tmp_path / "rebuilt", seed=0)
    print(f"rebuilt in {time.perf_counter() - start:.0f} s")
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert bm.builtin_dir_problem(out) is None
    assert accuracy(model, tokenizer, source_eval_examples()) >= 0.9
    assert accuracy(model, tokenizer, target_eval_examples()) <= 0.3


def _finetune_on_target(model, tokenizer, *, lr, steps, lift_rank=None, batch_size=16):
    """Throwaway check of the task design (the real trainer is lift_core.train.loop).

    Plain AdamW on every block linear weight; with ``lift_rank`` the gradients are masked
    to LIFT's principal weights (budget of a LoRA of that rank, filter rank the same), so
    Adam's moments, and hence the updates, stay zero outside the mask.
    """
    from lift_core.lowrank.masks import lift_mask, lora_budget
    from lift_core.train.tasks import target_train_examples

    model.requires_grad_(False)
    weights = [m.weight for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and ".layers." in n]
    masks = None
    if lift_rank is not None:
        masks = [lift_mask(w.data, k=lora_budget(tuple(w.shape), lift_rank), filter_rank=lift_rank)
                 for w in weights]
    for w in weights:
        w.requires_grad_(True)
    optim = torch.optim.AdamW(weights, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    data = target_train_examples(steps * batch_size, seed=1)
    model.train()
    for step in range(steps):
        for group in optim.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 10)  # 10 warmup steps
        loss = model(**bm.encode_batch(tokenizer, data[step * batch_size:(step + 1) * batch_size])).loss
        optim.zero_grad()
        loss.backward()
        for w, mask in zip(weights, masks or []):
            w.grad.mul_(mask)
        optim.step()
    model.eval()
    return model


@pytest.mark.slow
@pytest.mark.parametrize("lift_rank, lr", [(None, 3e-4), (4, 3e-3)], ids=["full", "lift"])
def test_every_method_learns_the_target_and_full_fine_tuning_forgets(lift_rank, lr):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(bm.SHIPPED_DIR)
    tokenizer = AutoTokenizer.from_pretrained(bm.SHIPPED_DIR)
    before = accuracy(model, tokenizer, source_eval_examples())
    _finetune_on_target(model, tokenizer, lr=lr, steps=300, lift_rank=lift_rank)
    source = accuracy(model, tokenizer, source_eval_examples())
    target = accuracy(model, tokenizer, target_eval_examples())
    print(f"{'full' if lift_rank is None else 'lift'}: source {before:.2f} -> {source:.2f}, target {target:.2f}")
    assert target >= 0.5
    if lift_rank is None:
        assert source <= before - 0.2
