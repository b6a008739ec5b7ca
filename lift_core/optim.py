"""SparseAdamW: AdamW that trains only a refreshed mask of each matrix (LIFT's optimizer).

A masked parameter group keeps, per matrix, the sorted flat indices of its k trainable
entries and two 1-D fp32 Adam moments of length k (12 bytes per trained number), and
recomputes the mask from the current weights every ``update_interval`` steps. A group
without a mask is dense AdamW with the same transformers-style update rule, so "full
fine-tuning" and LIFT differ only in which entries move. The optional gradient hooks
gather each masked gradient into a 1-D buffer during backward and free the dense one.
"""

from __future__ import annotations

import math
import weakref
from itertools import chain

import torch

from lift_core.errors import LiftError
from lift_core.masks import MASK_STRATEGIES, compute_mask, lora_budget
from lift_core.svd import SVD_MODES, check_filter_rank

# Flat indices fit int32 (4 bytes) below this many entries; larger matrices need int64.
_INT32_NUMEL_LIMIT = 2**31
# Entries per batch of foreach calls: large enough to amortize launches, small enough
# that the step's temporaries (gathered weights and grads, int64 indices, denominators)
# stay far below the dense gradients the masks save.
_CHUNK_ENTRIES = 2**24


class SparseAdamW(torch.optim.Optimizer):
    """AdamW over a sparse, periodically refreshed mask per matrix, or dense per group.

    Update rule (transformers' AdamW, what the LIFT authors ran), per trained entry:
    ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g^2``,
    ``w -= lr sqrt(1-b2^t)/(1-b1^t) * m/(sqrt(v)+eps)``, then ``w -= lr wd w``.

    Group settings (each also a constructor default): ``mask`` (a name in
    :data:`lift_core.masks.MASK_STRATEGIES`, or None for a dense group), ``lora_rank``
    (budget k = ``lora_budget(shape, lora_rank)``), ``filter_rank``, ``update_interval``
    (steps between mask refreshes; None keeps the first mask), ``svd`` ("exact" or
    "randomized") and ``seed`` (for the random mask and the randomized SVD).

    The first mask of every masked matrix is computed here, at construction, from the
    weights as they are now. Masked parameters must be contiguous 2-D tensors; a GPT-2
    Conv1D weight stored (in, out) is masked as stored (top-k of |W_r| does not care).

    Args:
        params: parameters or param-group dicts, as for any torch optimizer.
        lr, betas, eps, weight_decay: AdamW settings (decay hits trained entries only).
        free_dense_grads: gather each masked gradient into a 1-D fp32 buffer as soon as
            autograd has accumulated it and drop the dense ``p.grad``; micro-batches
            accumulate into the buffer. Clip with :meth:`clip_grad_norm_` then.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        *,
        mask: str | None = None,
        lora_rank: int | None = None,
        filter_rank: int | None = None,
        update_interval: int | None = None,
        svd: str = "exact",
        seed: int = 0,
        free_dense_grads: bool = False,
    ):
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, mask=mask,
            lora_rank=lora_rank, filter_rank=filter_rank,
            update_interval=update_interval, svd=svd, seed=seed,
        )
        self.free_dense_grads = bool(free_dense_grads)
        self._grad_buffers: dict[torch.Tensor, torch.Tensor] = {}
        # Squared L2 norm of each dense gradient the hooks freed, so clipping can use the
        # norm of the whole gradient, as a dense-gradient trainer (the authors') does.
        self._freed_sq_norms: dict[torch.Tensor, torch.Tensor] = {}
        self._grad_hooks: list = []
        self._refresh_events: list[dict] = []
        super().__init__(params, defaults)

    # --- torch.optim interface ----------------------------------------------------------

    def add_param_group(self, param_group: dict) -> None:
        """Add a group, validate its settings and compute the first masks (LiftError)."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        offset = sum(len(g["params"]) for g in self.param_groups[:-1])
        hooks_before = len(self._grad_hooks)
        try:
            _check_group(group)
            if group["mask"] is not None:
                for position, p in enumerate(group["params"], start=offset):
                    self._start_masked_state(p, group, position)
        except LiftError:
            for p in group["params"]:
                self.state.pop(p, None)
            for handle in self._grad_hooks[hooks_before:]:
                handle.remove()
            del self._grad_hooks[hooks_before:]
            self.param_groups.pop()
            raise

    @torch.no_grad()
    def step(self, closure=None):
        """One AdamW step on every parameter with a gradient, then any due mask refreshes."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Groups with equal hyperparameters (e.g. LIFT's one group per matrix) share
        # foreach calls; chunking bounds the temporaries to ~20 bytes x _CHUNK_ENTRIES.
        pending: dict[tuple, _Batch] = {}
        updated: set[int] = set()
        for group in self.param_groups:
            key = _hyperparameters(group)
            for p in group["params"]:
                batch = pending.get(key)
                if batch is None:
                    batch = pending[key] = _Batch(group)
                if self._add_to_batch(p, group, batch):
                    updated.add(id(p))
                if batch.entries >= _CHUNK_ENTRIES:
                    pending.pop(key).apply()
        for batch in pending.values():
            batch.apply()
        self._refresh_due(updated)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear dense gradients and the gathered masked-gradient buffers."""
        super().zero_grad(set_to_none)
        self._freed_sq_norms.clear()
        if set_to_none:
            self._grad_buffers.clear()
        else:
            for buffer in self._grad_buffers.values():
                buffer.zero_()

    def load_state_dict(self, state_dict: dict) -> None:
        """Load state saved by :meth:`state_dict`, keeping index and moment dtypes.

        torch casts floating state to the parameter's dtype on load, which would turn
        int32 indices into floats and fp32 moments into bf16; we restore ours exactly.
        """
        exact = {pid: {k: v for k, v in s.items() if isinstance(v, torch.Tensor)}
                 for pid, s in state_dict["state"].items()}
        stripped = dict(state_dict)
        stripped["state"] = {pid: {k: v for k, v in s.items() if k not in exact[pid]}
                             for pid, s in state_dict["state"].items()}
        saved_ids = chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        params = chain.from_iterable(g["params"] for g in self.param_groups)
        id_to_param = dict(zip(saved_ids, params))
        super().load_state_dict(stripped)
        for pid, tensors in exact.items():
            p = id_to_param[pid]
            self.state[p].update({k: v.to(p.device, copy=True) for k, v in tensors.items()})
        self._grad_buffers.clear()
        self._freed_sq_norms.clear()
        masked = [p for g in self.param_groups if g["mask"] is not None for p in g["params"]]
        if any("indices" not in self.state[p] for p in masked):
            raise LiftError("the saved optimizer state has no mask for a masked parameter")

    # --- public extras ------------------------------------------------------------------

    def mask_of(self, param: torch.Tensor) -> torch.Tensor:
        """The entries ``param`` trains, as a bool tensor of its shape (dense: all True)."""
        group = self._group_of(param)
        if group["mask"] is None:
            return torch.ones_like(param, dtype=torch.bool)
        flat = torch.zeros(param.numel(), dtype=torch.bool, device=param.device)
        flat[self.state[param]["indices"].long()] = True
        return flat.view(param.shape)

    def remove_grad_hooks(self) -> None:
        """Stop gathering gradients (``free_dense_grads``): backward keeps dense grads again.

        Call it before training the same model with another optimizer; otherwise this one's
        hooks would still take the masked gradients away while it is alive.
        """
        for handle in self._grad_hooks:
            handle.remove()
        self._grad_hooks.clear()
        self.free_dense_grads = False

    def state_bytes(self) -> int:
        """Bytes held in optimizer state (indices and moments; not gradient buffers)."""
        return sum(
            t.numel() * t.element_size()
            for state in self.state.values()
            for t in state.values()
            if isinstance(t, torch.Tensor)
        )

    def pop_refresh_events(self) -> list[dict]:
        """Mask refreshes since the last call, oldest first, and forget them.

        Each event is ``{"step", "changed_fraction", "entries_changed", "entries",
        "per_param"}``: the fraction of mask entries (over all refreshed matrices) that
        left the mask, and the same fraction per matrix, keyed by parameter name when the
        optimizer was given named parameters, else by "param<i>" (state_dict order).
        """
        events, self._refresh_events = self._refresh_events, []
        return events

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
        """Scale all gradients this optimizer will use so their total norm is <= max_norm.

        Works like ``torch.nn.utils.clip_grad_norm_`` over dense ``p.grad`` tensors and
        also over the gathered buffers of ``free_dense_grads`` (which torch cannot see).
        For the L2 norm, a gathered parameter contributes the norm of its whole dense
        gradient (recorded by the hook before freeing it), so the total and the scale are
        those torch would compute on the dense gradients: exact with one backward per step;
        with several micro-batches the per-micro-batch norms are summed in quadrature.
        For other norm types the masked entries alone count.

        Returns:
            The total norm before clipping (a 0-d tensor).
        """
        buffers = list(self._grad_buffers.values())
        dense = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        grads = buffers + dense
        if not grads:
            return torch.tensor(0.0)
        first_device = grads[0].device
        if norm_type == 2.0 and len(self._freed_sq_norms) == len(buffers):
            parts = [n.to(first_device) for n in self._freed_sq_norms.values()]
            parts += [n.to(first_device, torch.float32) ** 2 for n in torch._foreach_norm(dense, 2.0)] if dense else []
            total = torch.stack(parts).sum().sqrt()
        else:
            norms = torch._foreach_norm(grads, norm_type)
            total = torch.linalg.vector_norm(
                torch.stack([n.to(first_device, torch.float32) for n in norms]), norm_type
            )
        scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
        by_device: dict[torch.device, list[torch.Tensor]] = {}
        for grad in grads:
            by_device.setdefault(grad.device, []).append(grad)
        for device, same_device in by_device.items():
            torch._foreach_mul_(same_device, scale.to(device))
        return total

    # --- internals ----------------------------------------------------------------------

    def _group_of(self, param: torch.Tensor) -> dict:
        for group in self.param_groups:
            if any(p is param for p in group["params"]):
                return group
        raise LiftError("this parameter is not optimized by this SparseAdamW")

    def _start_masked_state(self, p: torch.Tensor, group: dict, position: int) -> None:
        indices = _mask_indices(p, group, position, refresh=0)
        self.state[p] = {
            "step": 0,
            "indices": indices,
            "exp_avg": torch.zeros(indices.numel(), dtype=torch.float32, device=p.device),
            "exp_avg_sq": torch.zeros(indices.numel(), dtype=torch.float32, device=p.device),
        }
        if self.free_dense_grads and p.requires_grad:
            hook = _gather_hook(weakref.ref(self))
            self._grad_hooks.append(p.register_post_accumulate_grad_hook(hook))

    def _absorb_grad(self, p: torch.Tensor) -> None:
        """Add the masked entries of a fresh dense gradient to p's buffer, then free it."""
        gathered = p.grad.reshape(-1).index_select(0, self.state[p]["indices"].long())
        sq_norm = p.grad.float().pow(2).sum()
        previous = self._freed_sq_norms.get(p)
        self._freed_sq_norms[p] = sq_norm if previous is None else previous + sq_norm
        buffer = self._grad_buffers.get(p)
        if buffer is None:
            self._grad_buffers[p] = gathered.float()
        else:
            buffer.add_(gathered)
        p.grad = None

    def _add_to_batch(self, p: torch.Tensor, group: dict, batch: "_Batch") -> bool:
        """Queue p's fp32 1-D weights, gradient and moments for the update, if it has a grad."""
        state = self.state[p]
        if group["mask"] is not None:
            indices = state["indices"].long()  # int64 gathers/copies are the fast ones
            grad = self._grad_buffers.get(p)
            if grad is None and p.grad is not None:
                grad = p.grad.reshape(-1).index_select(0, indices)
            weight = p.reshape(-1).index_select(0, indices) if grad is not None else None
        else:
            if p.grad is None:
                return False
            if not state:
                _start_dense_state(p, state)
            indices, grad = None, p.grad.reshape(-1)
            weight = p.view(-1) if _updates_in_place(p) else p.reshape(-1).float()
        if grad is None:
            return False
        state["step"] += 1
        batch.add(p, indices, weight.float(), grad.float(), state)
        return True

    def _refresh_due(self, updated: set[int]) -> None:
        """Refresh masks of just-updated params whose step is a multiple of the interval."""
        refreshed = []
        offset = 0
        for group in self.param_groups:
            names = group.get("param_names")
            interval = group["update_interval"] if group["mask"] is not None else None
            for i, p in enumerate(group["params"] if interval else ()):
                state = self.state[p]
                if id(p) not in updated or state["step"] % interval != 0:
                    continue
                changed = self._refresh_mask(p, group, offset + i)
                name = names[i] if names else f"param{offset + i}"
                refreshed.append((state["step"], name, changed, state["indices"].numel()))
            offset += len(group["params"])
        if refreshed:
            self._record_refresh(refreshed)

    def _refresh_mask(self, p: torch.Tensor, group: dict, position: int) -> int:
        """Recompute p's mask from its current weights; returns entries that changed."""
        state = self.state[p]
        refresh = state["step"] // group["update_interval"]
        new = _mask_indices(p, group, position, refresh)
        old = state["indices"]
        slot = torch.searchsorted(old, new).clamp_(max=old.numel() - 1)
        stays = old[slot] == new
        for key in ("exp_avg", "exp_avg_sq"):
            carried = torch.zeros_like(state[key])
            carried[stays] = state[key][slot[stays]]
            state[key] = carried
        state["indices"] = new
        # A gathered gradient is laid out by the old mask; it cannot be reused.
        self._grad_buffers.pop(p, None)
        self._freed_sq_norms.pop(p, None)
        return new.numel() - int(stays.sum())

    def _record_refresh(self, refreshed: list) -> None:
        for step in sorted({r[0] for r in refreshed}):
            rows = [r for r in refreshed if r[0] == step]
            changed = sum(r[2] for r in rows)
            entries = sum(r[3] for r in rows)
            self._refresh_events.append({
                "step": step,
                "changed_fraction": changed / entries,
                "entries_changed": changed,
                "entries": entries,
                "per_param": {r[1]: r[2] / r[3] for r in rows},
            })


