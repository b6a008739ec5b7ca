"""The AdamW update rule of SparseAdamW, and one step's vectors lined up for it.

:class:`AdamWRule` knows nothing about masks or parameters: it takes lists of 1-D fp32
weights, gradients and moments (the trained entries of some matrices, already gathered)
and updates them in place with the transformers-library AdamW form the LIFT authors ran.
:class:`StepBatches` receives, per parameter, the weight vector to update (masked entries
gathered, or the whole dense tensor), its gradient and its moments, groups them by rule
(LIFT's one group per matrix shares foreach calls), applies the rule whenever a batch
reaches ``_CHUNK_ENTRIES`` entries and writes the entries back into the parameters.
Settings are checked by :func:`check_adamw_settings`, one line per problem.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lift_core.errors import LiftError

# Entries per batch of foreach calls: large enough to amortize launches, small enough
# that the step's temporaries (gathered weights and grads, int64 indices, denominators)
# stay far below the dense gradients the masks save (~20 bytes x this).
_CHUNK_ENTRIES = 2**24


@dataclass(frozen=True)
class AdamWRule:
    """One AdamW step, per entry (hashable: equal rules share foreach calls).

    ``m = b1 m + (1-b1) g``; ``v = b2 v + (1-b2) g^2``;
    ``w -= lr sqrt(1-b2^t)/(1-b1^t) * m/(sqrt(v)+eps)``; then ``w -= lr wd w``
    (decoupled decay on the updated weight, as transformers does).
    """

    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float

    @classmethod
    def of_group(cls, group: dict) -> "AdamWRule":
        """The rule of a torch param group (``lr``, ``betas``, ``eps``, ``weight_decay``)."""
        beta1, beta2 = group["betas"]
        return cls(group["lr"], beta1, beta2, group["eps"], group["weight_decay"])

    def step_size(self, t: int) -> float:
        """lr with the bias correction of step ``t`` (1-based) folded in."""
        return self.lr * math.sqrt(1 - self.beta2**t) / (1 - self.beta1**t)

    def apply_(
        self,
        weights: list[torch.Tensor],
        grads: list[torch.Tensor],
        exp_avgs: list[torch.Tensor],
        exp_avg_sqs: list[torch.Tensor],
        steps: list[int],
    ) -> None:
        """Update weights and moments in place; ``steps[i]`` is t for vector i (already +1).

        All lists line up entry by entry; tensors are 1-D fp32 of equal length per index.
        """
        if not weights:
            return
        torch._foreach_lerp_(exp_avgs, grads, 1 - self.beta1)
        torch._foreach_mul_(exp_avg_sqs, self.beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - self.beta2)
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(denominators, self.eps)
        step_sizes = [-self.step_size(t) for t in steps]
        torch._foreach_addcdiv_(weights, exp_avgs, denominators, step_sizes)
        if self.weight_decay != 0:
            torch._foreach_add_(weights, weights, alpha=-self.lr * self.weight_decay)


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


def zero_moments(entries: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Fresh fp32 ``exp_avg`` and ``exp_avg_sq`` vectors of length ``entries``."""
    return {key: torch.zeros(entries, dtype=torch.float32, device=device)
            for key in ("exp_avg", "exp_avg_sq")}


def check_adamw_settings(group: dict) -> None:
    """Raise LiftError with a one-line reason when lr, betas, eps or weight_decay is bad."""
    betas = group["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise LiftError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    lr, (beta1, beta2) = group["lr"], betas
    if not is_number(lr) or lr <= 0:
        raise LiftError(f"learning rate (lr) must be a number > 0, got {lr!r}")
    for name, beta in (("beta1", beta1), ("beta2", beta2)):
        if not is_number(beta) or not 0 <= beta < 1:
            raise LiftError(f"{name} must be in [0, 1), got {beta!r}")
    for name in ("eps", "weight_decay"):
        if not is_number(group[name]) or group[name] < 0:
            raise LiftError(f"{name} must be a number >= 0, got {group[name]!r}")


def is_number(x) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
