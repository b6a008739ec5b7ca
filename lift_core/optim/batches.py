"""Line up one optimizer step's 1-D vectors for foreach calls, in bounded chunks.

:class:`StepBatches` receives, per parameter, the fp32 weight vector to update (the masked
entries, gathered, or the whole dense tensor), its gradient vector and its moments, groups
them by :class:`~lift_core.optim.update.AdamWRule` (LIFT's one group per matrix shares
calls), applies the rule whenever a batch reaches ``_CHUNK_ENTRIES`` entries, and writes the
updated entries back into the parameters.
"""

from __future__ import annotations

import torch

from lift_core.optim.update import AdamWRule

# Entries per batch of foreach calls: large enough to amortize launches, small enough
# that the step's temporaries (gathered weights and grads, int64 indices, denominators)
# stay far below the dense gradients the masks save (~20 bytes x this).
_CHUNK_ENTRIES = 2**24


class StepBatches:
    """The vectors of one step, by update rule; call :meth:`flush` after the last add."""

    def __init__(self):
        self._pending: dict[AdamWRule, _Batch] = {}

    def add(self, p: torch.Tensor, rule: AdamWRule, state: dict,
            indices: torch.Tensor | None, grad: torch.Tensor) -> None:
        """Queue ``p``'s update: masked entries at int64 ``indices``, or dense if None.

        ``state`` holds ``exp_avg``, ``exp_avg_sq`` and ``step`` (already counting this
        step); ``grad`` is the 1-D gradient of the same entries.
        """
        if indices is not None:
            weight = p.reshape(-1).index_select(0, indices)
        else:
            weight = p.view(-1) if _updates_in_place(p) else p.reshape(-1)
        batch = self._pending.get(rule)
        if batch is None:
            batch = self._pending[rule] = _Batch(rule)
        batch.add(p, indices, weight.float(), grad.float(), state)
        if batch.entries >= _CHUNK_ENTRIES:  # read at call time: tests shrink it
            self._pending.pop(rule).apply()

    def flush(self) -> None:
        """Apply every batch still pending."""
        for batch in self._pending.values():
            batch.apply()
        self._pending.clear()


class _Batch:
    """The 1-D fp32 vectors of parameters that share one rule, lined up for foreach ops."""

    def __init__(self, rule: AdamWRule):
        self.rule = rule
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
        self.rule.apply_(self.weights, self.grads, self.exp_avgs, self.exp_avg_sqs, self.steps)
        _write_back(self.params, self.indices, self.weights)


def _write_back(params, indices, weights) -> None:
    """Put updated weights into the parameters (dense fp32 ones were updated in place)."""
    for p, where, weight in zip(params, indices, weights):
        if where is not None:
            p.view(-1).index_copy_(0, where, weight.to(p.dtype))
        elif not _updates_in_place(p):
            p.copy_(weight.view(p.shape))


def _updates_in_place(p: torch.Tensor) -> bool:
    return p.dtype == torch.float32 and p.is_contiguous()
