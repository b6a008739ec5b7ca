"""LIFT under FSDP2 (lift_core.sharded): 2 CPU processes over gloo equal one process.

The sharded run is started with torchrun (tests/dist_scripts/fsdp_lift_run.py) and
compared with lift_core's SparseAdamW on one process over the same model, settings and
global batches: losses, clipping norms, final weights and final masks, and each rank's
optimizer state is about half of the single-process state. Also: the parameter counts
behind docs/distributed.md's memory tables (bench/memory_arithmetic.py) are the real ones.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lift_core.errors import LiftError
from lift_core.optim import SparseAdamW
from tests.dist_scripts import fsdp_lift_run as run

ROOT = Path(__file__).resolve().parents[1]
# What torchrun / gloo print when the processes cannot connect (no usable network here).
_SETUP_FAILURES = ("connectFullMesh", "RendezvousConnectionError", "RendezvousTimeoutError",
                   "Gloo connect")


def _tiny_llama(path: Path) -> Path:
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(run.tiny_llama_config()).save_pretrained(path)
    return path


def _torchrun(model_dir: Path, out_dir: Path) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", str(ROOT / "tests/dist_scripts/fsdp_lift_run.py"),
               str(model_dir), str(out_dir)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=150)
    except subprocess.TimeoutExpired:
        pytest.fail("the 2-process FSDP2 run did not finish within 150 s")
    if done.returncode != 0:
        text = done.stdout + done.stderr
        if any(marker in text for marker in _SETUP_FAILURES):
            pytest.skip(f"gloo could not start here: {text[-300:]}")
        pytest.fail(f"torchrun failed ({done.returncode}):\n{text[-4000:]}")


def _single_process(model_dir: Path):
    """The reference: SparseAdamW on one process, the whole global batch per step."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    named = run.block_weights(model)
    optimizer = SparseAdamW([{"params": [p for _, p in named], **run.GROUP}], **run.ADAMW)
    losses, norms = [], []
    for step in range(run.STEPS):
        ids = run.batch(step)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        norms.append(optimizer.clip_grad_norm_(run.MAX_NORM).item())
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses, norms, named, optimizer


def _single_process_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return {name: p.detach() for name, p in run.block_weights(model)}


@pytest.mark.slow
def test_two_fsdp2_processes_train_like_one(tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this torch has no gloo backend")
    model_dir = _tiny_llama(tmp_path / "model")
    out = tmp_path / "out"
    out.mkdir()
    _torchrun(model_dir, out)
    sharded = torch.load(out / "result.pt")
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]

    losses, norms, named, optimizer = _single_process(model_dir)
    assert sharded["losses"] == pytest.approx(losses, rel=1e-5, abs=1e-6)
    assert sharded["norms"] == pytest.approx(norms, rel=1e-5)  # the global norm, clipped
    assert min(norms) > run.MAX_NORM
    for name, p in named:
        assert torch.equal(sharded["masks"][name], optimizer.mask_of(p)), name
        torch.testing.assert_close(sharded["weights"][name], p.detach(), rtol=1e-4, atol=1e-5)
    # Training moved the weights, and the refresh at step 5 changed the masks, alike.
    initial = _single_process_weights(model_dir)
    assert all(not torch.equal(initial[name], p.detach()) for name, p in named)
    assert ranks[0]["events"] == ranks[1]["events"]
    assert [e["step"] for e in ranks[0]["events"]] == [5, 10]
    assert ranks[0]["events"][0]["entries_changed"] > 0

    # Each rank holds the state of its rows only: together exactly the unsharded state.
    total = optimizer.state_bytes()
    assert sum(r["entries"] for r in ranks) == sum(
        s["indices"].numel() for s in optimizer.state.values())
    assert sum(r["state_bytes"] for r in ranks) == total
    for r in ranks:
        assert 0.4 * total < r["state_bytes"] < 0.6 * total


def test_plain_tensors_are_refused():
    from lift_core.sharded import ShardedSparseAdamW

    weight = torch.nn.Parameter(torch.randn(8, 8))
    with pytest.raises(LiftError, match="fully_shard"):
        ShardedSparseAdamW([{"params": [weight], **run.GROUP}], **run.ADAMW)


@pytest.mark.parametrize("name", ["LLAMA_2_7B", "LLAMA_3_70B"])
def test_memory_arithmetic_counts_the_real_architecture(name):
    # docs/distributed.md's tables come from bench/memory_arithmetic.py: its parameter
    # counts must be those of the transformers model (built on the meta device, no memory).
    from transformers import LlamaConfig, LlamaForCausalLM

    from bench import memory_arithmetic

    arch = getattr(memory_arithmetic, name)
    config = LlamaConfig(vocab_size=arch.vocab, hidden_size=arch.hidden,
                         intermediate_size=arch.ffn, num_hidden_layers=arch.layers,
                         num_attention_heads=arch.heads, num_key_value_heads=arch.kv_heads,
                         tie_word_embeddings=False)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    named = dict(model.named_parameters())
    assert sum(p.numel() for p in named.values()) == arch.total_params()
    assert sum(p.numel() for n, p in named.items() if n.endswith("proj.weight")) == (
        arch.linear_params())
    assert arch.total_params() == {"LLAMA_2_7B": 6_738_415_616,
                                   "LLAMA_3_70B": 70_553_706_496}[name]
