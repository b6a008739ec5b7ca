"""Saving what a run trained (lift_core.train.export) and apply-delta.

Each method family is saved from a real Trainer on the built-in model after a few steps and
loaded back the way a user would (transformers, peft); the loaded model must give the tuned
model's logits. The sparse delta must rebuild the tuned weights bit for bit, and only on
its own base.
"""

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from lift_core.errors import LiftError
from lift_core.models.loading import load_model
from lift_core.runs.folder import check_out_dir, foreign_entries
from lift_core.train.config import FinetuneConfig
from lift_core.train.export import (
    DELTA_FILE,
    apply_delta,
    base_hash,
    block_linear_weights,
    keep_pissa_initial,
    save_run_outputs,
)
from lift_core.train.trainer import Trainer

SMALL = dict(steps=4, update_interval=2, eval_limit=2, train_examples=32, batch_size=4,
             threads=1)


def _trained(method, run_dir, **settings):
    trainer = Trainer(FinetuneConfig(method=method, **{**SMALL, **settings})).setup()
    keep_pissa_initial(trainer, run_dir)
    for _ in range(SMALL["steps"]):
        trainer.step()
    trainer.close()
    return trainer


def _logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


IDS = torch.tensor([[1, 5, 9, 14, 3, 7, 2, 11]])


@pytest.mark.parametrize("method", ["lift", "full"])
def test_full_and_sparse_models_load_with_identical_logits(tmp_path, method):
    trainer = _trained(method, tmp_path)
    expected = _logits(trainer.unwrapped_model, IDS)
    saved = save_run_outputs(trainer, tmp_path)
    assert "model" in saved["saved"] and (DELTA_FILE in saved["saved"]) == (method == "lift")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert torch.equal(_logits(loaded, IDS), expected)
    assert torch.equal(_logits(load_model(str(tmp_path / "model"), kind="causal"), IDS), expected)
    if method == "lift":  # the delta as peft's SHiRA adapter, padded to r*(m+n) per matrix
        from peft import PeftModel

        assert saved["shira_rank"] >= 4  # lora_rank 4, and more where a refresh added entries
        shira = PeftModel.from_pretrained(load_model("builtin", kind="causal"), tmp_path / "shira")
        torch.testing.assert_close(_logits(shira, IDS), expected, rtol=1e-5, atol=1e-5)


def test_delta_rebuilds_bit_exactly_and_refuses_another_base(tmp_path):
    trainer = _trained("lift", tmp_path / "run")
    saved = save_run_outputs(trainer, tmp_path / "run")
    tuned = block_linear_weights(trainer.unwrapped_model)
    with safe_open(str(tmp_path / "run" / DELTA_FILE), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["base"] == "builtin" and meta["base_sha256"] == base_hash(load_model("builtin"))
    # the union over the refresh covers more than one mask's k entries, far fewer than all
    assert trainer.trainable_params <= saved["delta_entries"] < trainer.model_params / 4
    assert saved["delta_bytes"] < saved["model_bytes"] / 4

    done = apply_delta("builtin", tmp_path / "run" / DELTA_FILE, tmp_path / "rebuilt")
    assert done["entries"] == saved["delta_entries"]
    rebuilt = block_linear_weights(load_model(str(tmp_path / "rebuilt"), kind="causal"))
    for name, weight in tuned.items():
        assert torch.equal(rebuilt[name].view(torch.int32), weight.detach().view(torch.int32))
    assert ((tmp_path / "rebuilt" / "model.safetensors").read_bytes()
            == (tmp_path / "run" / "model" / "model.safetensors").read_bytes())

    with pytest.raises(LiftError, match="is not the model this delta was trained from"):
        apply_delta(str(tmp_path / "run" / "model"), tmp_path / "run" / DELTA_FILE,
                    tmp_path / "refused")


def test_apply_delta_cli_refuses_a_wrong_base_in_one_line(tmp_path, capsys):
    from lift_core.cli.main import main

    trainer = _trained("random", tmp_path / "run")
    save_run_outputs(trainer, tmp_path / "run")
    delta = str(tmp_path / "run" / DELTA_FILE)
    assert main(["apply-delta", "--base", str(tmp_path / "run" / "model"), "--delta", delta,
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: base ") and err.count("\n") == 1
    assert main(["apply-delta", "--base", "builtin", "--delta", delta,
                 "--out", str(tmp_path / "ok")]) == 0
    assert main(["layers", "--model", str(tmp_path / "ok")]) == 0  # --model takes it


@pytest.mark.parametrize("method", ["lora", "pissa", "dora"])
def test_adapters_load_in_peft_on_the_original_base(tmp_path, method):
    from peft import PeftModel

    trainer = _trained(method, tmp_path, merge=True)
    expected = _logits(trainer.unwrapped_model, IDS)
    saved = save_run_outputs(trainer, tmp_path)
    assert saved["saved"] == ["adapter", "model"]
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {
        p.name for p in (tmp_path / "adapter").iterdir()}
    assert not (tmp_path / ".lift-pissa").exists()
    adapted = PeftModel.from_pretrained(load_model("builtin", kind="causal"), tmp_path / "adapter")
    # PiSSA's adapter is converted to a rank-2r LoRA on the original base: equal up to rounding
    torch.testing.assert_close(_logits(adapted, IDS), expected, rtol=1e-4, atol=1e-4)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    torch.testing.assert_close(_logits(merged, IDS), expected, rtol=1e-4, atol=1e-4)


def test_a_run_folder_may_hold_its_saved_outputs(tmp_path):
    from lift_core.train.loop import finetune

    finetune(FinetuneConfig(out_dir=str(tmp_path), **{**SMALL, "steps": 2}), progress=False)
    assert {"model", DELTA_FILE} <= {p.name for p in tmp_path.iterdir()}
    assert foreign_entries(tmp_path) == []
    check_out_dir(tmp_path, overwrite=True)  # a finished run with its model: overwritable
    finetune(FinetuneConfig(out_dir=str(tmp_path), overwrite=True, save=False,
                            **{**SMALL, "steps": 2}), progress=False)
    assert not (tmp_path / "model").exists()  # the earlier run's model went with its record