class _Batch:
    """The 1-D fp32 vectors of one step, lined up for torch._foreach ops."""

    def __init__(self, group: dict):
        self.group = group  # any group with these hyperparameters
        self.entries = 0
        self.params, self.indices, self.weights, self.grads = [], [], [], []
        self.exp_avgs, self.exp_avg_sqs, self.steps = [], [], []

    def add(self, p, indices, weight, grad, state) -> None:
        self.entries += weight.numel()
        self.params.append(p)
        self.indices.append(indices)
        self.weights.append(weight)
        self.grads.append(grad)
        self.exp_avgs.append(state["exp_avg"])
        self.exp_avg_sqs.append(state["exp_avg_sq"])
        self.steps.append(state["step"])

    def apply(self) -> None:
        if self.params:
            _adamw_update(self, self.group)
            _write_back(self)


def _hyperparameters(group: dict) -> tuple:
    return (group["lr"], tuple(group["betas"]), group["eps"], group["weight_decay"])


def _adamw_update(batch: _Batch, group: dict) -> None:
    """The transformers-style AdamW step on the gathered vectors (weights updated in place)."""
    beta1, beta2 = group["betas"]
    lr, weight_decay = group["lr"], group["weight_decay"]
    torch._foreach_lerp_(batch.exp_avgs, batch.grads, 1 - beta1)
    torch._foreach_mul_(batch.exp_avg_sqs, beta2)
    torch._foreach_addcmul_(batch.exp_avg_sqs, batch.grads, batch.grads, 1 - beta2)
    denominators = torch._foreach_sqrt(batch.exp_avg_sqs)
    torch._foreach_add_(denominators, group["eps"])
    step_sizes = [-lr * math.sqrt(1 - beta2**t) / (1 - beta1**t) for t in batch.steps]
    torch._foreach_addcdiv_(batch.weights, batch.exp_avgs, denominators, step_sizes)
    if weight_decay != 0:
        # Decoupled decay after the Adam step, on the updated weight, as transformers does.
        torch._foreach_add_(batch.weights, batch.weights, alpha=-lr * weight_decay)


