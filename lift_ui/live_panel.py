"""The live job panel of the training pages: the running (or last) job, its charts, Stop.

The panel is a fragment that re-reads the run record every ~1.5 s while the job runs and
stops polling when it ends. It says how a run ended from the record itself: completed,
stopped, failed (with the reason), or interrupted (its process died without a summary,
e.g. killed), and shows the last lines of the job's log when something went wrong.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import streamlit as st

from lift_core.errors import LiftError
from lift_core.jsonio import read_json_object
from lift_core.runs.compare import read_compare
from lift_core.runs.folder import PROGRESS_FILE
from lift_core.runs.jobs import Job
from lift_core.train.registry import method_names
from lift_ui.figures import training as figs
from lift_ui.run_data import (
    SETUP_PHASES, ended_label, evaluation_due, evaluation_progress, long_metrics, read_generations, optimizer_state_bytes, progress_numbers, read_record,
    setup_phase, tradeoff_points,
)
from lift_ui.sweep_panel import live_sweep
from lift_ui.train_form import POLL_SECONDS, command_text, manager


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def chart_options(container, key: str) -> dict:
    """The chart controls every training chart shares (loss scale, smoothing, x axis).

    The choices are kept in session state under one name, so the live panel, Compare and
    the Runs page draw the loss on the same scale until the user changes it anywhere.
    Returns loss_figure/accuracy_figure keyword arguments: log_y, alpha, x.
    """
    defaults = {"log_y": True, "smoothing": 0.9, "x": "step"}
    for name, value in defaults.items():
        st.session_state.setdefault(f"lift_chart_{name}", value)
        st.session_state[f"{key}_{name}"] = st.session_state[f"lift_chart_{name}"]

    def keep(name):
        return {"key": f"{key}_{name}", "on_change": lambda: st.session_state.__setitem__(
            f"lift_chart_{name}", st.session_state[f"{key}_{name}"])}

    cols = container.columns([1, 2, 2])
    log_y = cols[0].toggle("Log-scale loss", help="The same choice on every training chart.", **keep("log_y"))
    smoothing = cols[1].slider("Loss smoothing (EMA)", 0.0, 0.99, step=0.01,
                               help="0 draws the raw loss; higher is smoother.", **keep("smoothing"))
    x = cols[2].radio("x axis", list(figs.X_AXES), horizontal=True, **keep("x"),
                      format_func=lambda v: "step" if v == "step" else "wall time")
    return {"log_y": log_y, "alpha": max(1.0 - smoothing, 0.01), "x": x}


def wall_elapsed(job: Job, *records) -> float:
    """Seconds since the job was launched: now while it runs, at its records' last write
    once it ended, so the clock never runs backwards when a run ends."""
    if job.is_alive() or not records:
        return time.time() - job.started
    files = [Path(r.path) / name for r in records for name in ("summary.json", "metrics.jsonl")]
    ended = max((f.stat().st_mtime for f in files if f.exists()), default=time.time())
    return max(ended - job.started, 0.0)


def setup_text(summary: dict | None, config: dict) -> str | None:
    """One line on a run's set-up time (model load, first masks, evaluation before training),
    which seconds per step leaves out; from config.json while the run goes, the summary after."""
    times = {**(config.get("setup") or {}), **{k: v for k, v in (summary or {}).items()
                                               if k.endswith("_seconds") and v is not None}}
    parts = [f"{label} {times[key]:.1f} s" for key, label in (
        ("load_seconds", "model load"), ("mask_seconds", "masks / adapter"),
        ("first_eval_seconds", "evaluation before training")) if times.get(key) is not None]
    if not parts:
        return None
    total = f"Set-up {times['setup_seconds']:.1f} s" if "setup_seconds" in times else "Set-up"
    return f"{total}: " + ", ".join(parts) + " (not counted in the time per step)."


def _pct(value) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{100 * value:.1f}%"


def job_panel(kinds: tuple[str, ...], *, key: str, reference: pd.DataFrame | None = None) -> None:
    """The running job (whatever launched it), or the last job of one of ``kinds``.

    ``reference``: curves (long metrics) drawn under a single run's accuracies, e.g. the
    recorded sample runs under the live demo."""
    mgr = manager()
    job = mgr.active()
    if job is None:
        last = mgr.last()
        if last is None or last.extra.get("kind") not in kinds:
            return
        job = last
    alive = job.is_alive()
    label = job.label
    if not alive and job.extra.get("kind") not in ("compare", "sweep"):
        label = ended_label(read_record(job.run_dirs[0]), job.label)
    st.subheader(("Running: " if alive else "Last job: ") + label)
    where = st
    if alive:
        stop_col, where = st.columns([1, 5])
        if stop_col.button("Stop", key=f"{key}_stop", icon=":material/stop:"):
            with st.spinner("Stopping after the current step…"):
                mgr.stop()
            st.rerun()
    elif job.extra.get("kind") not in ("compare", "sweep"):  # a sweep resumes from its tab
        _resume_button(mgr, job, key)
    with where.expander("Command line of this job"):
        st.code(command_text(job.argv[3:]) if job.argv[1:3] == ["-m", "lift_core"] else job.command_line,
                language="bash", wrap_lines=True)
    _live(job, alive, key, reference)


def _resume_button(mgr, job: Job, key: str) -> None:
    """Resume for a stopped, failed or interrupted run that left a checkpoint."""
    from lift_core.train.checkpoint import checkpoint_path

    run_dir = job.run_dirs[0]
    record = read_record(run_dir)  # None while (or when) there is no record
    status = record.status if record is not None else None
    if status not in ("stopped", "failed", "interrupted") or checkpoint_path(run_dir) is None:
        return
    if st.button("Resume", key=f"{key}_resume", icon=":material/play_arrow:",
                 help="continue this run from its last checkpoint (finetune --resume)"):
        try:
            mgr.start(["finetune", "--resume", run_dir], run_dirs=[run_dir],
                      label=job.label.removesuffix(" (resumed)") + " (resumed)",
                      extra=job.extra, resume=True)
        except LiftError as exc:
            st.error(str(exc))
            return
        st.rerun()


def _live(job: Job, polling: bool, key: str, reference: pd.DataFrame | None = None) -> None:
    @st.fragment(run_every=POLL_SECONDS if polling else None)
    def panel():
        if polling and not job.is_alive():
            st.rerun()  # the job ended: redraw the page once, without polling
        if job.extra.get("kind") == "compare":
            compare_view(job, key)
        elif job.extra.get("kind") == "sweep":
            live_sweep(job, key)
        else:
            run_view(job, key, reference)

    panel()


def _phases(job: Job, record) -> None:
    """The set-up phases of a starting run, each ticked off as its record shows it done."""
    now = setup_phase(record)
    times = (record.config.get("setup") or {}) if record is not None else {}
    done = {0: " · ".join(f"{k.removesuffix('_seconds')} {v:.1f} s" for k, v in times.items())}
    # Material icons: emoji may have no font on the server's viewers (seen as boxes).
    marks = (":material/check_circle:", ":material/hourglass_top:", ":material/radio_button_unchecked:")
    lines = [f"{marks[0] if i < now else marks[1] if i == now else marks[2]} {i + 1}. {text[0].upper() + text[1:]}"
             + (f" ({done[i]})" if i < now and done.get(i) else "") for i, text in enumerate(SETUP_PHASES)]
    st.info(f"Setting up (elapsed {_clock(time.time() - job.started)}):  \n" + "  \n".join(lines))
    _setup_bar(job.run_dirs[0])
    _evaluation_bar(record)


def _setup_bar(run_dir) -> None:
    """A labelled bar of the set-up phase under way, from progress.json (the loop writes it
    before config.json, so there is no record yet): the model loading, then the first masks
    matrix by matrix. Nothing once the set-up is done."""
    try:
        progress = read_json_object(Path(run_dir) / PROGRESS_FILE) or {}
    except (LiftError, OSError):
        return
    if progress.get("phase") == "loading model":
        st.progress(0.0, text="Loading the model and the data…")
    elif progress.get("phase") == "computing masks" and all(
            isinstance(progress.get(k), int) for k in ("done", "total")):
        done, total = progress["done"], max(progress["total"], 1)
        st.progress(min(done / total, 1.0), text=f"Computing masks: {done}/{total} matrices"
                    + (f" · {progress['layer']}" if progress.get("layer") else ""))


def _evaluation_bar(record) -> bool:
    """A bar of the evaluation under way (batches done/total); False when none is."""
    progress = evaluation_progress(record)
    if progress is None:
        return False
    done, total = progress["done"], max(progress["total"], 1)
    st.progress(min(done / total, 1.0),
                text=f"{progress['phase'].capitalize()} at step {progress['step']}: batch {done}/{total}")
    return True


def _status_box(status: str, error: str | None, job: Job) -> None:
    if status in ("failed", "interrupted") or (status == "running" and not job.is_alive()):
        what = {"failed": "failed", "interrupted": "was interrupted"}.get(status, "ended without a summary")
        st.error(f"The run {what}" + (f": {error}" if error else "") + ". Last lines of the job's log:")
        st.code(job.log_tail(15) or "(empty log)")
    elif status == "stopped":
        st.warning("Stopped on request; the record is intact (the accuracies are from the last evaluation).")
    elif status == "completed":
        st.success("Completed.")


def run_view(job: Job, key: str, reference: pd.DataFrame | None = None) -> None:
    """Live charts of a single run: progress, budget, loss, accuracies, mask churn."""
    steps = int(job.extra.get("steps") or 0)
    record = read_record(job.run_dirs[0])
    if record is None and not job.is_alive():
        _status_box("failed", None, job)
        return
    if job.is_alive() and setup_phase(record) < 2:
        _phases(job, record)
    if record is None:
        return
    steps = int(record.config.get("steps") or steps)
    nums = progress_numbers(record, steps, wall_elapsed(job, record))
    evaluating = evaluation_due(record, steps) if job.is_alive() else None
    st.progress(min(nums["done"] / max(steps, 1), 1.0),
                text=f"step {nums['done']}/{steps} · elapsed {_clock(nums['elapsed'])} · ETA {_clock(nums['eta'])}"
                + (f" · evaluating at step {evaluating}…" if evaluating else ""))
    if job.is_alive() and setup_phase(record) >= 2:
        _evaluation_bar(record)
    _status_box(record.status, record.note, job)
    if (setup := setup_text(record.summary, record.config)) is not None:
        st.caption(setup)
    budget = record.config.get("budget") or {}
    state_bytes, exact = optimizer_state_bytes(record)
    m = record.metrics
    evals = m[m["target_acc"].notna()] if "target_acc" in m else m.iloc[0:0]
    c = st.columns(4)
    if budget:
        c[0].metric("Trainable numbers", f"{budget['trainable_params']:,}",
                    help=f"{budget['trainable_fraction']:.2%} of the block-linear entries")
    if state_bytes is not None:
        c[1].metric("Optimizer state" + ("" if exact else " (est.)"), f"{state_bytes / 2**10:,.0f} KiB")
    if len(evals):
        first, last = evals.iloc[0], evals.iloc[-1]
        for col, name in ((c[2], "target"), (c[3], "source")):
            change = last[f"{name}_acc"] - first[f"{name}_acc"]
            col.metric(f"{name.capitalize()} accuracy", _pct(last[f"{name}_acc"]),
                       f"{100 * change:+.1f} pt since step 0" if len(evals) > 1 else None,
                       help=f"at step {int(last['step'])}")
    data = long_metrics({record.config.get("method", "run"): record})
    opts = chart_options(st, key)
    left, right = st.columns(2)
    left.plotly_chart(figs.loss_figure(data, steps=steps, **opts), key=f"{key}_loss")
    if record.config.get("method") in method_names("sparse"):
        right.plotly_chart(figs.churn_figure(data, steps=steps), key=f"{key}_churn")
        right.caption("Share of the mask replaced at each refresh (every "
                      f"{record.config.get('update_interval')} steps), over all matrices.")
    else:
        right.info(f"{record.config.get('method')} has no mask, so there is no mask churn to show.")
    if reference is not None and opts["x"] == "step":  # recorded runs share the step axis only
        data = pd.concat([data, reference], ignore_index=True)
    st.plotly_chart(figs.accuracy_figure(data, steps=steps, x=opts["x"]), key=f"{key}_acc")
    generations_panel(record.path, key)
    _schedule_and_memory(data, steps, opts["x"], key)


def generations_panel(run_dir, key: str, container=st) -> None:
    """The kept answers of the first and latest evaluations, under the accuracy curve: the
    same prompt before and now shows what was learned and what was forgotten."""
    table = figs.generations_table(read_generations(run_dir))
    if table.empty:
        return
    container.markdown("**Answers at the first and latest evaluation** (3 target, 3 source prompts)")
    container.dataframe(table, hide_index=True, key=f"{key}_gens", column_config={
        "prompt": st.column_config.TextColumn(width="large"),
        "correct": st.column_config.CheckboxColumn()})


def _schedule_and_memory(data, steps: int, x: str, key: str) -> None:
    left, right = st.columns(2)
    left.plotly_chart(figs.series_figure(data, "lr", title="Learning-rate schedule", y_title="learning rate",
                                         steps=steps, x=x), key=f"{key}_lr")
    right.plotly_chart(figs.series_figure(data, "memory", title="Peak memory so far", y_title="MiB",
                                          scale=2 ** -20, steps=steps, x=x), key=f"{key}_mem")


def compare_view(job: Job, key: str) -> None:
    """Live overlay of a comparison: accuracies and loss per method, then the trade-off."""
    out = Path(job.run_dirs[0]).parent
    state = read_compare(out) or {"runs": [{"method": Path(d).name, "path": d, "status": "pending"}
                                           for d in job.run_dirs]}
    records = {e["method"]: r for e in state["runs"] if (r := read_record(e["path"])) is not None}
    for entry in state["runs"]:  # compare.json says "running" for a run that was killed
        if entry["status"] == "running" and entry["method"] in records:
            entry["status"] = records[entry["method"]].status
    steps = int(job.extra.get("steps") or 1)
    done = sum(progress_numbers(r, steps)["done"] for r in records.values())
    total = steps * len(state["runs"])
    elapsed = wall_elapsed(job, *records.values())
    eta = elapsed / done * (total - done) if done and job.is_alive() else None
    st.progress(min(done / total, 1.0), text=f"{done}/{total} steps over {len(state['runs'])} runs · "
                f"elapsed {_clock(elapsed)} · ETA {_clock(eta)} · "
                + " · ".join(f"{e['method']}: {e['status']}" for e in state["runs"]))
    if state.get("status") not in (None, "running") or not job.is_alive():
        _status_box(state.get("status", "running"), None, job)
    if not records:
        if job.is_alive():
            st.info("Starting the first run…")
            _setup_bar(job.run_dirs[0])
        return
    setups = {m: t for m, r in records.items() if (t := setup_text(r.summary, r.config))}
    if setups:
        st.caption(" · ".join(f"**{m}** {t}" for m, t in setups.items()))
    data = long_metrics(records)
    opts = chart_options(st, key)
    st.plotly_chart(figs.accuracy_figure(data, steps=steps, x=opts["x"]), key=f"{key}_acc")
    left, right = st.columns(2)
    left.plotly_chart(figs.loss_figure(data, steps=steps, **opts), key=f"{key}_loss")
    points = tradeoff_points(records)
    right.plotly_chart(figs.tradeoff_figure(points), key=f"{key}_tradeoff")
    early = points["note"].dropna()
    right.caption("Each point is a method at its latest evaluation. Up is more learned, left is "
                  "less forgotten: the paper's claim is that LIFT sits up and to the left."
                  + (" Hollow points did not reach the planned step: " + "; ".join(
                      f"{label} {note}" for label, note in zip(points.loc[early.index, "label"], early))
                     + "." if len(early) else ""))
