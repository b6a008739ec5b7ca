"""The AdamW update rule of SparseAdamW, on 1-D vectors of values and moments.

Nothing here knows about masks or parameters: :class:`AdamWRule` takes lists of 1-D fp32
weights, gradients and moments (the trained entries of some matrices, already gathered)
and updates them in place with the transformers-library AdamW form the LIFT authors ran.
Its settings are checked by :func:`check_adamw_settings`, one line per problem.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lift_core.errors import LiftError


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
