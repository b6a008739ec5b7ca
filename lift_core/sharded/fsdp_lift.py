"""LIFT under FSDP2: SparseAdamW's masks and compact moments on row-sharded weights.

After ``fully_shard`` every weight is a DTensor whose rank-local shard is a contiguous
block of rows (``Shard(0)``, torch.chunk sizes). :class:`ShardedSparseAdamW` keeps, on
each rank and for each masked weight, only the mask entries that fall in its rows (sorted
flat indices into the local shard) and fp32 moments for those. At construction and at
every refresh the full matrix is gathered once (``full_tensor``); one rank, the owner
(round-robin over parameters, so the SVDs are spread over the ranks), scores it with the
single-process rule (:func:`lift_core.optim.mask_state.select_mask`: PrincipalScorer's
top-k of |W_r|) and broadcasts the k global indices, so every rank slices the same mask.
A step reads the reduce-scattered local gradient shard at the local indices and applies
SparseAdamW's :class:`AdamWRule`, so a sharded run equals a single-process run with the
same global batch.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Shard

from lift_core.errors import LiftError
from lift_core.lowrank.masks import lora_budget
from lift_core.optim.mask_state import (
    carry_moments,
    check_mask_settings,
    churn_events,
    indices_to_mask,
    select_mask,
)
from lift_core.optim.update import AdamWRule, StepBatches, check_adamw_settings, zero_moments

# Flat indices into a local shard fit int32 below this many entries (as in SparseAdamW).
_INT32_NUMEL_LIMIT = 2**31


class ShardedSparseAdamW(torch.optim.Optimizer):
    """SparseAdamW over FSDP2-sharded weights: each rank trains the mask of its rows.

    Group settings are SparseAdamW's (``mask``, ``lora_rank``, ``filter_rank``,
    ``update_interval``, ``svd``, ``seed``; a group without a mask is dense AdamW on the
    local shard). Every parameter must be a DTensor sharded on dim 0 over a 1-D mesh, as
    ``fully_shard`` leaves it. Construction, :meth:`step` and :meth:`clip_grad_norm_` are
    collective: every rank calls them, in the same order.

    Args:
        params: DTensor parameters or param-group dicts, as for torch.
        lr, betas, eps, weight_decay: AdamW settings.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.95),
                 eps: float = 1e-6, weight_decay: float = 0.0, *, mask: str | None = None,
                 lora_rank: int | None = None, filter_rank: int | None = None,
                 update_interval: int | None = None, svd: str = "exact", seed: int = 0):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, mask=mask,
                        lora_rank=lora_rank, filter_rank=filter_rank,
                        update_interval=update_interval, svd=svd, seed=seed)
        self._events: list[dict] = []
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        """Add a group, validate it and compute the first masks (collective; LiftError)."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        offset = sum(len(g["params"]) for g in self.param_groups[:-1])
        try:
            check_adamw_settings(group)
            for p in group["params"]:
                _check_row_sharded(p)
            if group["mask"] is not None:
                check_mask_settings(group)
                for position, p in enumerate(group["params"], start=offset):
                    indices = local_mask_indices(p, group, position, refresh=0)
                    self.state[p] = {"step": 0, "indices": indices,
                                     **zero_moments(indices.numel(), p.device)}
        except LiftError:
            for p in group["params"]:
                self.state.pop(p, None)
            self.param_groups.pop()
            raise

    @torch.no_grad()
    def step(self, closure=None):
        """One AdamW step on the local shards' masked entries, then any due refreshes."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        batches, updated = StepBatches(), set()
        for group in self.param_groups:
            rule = AdamWRule.of_group(group)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state, shard = self.state[p], p.to_local()
                grad = p.grad.to_local().reshape(-1)
                if group["mask"] is None:
                    if not state:  # dense state starts at the first gradient, as in torch
                        state.update(step=0, **zero_moments(shard.numel(), shard.device))
                    indices = None
                else:
                    indices = state["indices"].long()
                    grad = grad.index_select(0, indices)
                state["step"] += 1
                batches.add(shard, rule, state, indices, grad)
                updated.add(id(p))
        batches.flush()
        self._refresh_due(updated)
        return loss

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """Scale the local gradient shards so the global L2 norm is <= ``max_norm``.

        The squared norms of the local shards are summed over the ranks (one all-reduce),
        so every rank clips by the norm a single process holding all gradients computes.
        Returns that total norm before clipping (a 0-d tensor, the same on every rank).
        """
        grads = [p.grad.to_local() for g in self.param_groups for p in g["params"]
                 if p.grad is not None]
        device = grads[0].device if grads else torch.device("cpu")
        squares = sum((n.float() ** 2 for n in torch._foreach_norm(grads, 2.0)),
                      torch.zeros((), device=device))  # on the device NCCL needs
        dist.all_reduce(squares, group=_process_group(self))
        total = squares.sqrt()
        torch._foreach_mul_(grads, (max_norm / (total + 1e-6)).clamp(max=1.0))
        return total

    def local_mask(self, param: DTensor) -> torch.Tensor:
        """The entries this rank trains, as a bool tensor of ``param``'s local shard."""
        shard = param.to_local()
        state = self.state.get(param, {})
        if "indices" not in state:
            return torch.ones_like(shard, dtype=torch.bool)
        return indices_to_mask(state["indices"], shard)

    def state_bytes(self) -> int:
        """Bytes of optimizer state on this rank (local indices and moments)."""
        return sum(t.numel() * t.element_size() for state in self.state.values()
                   for t in state.values() if isinstance(t, torch.Tensor))

    def pop_refresh_events(self) -> list[dict]:
        """Refreshes since the last call, as SparseAdamW's (counts summed over the ranks)."""
        events, self._events = self._events, []
        return events

    def state_dict(self):
        raise LiftError("saving ShardedSparseAdamW state is not built yet: "
                        "train to the end, or use SparseAdamW on one process")

    def _refresh_due(self, updated: set[int]) -> None:
        """Recompute due masks (collective, in parameter order) and carry the moments."""
        rows, changed_counts, offset = [], [], 0
        for group in self.param_groups:
            interval = group["update_interval"] if group["mask"] is not None else None
            names = group.get("param_names")
            for i, p in enumerate(group["params"] if interval else ()):
                state = self.state[p]
                if id(p) not in updated or state["step"] % interval != 0:
                    continue
                new = local_mask_indices(p, group, offset + i, state["step"] // interval)
                moments = {key: state[key] for key in ("exp_avg", "exp_avg_sq")}
                carried, changed = carry_moments(state["indices"], new, moments)
                state.update(carried, indices=new)
                name = names[i] if names else f"param{offset + i}"
                rows.append([state["step"], name, 0, _mask_entries(p, group)])
                changed_counts.append(changed)
            offset += len(group["params"])
        if rows:
            counts = torch.tensor(changed_counts, dtype=torch.int64,
                                  device=self.param_groups[0]["params"][0].device)
            dist.all_reduce(counts, group=_process_group(self))
            for row, count in zip(rows, counts.tolist()):
                row[2] = count
            self._events += churn_events([tuple(row) for row in rows])


def local_mask_indices(p: DTensor, group: dict, position: int, refresh: int) -> torch.Tensor:
    """This rank's slice of ``p``'s global mask: sorted flat indices into its local shard.

    Collective: every rank gathers the full matrix once; the owner rank scores it with
    :func:`select_mask` (what SparseAdamW would select from the same weights) and
    broadcasts the global indices; each rank keeps those inside its rows.
    """
    mesh_group = p.device_mesh.get_group()
    full = p.full_tensor()
    owner = position % dist.get_world_size(mesh_group)
    if dist.get_rank(mesh_group) == owner:
        chosen = select_mask(full, group, position, refresh).long()
    else:
        chosen = torch.empty(_mask_entries(p, group), dtype=torch.long, device=full.device)
    del full  # the full matrix is transient: one at a time
    dist.broadcast(chosen, group=mesh_group, group_src=owner)
    first, stop = _local_flat_range(p)
    local = chosen[(chosen >= first) & (chosen < stop)] - first
    return local.int() if stop - first < _INT32_NUMEL_LIMIT else local


def _local_flat_range(p: DTensor) -> tuple[int, int]:
    """[first, stop) of this rank's rows in p's flattened global tensor (torch.chunk rule)."""
    mesh_group = p.device_mesh.get_group()
    rows, world = p.shape[0], dist.get_world_size(mesh_group)
    first_row = min(dist.get_rank(mesh_group) * math.ceil(rows / world), rows)
    local_rows = p.to_local().shape[0]
    if first_row + local_rows > rows:
        raise LiftError(f"unexpected shard layout: {local_rows} local rows from row "
                        f"{first_row} of {rows}")
    per_row = p.numel() // rows
    return first_row * per_row, (first_row + local_rows) * per_row


def _mask_entries(p: torch.Tensor, group: dict) -> int:
    """k of the whole parameter: the per-matrix budget times the experts of a 3-D stack."""
    return math.prod(p.shape[:-2]) * lora_budget(tuple(p.shape[-2:]), group["lora_rank"])


def _check_row_sharded(p: torch.Tensor) -> None:
    if (not isinstance(p, DTensor) or p.device_mesh.ndim != 1
            or tuple(p.placements) != (Shard(0),)):
        raise LiftError("ShardedSparseAdamW needs parameters sharded on dim 0 over a 1-D "
                        "mesh (call torch.distributed.fsdp.fully_shard on the model first)")


def _process_group(optimizer: ShardedSparseAdamW):
    first = next(p for g in optimizer.param_groups for p in g["params"])
    return first.device_mesh.get_group()


def fully_shard_blocks(model: torch.nn.Module, blocks: torch.nn.ModuleList) -> torch.nn.Module:
    """Shard each transformer block, then the rest of the model (FSDP2), in place.

    One ``fully_shard`` per block means one block's full weights exist at a time in
    forward and backward; the root call takes embeddings, final norm and lm_head.
    """
    from torch.distributed.fsdp import fully_shard

    for block in blocks:
        fully_shard(block)
    fully_shard(model)
    return model
