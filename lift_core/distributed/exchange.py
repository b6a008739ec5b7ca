"""How gradients cross between ranks: dense (every entry) or sparse (the trained entries).

The ranks each back-propagate their slice of the global batch with the loss normalised by
the *global* token count, so the run's gradient is the plain sum of the ranks' gradients.

- Dense parameters (full fine-tuning, LoRA's factors): :func:`sum_dense_grads` all-reduces
  every ``p.grad`` before clipping, in flat buckets.
- Masked parameters, ``exchange="dense"``: :class:`DenseExchangeGatherer` all-reduces each
  dense gradient in the backward hook, *before* the masked entries are gathered and the
  dense norm recorded: the step, and the clipping by the norm of the whole gradient, are
  those of one process holding the global batch.
- Masked parameters, ``exchange="sparse"``: :class:`SparseExchangeGatherer` gathers the
  local masked entries and frees the dense gradient as in one process; the step all-reduces
  only the gathered buffers (k numbers per matrix instead of m*n). The untrained entries
  never cross, so clipping uses the norm of the trained entries: the same result as the
  dense path whenever clipping does not bind.

Every exchanged byte is counted in ``Exchange.bytes`` for the benchmarks and the summary.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from lift_core.optim.gradients import GradientGatherer

GRAD_EXCHANGES = ("dense", "sparse")

# Entries per flat all-reduce of dense gradients: one collective amortises its latency,
# and the flat copy stays a bounded extra buffer (64 MiB of fp32).
_BUCKET_ENTRIES = 2**24


class ByteCounter:
    """Bytes this rank sent into all-reduces since the last :meth:`take`."""

    def __init__(self):
        self.bytes = 0

    def all_reduce_(self, tensor: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
        self.bytes += tensor.numel() * tensor.element_size()
        dist.all_reduce(tensor, op=op)
        return tensor

    def take(self) -> int:
        taken, self.bytes = self.bytes, 0
        return taken


class DenseExchangeGatherer(GradientGatherer):
    """Masked gradients gathered in backward from the rank-summed dense gradient."""

    def __init__(self, counter: ByteCounter):
        super().__init__(free_dense_grads=True)
        self.counter = counter

    def absorb(self, p: torch.Tensor) -> None:
        self.counter.all_reduce_(p.grad)  # summed here, so the step has nothing to exchange
        super().absorb(p)


class SparseExchangeGatherer(GradientGatherer):
    """Local masked gradients gathered in backward; only they are summed across ranks."""

    record_dense_norms = False  # a local dense norm is not the global one: clip trained entries

    def __init__(self, counter: ByteCounter):
        super().__init__(free_dense_grads=True)
        self.counter = counter

    def exchange(self) -> None:
        """Sum every gathered buffer across ranks (flat buckets, in tracking order)."""
        _sum_in_buckets([self.buffers[p] for p in self._indices if p in self.buffers],
                        self.counter)


def make_gatherer(exchange: str, counter: ByteCounter):
    """The gatherer factory for SparseAdamW under ``exchange`` (one process: None)."""
    cls = {"dense": DenseExchangeGatherer, "sparse": SparseExchangeGatherer}[exchange]
    return lambda: cls(counter)


def sum_dense_grads(params, counter: ByteCounter) -> None:
    """All-reduce (sum) every dense ``p.grad`` of ``params`` across ranks."""
    _sum_in_buckets([p.grad for p in params if p.grad is not None], counter)


def _sum_in_buckets(tensors: list[torch.Tensor], counter: ByteCounter) -> None:
    """Sum ``tensors`` across ranks in place: flat buckets of one dtype and device each."""
    bucket, size = [], 0
    for tensor in tensors + [None]:
        last = tensor is None
        if bucket and (last or size + tensor.numel() > _BUCKET_ENTRIES
                       or (tensor.dtype, tensor.device) != (bucket[0].dtype, bucket[0].device)):
            flat = counter.all_reduce_(torch.cat([t.reshape(-1) for t in bucket]))
            for t, part in zip(bucket, flat.split([t.numel() for t in bucket])):
                t.copy_(part.view_as(t))
            bucket, size = [], 0
        if not last:
            bucket.append(tensor)
            size += tensor.numel()
