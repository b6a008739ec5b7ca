"""The Sweep tab's form: the grid (methods, learning rates, seeds, budgets) and its command.

The grid's lists are typed as comma lists, parsed and checked by the sweep command's own code
(:mod:`lift_core.sweeps.plan`: a bad entry is one line saying what was wrong); the shared
settings come from the Fine-tune form, turned into options the same way as for ``compare``
(:func:`lift_ui.train_form.compare_argv`), so a sweep run is
exactly the run the One-run tab would start with that method, rate, seed and budget. The
command is ``python -m lift_core sweep ... --out <runs>/sweep-<timestamp>``, shown before it
is launched through the same job manager as every other training job.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import streamlit as st

from lift_core.errors import LiftError
from lift_core.runs.compare import DEFAULT_METHODS
from lift_core.sweeps.plan import GRID_FIELDS, SweepGrid, parse_grid, plan_runs
from lift_core.train.config import FinetuneConfig
from lift_core.train.options import finetune_options
from lift_core.train.registry import default_lr, method_names
from lift_ui import train_form


def _per_run(grid: SweepGrid) -> tuple[str, ...]:
    # With a budget axis the grid sets the budget rank too; without one it is a shared setting.
    return tuple(f for f in GRID_FIELDS if f != "lora_rank" or grid.budgets is not None)


def shared_settings(settings: FinetuneConfig, grid: SweepGrid) -> dict:
    """The form's settings every run of ``grid`` shares (the grid sets the per-run ones)."""
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings) if f.name not in _per_run(grid)}


def sweep_argv(settings: FinetuneConfig, grid: SweepGrid, out: Path) -> list[str]:
    """Arguments after ``python -m lift_core`` for a sweep over ``grid`` with the form's other
    settings, written as for ``compare`` (only those that differ from the defaults)."""
    skip = _per_run(grid) + train_form.APP_SKIPPED_FIELDS
    argv = ["sweep", "--methods", ",".join(grid.methods)]
    if grid.lrs is not None:
        argv += ["--lrs", ",".join(f"{lr:g}" for lr in grid.lrs)]
    argv += ["--seeds", ",".join(str(s) for s in grid.seeds)]
    if grid.budgets is not None:
        argv += ["--budgets", ",".join(str(b) for b in grid.budgets)]
    return [*argv, *finetune_options(settings, skip=skip), "--no-progress", "--out", str(out)]


def _grid_widgets(settings: FinetuneConfig) -> SweepGrid | None:
    """The grid's widgets; its SweepGrid, or None with the reason shown."""
    methods = st.multiselect("Methods", method_names(), default=list(DEFAULT_METHODS), key="sw_methods")
    cols = st.columns(3)
    lrs = cols[0].text_input("Learning rates", key="sw_lrs", placeholder="each method's default",
                             help="A comma list, e.g. 1e-3, 3e-3, 1e-2; empty: each method's default ("
                             + ", ".join(f"{m} {default_lr(m):g}" for m in methods) + ").")
    seeds = cols[1].text_input("Seeds", value="0, 1, 2", key="sw_seeds", help="A comma list, e.g. 0, 1, 2.")
    budgets = cols[2].text_input(
        "Budget ranks (optional)", key="sw_budgets", placeholder=f"the form's {settings.lora_rank}",
        help="LoRA-equivalent ranks R, e.g. 1, 2, 4, 8: a sparse method trains (m+n)·R entries per "
             "matrix, LoRA has rank R; full fine-tuning ignores it. Empty: the form's budget rank.")
    if not methods:
        st.info("Pick at least one method.")
        return None
    try:  # the sweep command's own parsing and checks
        return parse_grid(",".join(methods), lrs.strip() or None, seeds, budgets.strip() or None)
    except LiftError as exc:
        st.error(str(exc))
        return None


def sweep_form(settings: FinetuneConfig) -> None:
    """The grid widgets, the command they make and its launch button."""
    grid = _grid_widgets(settings)
    if grid is None:
        return
    out = train_form.planned_dir("sweep", "sweep")
    try:  # every run's settings checked before anything starts, as the command will
        runs = len(plan_runs(grid, out, **shared_settings(settings, grid)))
    except LiftError as exc:
        st.error(str(exc))
        return
    st.caption(f"{runs} runs of {settings.steps} steps, one after another in one job; the other settings "
               "are the form's. Evaluate often enough to see when target accuracy crosses each level "
               "(e.g. every 25 steps on a subset of the eval sets). Running the same command again skips "
               "the runs already completed.")
    argv = sweep_argv(settings, grid, out)
    st.code(train_form.command_text(argv), language="bash", wrap_lines=True)
    train_form.launch_button("Run the sweep", argv, [out], kind="sweep", slot="sweep", settings=settings,
                             steps=settings.steps, job_label=f"sweep of {runs} runs ({', '.join(grid.methods)})",
                             key="sw_launch")
