"""SparseAdamW: AdamW that trains only a refreshed mask of each matrix (LIFT's optimizer).

A torch optimizer composing three parts with one job each: the update rule on 1-D vectors
(:mod:`.update`), the mask lifecycle (:mod:`.mask_state`) and
the source of masked gradients with clipping (:mod:`.gradients`). A group without a mask
is dense AdamW with the same rule, so "full fine-tuning" and LIFT differ only in which
entries move.

Group settings (each also a constructor default): ``mask`` (a name in
:data:`lift_core.lowrank.masks.MASK_STRATEGIES`, or None for a dense group), ``lora_rank`` (budget
k = ``lora_budget(shape, lora_rank)``), ``filter_rank``, ``update_interval`` (steps between
mask refreshes; None keeps the first mask), ``svd`` ("exact" or "randomized"), ``seed``.
Masked parameters must be contiguous 2-D tensors; a GPT-2 Conv1D weight stored (in, out)
is masked as stored (the top-k of |W_r| does not care).
"""

from __future__ import annotations

from itertools import chain

import torch

from lift_core.errors import LiftError
from lift_core.optim.gradients import GradientGatherer
from lift_core.optim.mask_state import MaskLifecycle, check_mask_settings, indices_to_mask
from lift_core.optim.update import (
    AdamWRule,
    StepBatches,
    check_adamw_settings,
    zero_moments,
)


