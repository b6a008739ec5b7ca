"""The mask lifecycle of SparseAdamW: selection, refresh, carrying moments, churn events.

A masked parameter's optimizer state is ``{"step", "indices", "exp_avg", "exp_avg_sq"}``:
the sorted flat indices of its k trained entries (int32 when they fit) and two 1-D fp32
moments of length k. A 3-D parameter (experts, out, in), a mixture-of-experts block's
experts, is a stack of matrices: each expert gets its own mask and budget, and the state
holds their union as flat indices into the whole parameter, so the update, the gradient
gathering and the refresh treat it like any other parameter. :class:`MaskLifecycle` creates that state from the weights at
construction, recomputes the mask from the current weights every ``update_interval``
steps (entries that stay keep their moments, entries that enter start at zero, ``step``
goes on), and logs one churn event per refresh step.
"""

from __future__ import annotations

import torch

from lift_core.checks import check_filter_rank, check_svd_mode
from lift_core.errors import LiftError
from lift_core.lowrank.masks import MASK_STRATEGIES, compute_mask, lora_budget
from lift_core.optim.update import zero_moments

# Flat indices fit int32 (4 bytes) below this many entries; larger matrices need int64.
_INT32_NUMEL_LIMIT = 2**31


def select_mask(p: torch.Tensor, group: dict, position: int, refresh: int) -> torch.Tensor:
    """Sorted flat indices (int32 when they fit) of ``p``'s mask at the given refresh.

    Args:
        p: a 2-D weight, or a 3-D stack of expert matrices (one mask each); the mask is
            computed from its current values.
        group: the param group (``mask``, ``lora_rank``, ``filter_rank``, ``svd``, ``seed``).
        position: p's index over all groups (state_dict order); seeds random choices.
        refresh: 0 for the first mask, then the number of the refresh.
    """
    matrices = p.detach() if p.ndim == 3 else p.detach().unsqueeze(0)  # (experts, out, in)
    k = lora_budget(tuple(matrices.shape[1:]), group["lora_rank"])
    # Seeded by (seed, parameter, refresh) so a resumed run draws the same random masks.
    generator = torch.Generator().manual_seed(
        (group["seed"] * 1_000_003 + position * 10_007 + refresh) % 2**63
    )
    mask = torch.stack([
        compute_mask(group["mask"], matrix, k=k, filter_rank=group["filter_rank"],
                     svd=group["svd"], generator=generator)
        for matrix in matrices
    ])
    indices = mask.reshape(-1).nonzero().squeeze(1)  # nonzero returns them sorted
    return indices.int() if p.numel() < _INT32_NUMEL_LIMIT else indices


