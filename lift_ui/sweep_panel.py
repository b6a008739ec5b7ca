"""The Sweep tab of the Fine-tune page: the grid form, a picker of sweeps, progress and views.

A sweep is one background job (``python -m lift_core sweep``) whose index ``sweep.json``
says which runs are done; this panel reads that index for the progress (done/total, ETA, a
status per run) and :mod:`lift_core.sweeps.views` for the four views, each chart with one or
two sentences on what it compares and why that is fair, and a CSV download. A sweep that
ran earlier (or ships in sample_runs/) opens from the picker; one that stopped can be
resumed (finished runs are skipped).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from lift_core.errors import LiftError
from lift_core.sweeps import views
from lift_core.sweeps.runner import SWEEP_FILE, read_index, sweep_status
from lift_core.train.config import FinetuneConfig
from lift_ui import sweep_form, train_form
from lift_ui.figures import sweep as figs

_LEVELS = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
_RUN_COLUMNS = ["name", "method", "lr", "seed", "budget", "status", "seconds"]
EXPLAIN = {
    "frontier": "Each point is one run (method × learning rate × seed × budget): right is more learned, "
                "up is more kept. The line joins each method's Pareto-optimal runs; hollow points are beaten "
                "in both by another run of the same method. Comparing whole fronts means no method is judged "
                "at a learning rate that suits another.",
    "at_target": "Along each run's evaluations, the source accuracy at the moment target accuracy first "
                 "reached the level (interpolated between evaluations). Methods are compared after learning "
                 "the same amount, whatever their speed or rate; runs that never reached a level are counted "
                 "(n/N reached), never averaged in.",
    "budget": "Final target accuracy and forgetting vs the share of block-linear entries trained, mean ± std "
              "over seeds; at each budget a method keeps its learning rate with the best mean target "
              "accuracy. Points at the same x spent the same budget, which is where the sparse methods "
              "should be compared.",
    "lr": "Final target and source accuracy vs learning rate, mean ± std over seeds. A method that only wins "
          "at one rate, or whose forgetting comes mostly from its rate, shows here.",
}


def find_sweeps() -> list[Path]:
    """Sweep folders (with sweep.json) in the runs folder and sample_runs/, newest first."""
    found = set()
    for root in (train_form.runs_root(), train_form.sample_runs_root()):
        for pattern in (SWEEP_FILE, f"*/{SWEEP_FILE}", f"*/*/{SWEEP_FILE}"):
            found.update(p.parent for p in root.glob(pattern))
    return sorted(found, key=lambda p: (p / SWEEP_FILE).stat().st_mtime, reverse=True)


def _running_sweep() -> Path | None:
    job = train_form.manager().active()
    if job is None or job.extra.get("kind") != "sweep":
        return None
    return Path(job.run_dirs[0])


def sweep_tab(settings: FinetuneConfig | None) -> None:
    """The whole tab: the grid form (when the settings are valid), then a sweep's progress and views."""
    if settings is not None:
        sweep_form.sweep_form(settings)
    sweeps = find_sweeps()
    running = _running_sweep()
    if running is not None and running not in sweeps:
        sweeps.insert(0, running)  # launched, its index not written yet
    if not sweeps:
        st.info("No sweep yet: results appear here once one runs.")
        return
    st.divider()
    default = sweeps.index(running) if running in sweeps else 0
    chosen = st.selectbox("Open a sweep", sweeps, index=default, key="sw_open",
                          format_func=lambda p: train_form.run_label(p) + (" (running)" if p == running else ""))
    sweep_view(chosen, key="sw_view", live=chosen == running)


def sweep_view(sweep_dir: Path, *, key: str, live: bool = False) -> None:
    """Progress and the four views of one sweep; re-read every ~1.5 s while it runs."""
    @st.fragment(run_every=train_form.POLL_SECONDS if live else None)
    def panel():
        if live and _running_sweep() != sweep_dir:
            st.rerun()  # the sweep ended: redraw once, without polling
        sweep_progress(sweep_dir, alive=live, key=key)
        _views(sweep_dir, key)

    panel()


