"""Train a tiny Llama with LIFT under FSDP2 (ShardedSparseAdamW); run by torchrun.

    python -m torch.distributed.run --nproc_per_node 2 tests/dist_scripts/fsdp_lift_run.py \
        MODEL_DIR OUT_DIR

Each rank takes its slice of every global batch. Rank r writes OUT_DIR/rank<r>.json (its
optimizer-state bytes and masked entries); rank 0 also writes OUT_DIR/result.pt: the
global loss and gradient norm per step, the final full block weights and the final full masks.
tests/test_fsdp_lift.py compares them with SparseAdamW on one process, using the settings
and batches defined here (one definition for both runs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

GLOBAL_BATCH, SEQ_LEN, STEPS = 4, 16, 10
MAX_NORM = 0.3  # below the gradient norms here (0.45-0.65): clipping acts every step
GROUP = dict(mask="lift", lora_rank=2, filter_rank=4, update_interval=5, svd="exact", seed=0)
ADAMW = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.0)


def tiny_llama_config():
    """2 blocks; MLP width 37 and 16-row k/v so some shards are uneven (19 + 18 rows)."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=37,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=64, architectures=["LlamaForCausalLM"])


def batch(step: int) -> torch.Tensor:
    """The global batch of ``step``: (GLOBAL_BATCH, SEQ_LEN) token ids, the same everywhere."""
    generator = torch.Generator().manual_seed(1000 + step)
    return torch.randint(0, 64, (GLOBAL_BATCH, SEQ_LEN), generator=generator)


def block_weights(model) -> list[tuple[str, torch.nn.Parameter]]:
    """The trained matrices (q, k, v, o, gate, up, down of every block), in model order;
    everything else is frozen, as in the LIFT authors' runs."""
    named = [(n, p) for n, p in model.named_parameters()
             if ".layers." in n and n.endswith("proj.weight")]
    for p in model.parameters():
        p.requires_grad_(False)
    for _, p in named:
        p.requires_grad_(True)
    return named


def _main(model_dir: str, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor, Shard
    from transformers import LlamaForCausalLM

    from lift_core.sharded import ShardedSparseAdamW, fully_shard_blocks

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    block_weights(model)  # freeze before sharding ...
    fully_shard_blocks(model, model.model.layers)
    named = block_weights(model)  # ... and take the new (DTensor) parameters after it
    optimizer = ShardedSparseAdamW([{"params": [p for _, p in named], **GROUP}], **ADAMW)
    per_rank = GLOBAL_BATCH // world
    losses, norms = [], []
    for step in range(STEPS):
        ids = batch(step)[rank * per_rank:(rank + 1) * per_rank]
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()  # FSDP2 reduce-scatters the mean gradient: each rank gets its rows
        norms.append(optimizer.clip_grad_norm_(MAX_NORM).item())
        optimizer.step()
        optimizer.zero_grad()
        global_loss = loss.detach().clone()
        dist.all_reduce(global_loss, op=dist.ReduceOp.AVG)
        losses.append(global_loss.item())
    events = optimizer.pop_refresh_events()
    weights, masks = {}, {}
    for name, p in named:
        weights[name] = p.full_tensor()
        local = optimizer.local_mask(p).to(torch.int32)
        masks[name] = DTensor.from_local(local, p.device_mesh, [Shard(0)], shape=p.shape,
                                         stride=p.stride()).full_tensor().bool()
    entries = sum(int(s["indices"].numel()) for s in optimizer.state.values())
    out = Path(out_dir)
    (out / f"rank{rank}.json").write_text(json.dumps(
        {"state_bytes": optimizer.state_bytes(), "entries": entries, "events": events}))
    if rank == 0:
        torch.save({"losses": losses, "norms": norms, "weights": weights, "masks": masks},
                   out / "result.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