class SparseAdamW(torch.optim.Optimizer):
    """AdamW over a sparse, periodically refreshed mask per matrix, or dense per group.

    The first masks are computed at construction, from the weights as they are then.
    Group settings: see the module docstring. Rule: :class:`AdamWRule` (transformers'
    AdamW, what the LIFT authors ran); weight decay hits trained entries only.

    Args:
        params: parameters, named parameters or param-group dicts, as for torch.
        lr, betas, eps, weight_decay: AdamW settings.
        free_dense_grads: gather each masked gradient into a 1-D buffer in backward and
            drop the dense ``p.grad``; clip with :meth:`clip_grad_norm_` then.
        grad_gatherer: the :class:`GradientGatherer` to use (one per optimizer); by
            default one is created with ``free_dense_grads``.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.95),
                 eps: float = 1e-6, weight_decay: float = 0.0, *, mask: str | None = None,
                 lora_rank: int | None = None, filter_rank: int | None = None,
                 update_interval: int | None = None, svd: str = "exact", seed: int = 0,
                 free_dense_grads: bool = False,
                 grad_gatherer: GradientGatherer | None = None):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, mask=mask,
                        lora_rank=lora_rank, filter_rank=filter_rank,
                        update_interval=update_interval, svd=svd, seed=seed)
        if grad_gatherer is not None and free_dense_grads:
            raise LiftError("free_dense_grads goes to the GradientGatherer when one is given: "
                            "GradientGatherer(free_dense_grads=True)")
        self.grad_gatherer = (GradientGatherer(free_dense_grads) if grad_gatherer is None
                              else grad_gatherer)
        self.mask_lifecycle = MaskLifecycle()
        super().__init__(params, defaults)

    # --- torch.optim interface ----------------------------------------------------------

    def add_param_group(self, param_group: dict) -> None:
        """Add a group, validate its settings and compute the first masks (LiftError)."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        offset = sum(len(g["params"]) for g in self.param_groups[:-1])
        try:
            check_adamw_settings(group)
            if group["mask"] is not None:
                check_mask_settings(group)
                for position, p in enumerate(group["params"], start=offset):
                    self.state[p] = self.mask_lifecycle.start(p, group, position)
                    self.grad_gatherer.track(p, self.state[p]["indices"])
        except LiftError:
            for p in group["params"]:
                self.state.pop(p, None)
            self.grad_gatherer.untrack(group["params"])
            self.param_groups.pop()
            raise

    @torch.no_grad()
    def step(self, closure=None):
        """One AdamW step on every parameter with a gradient, then any due mask refreshes."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        batches, updated = StepBatches(), set()
        for group in self.param_groups:
            for p in group["params"]:
                if _queue(p, group, self.state[p], self.grad_gatherer, batches):
                    updated.add(id(p))
        batches.flush()
        for p in self.mask_lifecycle.refresh_due(self.param_groups, self.state, updated):
            self.grad_gatherer.track(p, self.state[p]["indices"])
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear dense gradients and the gathered masked-gradient buffers."""
        super().zero_grad(set_to_none)
        self.grad_gatherer.zero_grad(set_to_none)

    def load_state_dict(self, state_dict: dict) -> None:
        """Load state saved by :meth:`state_dict`: masks, moments and steps, exactly.

        torch casts floating state to the parameter's dtype on load, which would turn
        int32 indices into floats and fp32 moments into bf16; we restore ours as saved.
        """
        tensors, rest = _split_tensor_state(state_dict)
        super().load_state_dict(rest)
        saved_ids = chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        _restore_tensors(self.state, tensors, dict(zip(saved_ids, self._params())))
        self.grad_gatherer.zero_grad()
        for group in self.param_groups:
            for p in group["params"] if group["mask"] is not None else ():
                if "indices" not in self.state[p]:
                    raise LiftError("the saved optimizer state has no mask for a masked parameter")
                self.grad_gatherer.track(p, self.state[p]["indices"])

    # --- public extras ------------------------------------------------------------------

    free_dense_grads = property(lambda self: self.grad_gatherer.free_dense_grads,
                                doc="Whether masked gradients are gathered in backward.")

    def mask_of(self, param: torch.Tensor) -> torch.Tensor:
        """The entries ``param`` trains, as a bool tensor of its shape (dense: all True)."""
        group = next((g for g in self.param_groups if any(p is param for p in g["params"])), None)
        if group is None:
            raise LiftError("this parameter is not optimized by this SparseAdamW")
        if group["mask"] is None:
            return torch.ones_like(param, dtype=torch.bool)
        return indices_to_mask(self.state[param]["indices"], param)

    def remove_grad_hooks(self) -> None:
        """Stop gathering gradients in backward: backward keeps dense grads again.

        Call it before training the same model with another optimizer; otherwise this one's
        hooks would still take the masked gradients away while it is alive.
        """
        self.grad_gatherer.remove_hooks()

    def state_bytes(self) -> int:
        """Bytes held in optimizer state (indices and moments; not gradient buffers)."""
        return sum(t.numel() * t.element_size() for state in self.state.values()
                   for t in state.values() if isinstance(t, torch.Tensor))

    def pop_refresh_events(self) -> list[dict]:
        """Mask refreshes since the last call, oldest first, and forget them.

        Each is ``{"step", "changed_fraction", "entries_changed", "entries", "per_param"}``;
        ``per_param`` is keyed by parameter name when the optimizer was given named
        parameters, else by "param<i>" (state_dict order).
        """
        return self.mask_lifecycle.pop_events()

    def clip_grad_norm_(self, max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
        """Like ``torch.nn.utils.clip_grad_norm_``, over dense grads and gathered buffers.

        See :meth:`GradientGatherer.clip_grad_norm_`. Returns the total norm before clipping.
        """
        dense = [p.grad for p in self._params() if p.grad is not None]
        return self.grad_gatherer.clip_grad_norm_(dense, max_norm, norm_type)

    # --- internals ----------------------------------------------------------------------

    # What older callers (benchmarks, tests) reach for; the gatherer owns both now.
    _grad_buffers = property(lambda self: self.grad_gatherer.buffers)
    _absorb_grad = property(lambda self: self.grad_gatherer.absorb)

    def _params(self):
        return chain.from_iterable(g["params"] for g in self.param_groups)


def _queue(p: torch.Tensor, group: dict, state: dict, gatherer: GradientGatherer,
           batches: StepBatches) -> bool:
    """Queue p's update if it has a gradient, counting the step; returns whether it did."""
    if group["mask"] is None:
        if p.grad is None:
            return False
        if not state:  # dense state starts at the first gradient, as in torch's AdamW
            state.update(step=0, **zero_moments(p.numel(), p.device))
        indices, grad = None, p.grad.reshape(-1)
    else:
        indices = state["indices"].long()  # int64 gathers and copies are the fast ones
        grad = gatherer.masked_grad(p, indices)
        if grad is None:
            return False
    state["step"] += 1
    batches.add(p, AdamWRule.of_group(group), state, indices, grad)
    return True


def _split_tensor_state(state_dict: dict) -> tuple[dict, dict]:
    """(tensor state by saved id, the state_dict without those tensors for torch to load)."""
    tensors = {pid: {k: v for k, v in s.items() if isinstance(v, torch.Tensor)}
               for pid, s in state_dict["state"].items()}
    rest = dict(state_dict)
    rest["state"] = {pid: {k: v for k, v in s.items() if k not in tensors[pid]}
                     for pid, s in state_dict["state"].items()}
    return tensors, rest


def _restore_tensors(state: dict, tensors: dict, id_to_param: dict) -> None:
    """Put the saved tensors back into ``state`` as saved (dtype kept, moved to p's device)."""
    for pid, saved in tensors.items():
        p = id_to_param[pid]
        state[p].update({k: v.to(p.device, copy=True) for k, v in saved.items()})