def sweep_progress(sweep_dir: Path, *, alive: bool, key: str, resumable: bool = True) -> dict | None:
    """The progress bar (done/total, ETA) and a status per run, from sweep.json; a sweep whose
    process was killed (its index still says running) is shown as interrupted."""
    index = read_index(sweep_dir)
    if index is None:
        st.info("Starting the sweep…" if alive else f"{sweep_dir} has no {SWEEP_FILE}.")
        return None
    runs = pd.DataFrame(index.get("runs", []), columns=_RUN_COLUMNS)
    status = sweep_status(sweep_dir) or "running"
    if status == "interrupted":  # killed: its index still says running
        runs.loc[runs["status"] == "running", "status"] = "interrupted"
    done, total = int(index.get("done") or 0), int(index.get("total") or len(runs) or 1)
    eta = index.get("eta_seconds")
    eta_text = f" · ETA {_clock(eta)}" if alive and eta is not None else ""
    st.progress(min(done / max(total, 1), 1.0), text=f"{done}/{total} runs done · {status}{eta_text}")
    if resumable and status in ("stopped", "failed", "interrupted"):
        _resume(index, sweep_dir, status, key)
    with st.expander(f"Runs of this sweep ({runs['status'].value_counts().to_dict()})", expanded=alive):
        st.dataframe(runs, hide_index=True, key=f"{key}_runs")
    return index


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _resume(index: dict, sweep_dir: Path, status: str, key: str) -> None:
    """A stopped sweep continues with its own command (completed runs are skipped)."""
    argv = list(index.get("argv") or [])
    if "sweep" not in argv:
        st.warning(f"The sweep {status}; its index has no command to resume it with.")
        return
    argv = argv[argv.index("sweep"):]
    if "--no-progress" not in argv:  # the job's log keeps no progress-bar redraws
        argv.insert(argv.index("--out") if "--out" in argv else len(argv), "--no-progress")
    st.warning(f"The sweep {status}. Resuming runs its command again: completed runs are skipped.")
    if st.button("Resume the sweep", key=f"{key}_resume", icon=":material/play_arrow:"):
        try:
            train_form.manager().start(argv, run_dirs=[sweep_dir], resume=True, extra={"kind": "sweep"},
                                       label=f"sweep {sweep_dir.name} (resumed)")
        except LiftError as exc:
            st.error(str(exc))
        else:
            st.rerun()


def _signature(sweep_dir: Path) -> tuple:
    # The views read completed runs only: the index and the summaries say when they change.
    files = [sweep_dir / SWEEP_FILE] + [d / "summary.json" for d in views.sweep_run_dirs(sweep_dir)]
    return tuple((str(f), f.stat().st_mtime_ns) for f in files if f.exists())


@st.cache_data(max_entries=8, show_spinner=False)
def _tables(sweep_dir: str, levels: tuple[float, ...], signature: tuple) -> tuple[pd.DataFrame, pd.DataFrame]:
    run_dirs = views.sweep_run_dirs(sweep_dir)
    return views.load_points(run_dirs), views.forgetting_at_target(run_dirs, levels)


def _section(title: str, explain: str, fig, table: pd.DataFrame, file_name: str, key: str) -> None:
    st.subheader(title)
    chart, text = st.columns([3, 1])
    chart.plotly_chart(fig, key=f"{key}_chart")
    text.caption(explain)
    text.download_button("CSV", table.to_csv(index=False), file_name=file_name, mime="text/csv",
                         key=f"{key}_csv", icon=":material/download:")


def _views(sweep_dir: Path, key: str) -> None:
    levels = st.multiselect("Target levels (%) for forgetting at matched accuracy", _LEVELS,
                            default=[50, 80, 90], key=f"{key}_levels")
    points, at_target = _tables(str(sweep_dir), tuple(v / 100 for v in sorted(levels)), _signature(sweep_dir))
    if points.empty:
        st.info("No completed run yet: the views appear as runs complete.")
        return
    stem = sweep_dir.name
    average = st.toggle("Frontier over seed means (one point per method, rate and budget)", key=f"{key}_avg")
    front = views.frontier(points, average_seeds=average)
    _section("Frontier", EXPLAIN["frontier"], figs.frontier_figure(front), front, f"{stem}-frontier.csv",
             f"{key}_frontier")
    _section("Forgetting at matched target accuracy", EXPLAIN["at_target"],
             figs.forgetting_at_target_figure(at_target), at_target, f"{stem}-forgetting_at_target.csv",
             f"{key}_at_target")
    budget = views.budget_curve(points)
    _section("Budget curve", EXPLAIN["budget"], figs.budget_figure(budget), budget, f"{stem}-budget_curve.csv",
             f"{key}_budget")
    lr = views.lr_curve(points)
    _section("Learning-rate curve", EXPLAIN["lr"], figs.lr_figure(lr), lr, f"{stem}-lr_curve.csv", f"{key}_lr")


def live_sweep(job, key: str) -> None:
    """The live panel's part for a sweep job: its progress (the views are on the Sweep tab)."""
    sweep_dir = Path(job.run_dirs[0])
    sweep_progress(sweep_dir, alive=job.is_alive(), key=key, resumable=False)
    st.caption(f"Views of this sweep: the Sweep tab, {train_form.run_label(sweep_dir)}.")
