"""Where SparseAdamW's masked gradients come from, and how they are clipped.

Autograd computes each dense gradient. A :class:`GradientGatherer` with
``free_dense_grads=True`` hooks every tracked parameter
(``register_post_accumulate_grad_hook``): the hook gathers the masked entries into a 1-D
fp32 buffer (adding across micro-batches), records the squared L2 norm of the dense
gradient and sets ``p.grad = None``, so at most a few dense gradients are alive at once.
Without the flag it gathers from ``p.grad`` at step time. Clipping uses the recorded dense
norms, so the total norm and the scale are those of a trainer holding all dense gradients.

The optimizer creates one, or is given one: a multi-process trainer can swap in a
subclass (for example one that all-reduces the buffers before the step).
"""

from __future__ import annotations

import weakref

import torch


class GradientGatherer:
    """Masked 1-D gradients per parameter, gathered in backward or at the step.

    Args:
        free_dense_grads: gather in a backward hook and free the dense ``p.grad``.
    """

    # Record each freed dense gradient's norm for clipping (a multi-process subclass whose
    # local dense gradient is not the run's turns it off: clipping then sees masked entries).
    record_dense_norms = True

    def __init__(self, free_dense_grads: bool = False):
        self.free_dense_grads = bool(free_dense_grads)
        self.buffers: dict[torch.Tensor, torch.Tensor] = {}
        # Squared L2 norm of each dense gradient the hooks freed (summed over micro-batches).
        self.freed_sq_norms: dict[torch.Tensor, torch.Tensor] = {}
        self._indices: dict[torch.Tensor, torch.Tensor] = {}
        self._hooks: dict[torch.Tensor, torch.utils.hooks.RemovableHandle] = {}

    def track(self, p: torch.Tensor, indices: torch.Tensor) -> None:
        """From now on ``p`` trains the sorted flat ``indices`` (first mask or a new one).

        Hooks ``p`` the first time (with ``free_dense_grads``, if it requires grad) and drops
        any buffer laid out by an earlier mask: it cannot be reused.
        """
        self._indices[p] = indices
        self.buffers.pop(p, None)
        self.freed_sq_norms.pop(p, None)
        if self.free_dense_grads and p.requires_grad and p not in self._hooks:
            self._hooks[p] = p.register_post_accumulate_grad_hook(_gather_hook(weakref.ref(self)))

    def untrack(self, params) -> None:
        """Forget ``params`` and remove their hooks (a param group that was rejected)."""
        for p in params:
            handle = self._hooks.pop(p, None)
            if handle is not None:
                handle.remove()
            for table in (self._indices, self.buffers, self.freed_sq_norms):
                table.pop(p, None)

    def absorb(self, p: torch.Tensor) -> None:
        """Add the masked entries of ``p``'s fresh dense gradient to its buffer, then free it."""
        gathered = p.grad.reshape(-1).index_select(0, self._indices[p].long())
        if self.record_dense_norms:
            sq_norm = p.grad.float().pow(2).sum()
            previous = self.freed_sq_norms.get(p)
            self.freed_sq_norms[p] = sq_norm if previous is None else previous + sq_norm
        buffer = self.buffers.get(p)
        if buffer is None:
            self.buffers[p] = gathered.float()
        else:
            buffer.add_(gathered)
        p.grad = None

    def masked_grad(self, p: torch.Tensor, indices: torch.Tensor) -> torch.Tensor | None:
        """The step's 1-D gradient of ``p`` at int64 ``indices``, or None if it has none."""
        buffer = self.buffers.get(p)
        if buffer is None and p.grad is not None:
            return p.grad.reshape(-1).index_select(0, indices)
        return buffer

    def exchange(self) -> None:
        """Make the buffers the run's gradients (multi-process subclasses sum them across
        processes here, before clipping); one process: nothing to do."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop (or zero) the buffers and forget the recorded dense norms."""
        self.freed_sq_norms.clear()
        if set_to_none:
            self.buffers.clear()
        else:
            for buffer in self.buffers.values():
                buffer.zero_()

    def remove_hooks(self) -> None:
        """Stop gathering in backward: dense gradients stay on the parameters again."""
        for handle in self._hooks.values():
            handle.remove()
        self._hooks.clear()
        self.free_dense_grads = False

    @torch.no_grad()
    def clip_grad_norm_(self, dense_grads: list[torch.Tensor], max_norm: float,
                        norm_type: float = 2.0) -> torch.Tensor:
        """Scale the buffers and ``dense_grads`` so their total norm is <= ``max_norm``.

        For the L2 norm a gathered parameter contributes the norm of its whole dense
        gradient (recorded by the hook): exact with one backward per step; with several
        micro-batches their norms add in quadrature. Other norms see the masked entries.

        Returns:
            The total norm before clipping (a 0-d tensor).
        """
        buffers = list(self.buffers.values())
        grads = buffers + dense_grads
        if not grads:
            return torch.tensor(0.0)
        device = grads[0].device
        if norm_type == 2.0 and len(self.freed_sq_norms) == len(buffers):
            squares = [n.to(device) for n in self.freed_sq_norms.values()]
            if dense_grads:
                squares += [n.to(device, torch.float32) ** 2
                            for n in torch._foreach_norm(dense_grads, 2.0)]
            total = torch.stack(squares).sum().sqrt()
        else:
            norms = torch._foreach_norm(grads, norm_type)
            total = torch.linalg.vector_norm(
                torch.stack([n.to(device, torch.float32) for n in norms]), norm_type)
        _scale_(grads, (max_norm / (total + 1e-6)).clamp(max=1.0))
        return total


def _scale_(grads: list[torch.Tensor], scale: torch.Tensor) -> None:
    """Multiply every gradient by ``scale`` (one foreach call per device)."""
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for grad in grads:
        by_device.setdefault(grad.device, []).append(grad)
    for device, same_device in by_device.items():
        torch._foreach_mul_(same_device, scale.to(device))


def _gather_hook(gatherer_ref: weakref.ref):
    # A weak reference: the hook lives on the parameter and must not keep the gatherer
    # (nor the optimizer holding it) alive.
    def hook(p: torch.Tensor) -> None:
        gatherer = gatherer_ref()
        if gatherer is not None and p.grad is not None and p in gatherer._indices:
            gatherer.absorb(p)

    return hook