def indices_to_mask(indices: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The bool mask of ``like``'s shape that is True at the flat ``indices``."""
    flat = torch.zeros(like.numel(), dtype=torch.bool, device=like.device)
    flat[indices.long()] = True
    return flat.view(like.shape)


def carry_moments(old: torch.Tensor, new: torch.Tensor,
                  moments: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """Moments laid out by the sorted indices ``new``, carried over from those of ``old``.

    Entries in both masks keep their values; entries only in ``new`` start at zero. The
    two may differ in length (one rank's slice of a sharded matrix's mask; either empty).

    Returns:
        (the new moment vectors by key, how many entries of ``new`` were not in ``old``).
    """
    if old.numel() == 0:
        return {key: moment.new_zeros(new.numel()) for key, moment in moments.items()}, new.numel()
    slot = torch.searchsorted(old, new).clamp_(max=old.numel() - 1)
    stays = old[slot] == new
    carried = {}
    for key, moment in moments.items():
        carried[key] = moment.new_zeros(new.numel())
        carried[key][stays] = moment[slot[stays]]
    return carried, new.numel() - int(stays.sum())


class MaskLifecycle:
    """Starts, refreshes and re-lays out the masked state; keeps the churn events."""

    def __init__(self):
        self._events: list[dict] = []

    @staticmethod
    def start(p: torch.Tensor, group: dict, position: int) -> dict:
        """The state of a masked parameter at construction: first mask, zero moments."""
        indices = select_mask(p, group, position, refresh=0)
        return {"step": 0, "indices": indices, **zero_moments(indices.numel(), p.device)}

    def refresh_due(self, param_groups: list[dict], state: dict,
                    updated: set[int]) -> list[torch.Tensor]:
        """Refresh the masks of just-updated params whose step is a multiple of the interval.

        Args:
            param_groups: the optimizer's groups; only masked ones with an interval count.
            state: the optimizer's state, by parameter (updated in place).
            updated: ``id`` of every parameter the step just updated.

        Returns:
            The parameters whose mask was recomputed (their gradient layout changed).
        """
        refreshed, rows, offset = [], [], 0
        for group in param_groups:
            names = group.get("param_names")
            interval = group["update_interval"] if group["mask"] is not None else None
            for i, p in enumerate(group["params"] if interval else ()):
                p_state = state[p]
                if id(p) not in updated or p_state["step"] % interval != 0:
                    continue
                changed = self._refresh(p, p_state, group, offset + i)
                name = names[i] if names else f"param{offset + i}"
                rows.append((p_state["step"], name, changed, p_state["indices"].numel()))
                refreshed.append(p)
            offset += len(group["params"])
        self._events += churn_events(rows)
        return refreshed

    def pop_events(self) -> list[dict]:
        """Churn events since the last call, oldest first (see :func:`churn_events`)."""
        events, self._events = self._events, []
        return events

    @staticmethod
    def _refresh(p: torch.Tensor, p_state: dict, group: dict, position: int) -> int:
        new = select_mask(p, group, position, p_state["step"] // group["update_interval"])
        moments = {key: p_state[key] for key in ("exp_avg", "exp_avg_sq")}
        carried, changed = carry_moments(p_state["indices"], new, moments)
        p_state.update(carried, indices=new)
        return changed


def churn_events(rows: list[tuple]) -> list[dict]:
    """One event per step from ``(step, name, entries_changed, entries)`` rows.

    Each event is ``{"step", "changed_fraction", "entries_changed", "entries",
    "per_param"}``: the fraction over all matrices refreshed at that step, and per matrix.
    """
    events = []
    for step in sorted({row[0] for row in rows}):
        at_step = [row for row in rows if row[0] == step]
        changed = sum(row[2] for row in at_step)
        entries = sum(row[3] for row in at_step)
        events.append({
            "step": step,
            "changed_fraction": changed / entries,
            "entries_changed": changed,
            "entries": entries,
            "per_param": {row[1]: row[2] / row[3] for row in at_step},
        })
    return events


def check_mask_settings(group: dict) -> None:
    """Raise LiftError with a one-line reason when a masked group's settings are bad."""
    name = group["mask"]
    if name not in MASK_STRATEGIES:
        raise LiftError(f"unknown mask {name!r} (allowed: {', '.join(MASK_STRATEGIES)}, or None)")
    interval = group["update_interval"]
    if interval is not None and (not _is_whole(interval) or interval < 1):
        raise LiftError(f"update_interval must be a whole number >= 1 (or None), got {interval!r}")
    check_svd_mode(group["svd"])
    if not _is_whole(group["seed"]):
        raise LiftError(f"seed must be a whole number, got {group['seed']!r}")
    if group["lora_rank"] is None:
        raise LiftError(f"mask {name!r} needs lora_rank (the budget rank)")
    for p in group["params"]:
        if p.ndim not in (2, 3) or not p.is_floating_point() or not p.is_contiguous():
            raise LiftError(
                f"mask {name!r} needs contiguous 2-D float weights (or 3-D expert stacks), "
                f"got a {p.dtype} tensor of shape {tuple(p.shape)}"
            )
        matrix_shape = tuple(p.shape[-2:])  # one expert's (out, in) for a 3-D stack
        lora_budget(matrix_shape, group["lora_rank"])
        if MASK_STRATEGIES[name].uses_filter_rank:
            if group["filter_rank"] is None:
                raise LiftError(f"mask {name!r} needs filter_rank")
            check_filter_rank(matrix_shape, group["filter_rank"])


def _is_whole(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