def _write_back(batch: _Batch) -> None:
    """Put updated weights into the parameters (dense fp32 ones were updated in place)."""
    for p, indices, weight in zip(batch.params, batch.indices, batch.weights):
        if indices is not None:
            p.view(-1).index_copy_(0, indices, weight.to(p.dtype))
        elif not _updates_in_place(p):
            p.copy_(weight.view(p.shape))


def _updates_in_place(p: torch.Tensor) -> bool:
    return p.dtype == torch.float32 and p.is_contiguous()


def _start_dense_state(p: torch.Tensor, state: dict) -> None:
    state["step"] = 0
    state["exp_avg"] = torch.zeros(p.numel(), dtype=torch.float32, device=p.device)
    state["exp_avg_sq"] = torch.zeros(p.numel(), dtype=torch.float32, device=p.device)


def _gather_hook(optimizer_ref: weakref.ref):
    # A weak reference: the hook lives on the parameter and must not keep the optimizer alive.
    def hook(p: torch.Tensor) -> None:
        optimizer = optimizer_ref()
        if optimizer is not None and p.grad is not None and p in optimizer.state:
            optimizer._absorb_grad(p)

    return hook


def _mask_indices(p: torch.Tensor, group: dict, position: int, refresh: int) -> torch.Tensor:
    """Sorted flat indices (int32 when they fit) of p's mask at the given refresh."""
    k = lora_budget(tuple(p.shape), group["lora_rank"])
    # Seeded by (seed, parameter, refresh) so a resumed run draws the same random masks.
    generator = torch.Generator().manual_seed(
        (group["seed"] * 1_000_003 + position * 10_007 + refresh) % 2**63
    )
    mask = compute_mask(
        group["mask"], p.detach(), k=k, filter_rank=group["filter_rank"],
        svd=group["svd"], generator=generator,
    )
    indices = mask.reshape(-1).nonzero().squeeze(1)  # nonzero returns them sorted
    return indices.int() if p.numel() < _INT32_NUMEL_LIMIT else indices


