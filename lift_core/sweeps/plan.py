"""A sweep's grid and the runs it stands for, each checked before anything is trained.

A grid is methods x learning rates x seeds, optionally x budgets (a LoRA-equivalent rank,
the ``lora_rank`` setting); :func:`plan_runs` turns it into one named
:class:`~lift_core.train.config.FinetuneConfig` per run, in a fixed order (seed, method,
budget, learning rate), so that the first seed's whole grid is done first and a partial
sweep already compares every method. Dense methods (full fine-tuning) have no budget and
get one run per learning rate and seed. Every bad value is one :class:`LiftError` line.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from lift_core.errors import LiftError
from lift_core.train.config import FinetuneConfig
from lift_core.train.registry import default_lr, get_method

# FinetuneConfig fields the grid sets per run; the sweep's own options replace them.
GRID_FIELDS = ("method", "lr", "seed", "lora_rank", "out_dir", "overwrite")


@dataclass(frozen=True)
class SweepGrid:
    """What a sweep varies; ``lrs`` None: each method's default rate, ``budgets`` None: the
    ``lora_rank`` setting for every run (no budget axis)."""

    methods: tuple[str, ...]
    lrs: tuple[float, ...] | None = None
    seeds: tuple[int, ...] = (0,)
    budgets: tuple[int, ...] | None = None

    def __post_init__(self):
        from lift_core.train.registry import parse_methods  # unknown, repeated or no methods

        parse_methods(",".join(self.methods))
        _check_values("--lrs", self.lrs, float, lambda v: 0 < v < math.inf, "numbers > 0")
        _check_values("--seeds", self.seeds, int, lambda v: v >= 0, "whole numbers >= 0")
        _check_values("--budgets", self.budgets, int, lambda v: v >= 1, "whole numbers >= 1")
        if self.seeds is None:
            raise LiftError("--seeds is empty: give at least one seed, e.g. 0,1,2")

    def as_record(self) -> dict:
        """The grid as sweep.json keeps it."""
        return {"methods": list(self.methods), "lrs": _listed(self.lrs),
                "seeds": list(self.seeds), "budgets": _listed(self.budgets)}


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its folder name (relative to the sweep folder) and settings."""

    name: str
    budget: int | None  # the grid's budget, None without a budget axis or for a dense method
    config: FinetuneConfig


def parse_grid(methods: str, lrs: str | None = None, seeds: str | None = "0",
               budgets: str | None = None) -> SweepGrid:
    """A grid from comma-separated option texts (``--methods lift,full --lrs 1e-3,1e-2``).

    Raises:
        LiftError: a value that is not a number, out of range, repeated, or an empty list.
    """
    return SweepGrid(methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
                     lrs=_parse_list("--lrs", lrs, float), seeds=_parse_list("--seeds", seeds, int),
                     budgets=_parse_list("--budgets", budgets, int))


def run_name(method: str, lr: float, seed: int, budget: int | None = None) -> str:
    """The run's folder name: ``lift-b4-lr0.001-s0``, ``full-lr0.0001-s2``."""
    return f"{method}" + (f"-b{budget}" if budget is not None else "") + f"-lr{lr:g}-s{seed}"


def plan_runs(grid: SweepGrid, out: str | os.PathLike, **shared) -> list[PlannedRun]:
    """Every run of ``grid`` into ``out/<run name>``, each config validated.

    Args:
        grid: what varies.
        out: the sweep folder.
        **shared: any other FinetuneConfig field, the same for every run (not those in
            ``GRID_FIELDS``; ``lora_rank`` only without ``budgets``).

    Raises:
        LiftError: a bad setting, or two runs that would share a folder name.
    """
    given = sorted(set(shared) & set(GRID_FIELDS) - {"lora_rank"})
    if given:
        raise LiftError(f"a sweep sets {', '.join(given)} per run; leave it out of the shared settings")
    if (shared.get("processes") or 1) > 1:  # runs are trained in this process, one at a time
        raise LiftError("a sweep trains its runs in one process; leave out --processes")
    if grid.budgets is not None and shared.get("lora_rank") is not None:
        raise LiftError("give the budget either as --budgets (a sweep axis) or as --lora-rank, not both")
    out = Path(out).expanduser()
    runs, names = [], set()
    for seed in grid.seeds:
        for method in grid.methods:
            dense = get_method(method).kind == "dense"
            for budget in (None,) if dense or grid.budgets is None else grid.budgets:
                for lr in grid.lrs or (None,):
                    name = run_name(method, default_lr(method) if lr is None else lr, seed, budget)
                    if name in names:
                        raise LiftError(f"two learning rates of --lrs give the same run {name}; "
                                        "give rates that differ in their first 6 digits")
                    names.add(name)
                    settings = {**shared, **({"lora_rank": budget} if budget is not None else {})}
                    config = FinetuneConfig(method=method, lr=lr, seed=seed,
                                            out_dir=str(out / name), overwrite=True, **settings)
                    runs.append(PlannedRun(name, budget, config))
    return runs


def _parse_list(option: str, text: str | None, kind: type):
    if text is None:
        return None
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise LiftError(f"{option} is empty: give comma-separated values or leave it out")
    try:
        return tuple(kind(item) for item in items)
    except ValueError:
        bad = next(i for i in items if not _parses(kind, i))
        what = "a number" if kind is float else "a whole number"
        raise LiftError(f"{option}: {bad!r} is not {what}") from None


def _parses(kind: type, text: str) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


def _check_values(option: str, values, kind: type, allowed, what: str) -> None:
    if values is None:
        return
    if not values:
        raise LiftError(f"{option} is empty: give comma-separated values or leave it out")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
            raise LiftError(f"{option}: {value!r} is not {'a number' if kind is float else 'a whole number'}")
        if not allowed(value):
            raise LiftError(f"{option} takes {what}, got {value:g}")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise LiftError(f"{option} repeats {', '.join(f'{v:g}' for v in repeated)}; give each value once")


def _listed(values):
    return None if values is None else list(values)
