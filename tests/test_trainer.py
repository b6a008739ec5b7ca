"""The public Trainer: its handles, one step, evaluation, and finetune() as a loop over it."""

import pytest
import torch

from lift_core.optim import SparseAdamW
from lift_core.runs.records import read_run
from lift_core.train.config import FinetuneConfig
from lift_core.train.loop import finetune
from lift_core.train.trainer import NonFiniteLoss, Trainer, mask_churn
from tests.tiny_models import save_char_llama


def _config(model, **kwargs):
    settings = dict(model=model, steps=3, eval_every=3, eval_limit=4, max_new_tokens=3,
                    batch_size=4, train_examples=24, update_interval=2, lora_rank=2,
                    filter_rank=2)
    return FinetuneConfig(**{**settings, **kwargs})


def _weights(trainer):
    return {n: p.detach().clone() for n, p in trainer.unwrapped_model.named_parameters()}


def test_setup_exposes_every_part_of_the_run(char_llama):
    trainer = Trainer(_config(char_llama)).setup()
    assert isinstance(trainer.optimizer, SparseAdamW)
    assert trainer.scheduler.optimizer is trainer.optimizer
    assert trainer.unwrapped_model is trainer.accelerator.unwrap_model(trainer.model)
    assert trainer.tokenizer is not None and trainer.device.type == "cpu"
    assert set(trainer.data) == {"train", "target", "source"} and len(trainer.data["target"]) == 4
    batch = trainer.batches.next()
    assert batch["input_ids"].shape[0] == 4 and (batch["labels"] != -100).any()
    assert trainer.trainable_params == trainer.method_setup.trainable_params > 0


def test_a_lift_step_moves_only_masked_entries_and_reports_loss_and_lr(char_llama):
    trainer = Trainer(_config(char_llama)).setup()
    before = _weights(trainer)
    row = trainer.step()
    assert set(row) == {"step", "loss", "lr"} and row["step"] == 1 and row["loss"] > 0
    assert row["lr"] == pytest.approx(trainer.config.lr_used)  # one warmup step at 3 steps
    assert trainer.steps_done == 1 and trainer.optimizer.state_bytes() > 0
    moved = 0
    for name, p in trainer.unwrapped_model.named_parameters():
        changed = before[name] != p.detach()
        if p.requires_grad:
            assert not (changed & ~trainer.optimizer.mask_of(p)).any(), name
            moved += int(changed.sum())
        else:
            assert not changed.any(), name
    assert 0 < moved <= trainer.trainable_params


def test_a_refresh_reports_the_mask_churn(char_llama):
    trainer = Trainer(_config(char_llama, update_interval=1)).setup()
    rows = [trainer.step() for _ in range(2)]
    assert all(0 <= r["mask_churn"] <= 1 for r in rows) and trainer.mask_refreshes == 2
    assert mask_churn([{"step": 0, "changed_fraction": 1.0}]) is None  # first masks: no churn
    assert mask_churn([{"step": 3, "changed_fraction": 0.5, "entries": 30},
                       {"step": 3, "changed_fraction": 0.0, "entries": 10}]) == 0.375


def test_finetune_is_a_loop_over_the_trainer(char_llama, tmp_path):
    """The losses finetune records are those of a Trainer stepped by hand."""
    config = _config(char_llama, method="lora", out_dir=str(tmp_path / "run"))
    finetune(config, progress=False)
    recorded = read_run(tmp_path / "run").metrics.dropna(subset=["loss"])["loss"].tolist()
    trainer = Trainer(_config(char_llama, method="lora")).setup()
    trainer.evaluate()  # as finetune does before training (greedy: draws no random numbers)
    assert [trainer.step()["loss"] for _ in range(3)] == recorded


def test_phases_run_in_order_through_the_phase_runner(char_llama):
    trainer = Trainer(_config(char_llama, method="full")).setup()
    seen = []

    def runner(name, fn):
        seen.append(name)
        return fn()

    trainer.phase_runner = runner
    trainer.step()
    assert seen == ["forward", "backward", "optimizer"]


def test_a_nan_loss_raises_and_changes_nothing(tmp_path):
    model = save_char_llama(tmp_path / "nan_model", poison=True)
    trainer = Trainer(_config(model, method="full")).setup()
    before = _weights(trainer)
    with pytest.raises(NonFiniteLoss, match="loss became nan at step 1"):
        trainer.step()
    assert trainer.steps_done == 0
    assert all(torch.equal(before[n], p) for n, p in _weights(trainer).items()
               if not p.isnan().any())  # the poisoned embeddings are NaN before and after


def test_a_built_model_trains_on_given_batches(char_llama):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(char_llama)
    trainer = Trainer(_config("unused-when-a-model-is-given", method="magnitude")).setup(model=model)
    assert trainer.batches is None and trainer.data == {}
    ids = torch.randint(3, 20, (2, 12), generator=torch.Generator().manual_seed(0))
    first = trainer.step({"input_ids": ids, "labels": ids})
    second = trainer.step({"input_ids": ids, "labels": ids})
    assert second["step"] == 2 and second["loss"] < first["loss"]


def test_evaluate_gives_both_accuracies_and_can_be_abandoned(char_llama):
    trainer = Trainer(_config(char_llama, eval_batch_size=2)).setup()
    result = trainer.evaluate()
    assert set(result) == {"target_acc", "source_acc"}
    assert all(0.0 <= v <= 1.0 for v in result.values())
    calls = []

    def stop_at_second_batch():
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer.evaluate(between_batches=stop_at_second_batch)
    assert trainer.model.training  # generation restored training mode


def test_the_batch_position_can_be_saved_and_restored(char_llama):
    trainer = Trainer(_config(char_llama, batch_size=5)).setup()
    batches = trainer.batches
    for _ in range(3):  # part-way through an epoch of 24 examples
        batches.next()
    saved = batches.state_dict()
    expected = [batches.next()["input_ids"] for _ in range(6)]  # crosses into the next epoch
    batches.next()
    batches.load_state_dict(saved)
    assert all(torch.equal(batches.next()["input_ids"], e) for e in expected)


def test_close_removes_the_gradient_hooks(char_llama):
    trainer = Trainer(_config(char_llama)).setup()
    trainer.close()  # without it, the hooks would gather the masked entries and free p.grad
    trainer.model(**trainer.batches.next()).loss.backward()
    grads = [p.grad for p in trainer.unwrapped_model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)  # dense grads stay after backward