def _check_group(group: dict) -> None:
    """Raise LiftError with a one-line reason when a param group's settings are invalid."""
    betas = group["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise LiftError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    lr, (beta1, beta2) = group["lr"], betas
    if not _is_number(lr) or lr <= 0:
        raise LiftError(f"learning rate (lr) must be a number > 0, got {lr!r}")
    for name, beta in (("beta1", beta1), ("beta2", beta2)):
        if not _is_number(beta) or not 0 <= beta < 1:
            raise LiftError(f"{name} must be in [0, 1), got {beta!r}")
    for name in ("eps", "weight_decay"):
        if not _is_number(group[name]) or group[name] < 0:
            raise LiftError(f"{name} must be a number >= 0, got {group[name]!r}")
    if group["mask"] is not None:
        _check_masked_group(group)


def _check_masked_group(group: dict) -> None:
    name = group["mask"]
    if name not in MASK_STRATEGIES:
        raise LiftError(f"unknown mask {name!r} (allowed: {', '.join(MASK_STRATEGIES)}, or None)")
    interval = group["update_interval"]
    if interval is not None and (not _is_whole(interval) or interval < 1):
        raise LiftError(f"update_interval must be a whole number >= 1 (or None), got {interval!r}")
    if group["svd"] not in SVD_MODES:
        raise LiftError(f"unknown svd mode {group['svd']!r} (allowed: {', '.join(SVD_MODES)})")
    if not _is_whole(group["seed"]):
        raise LiftError(f"seed must be a whole number, got {group['seed']!r}")
    if group["lora_rank"] is None:
        raise LiftError(f"mask {name!r} needs lora_rank (the budget rank)")
    for p in group["params"]:
        if p.ndim != 2 or not p.is_floating_point() or not p.is_contiguous():
            raise LiftError(
                f"mask {name!r} needs contiguous 2-D float weights, got a "
                f"{p.dtype} tensor of shape {tuple(p.shape)}"
            )
        lora_budget(tuple(p.shape), group["lora_rank"])
        if MASK_STRATEGIES[name].uses_filter_rank:
            if group["filter_rank"] is None:
                raise LiftError(f"mask {name!r} needs filter_rank")
            check_filter_rank(tuple(p.shape), group["filter_rank"])


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_whole(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
