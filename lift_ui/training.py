"""The training pages' UI layer: the settings form, launching and stopping jobs, live charts.

Training never runs inside Streamlit: a launch starts the same ``python -m lift_core
finetune|compare`` command the page previews, through :class:`lift_core.jobs.JobManager`
(one job per machine, found again after a reload or from another tab). The live panel is a
fragment that re-reads the run record every ~1.5 s while the job runs and stops polling when
it ends. Record reading and reshaping for the charts are plain functions, tested without
Streamlit.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from lift_core.compare_cli import read_compare
from lift_core.errors import LiftError
from lift_core.jobs import Job, JobManager
from lift_core.methods import METHODS, SPARSE_METHODS, default_lr
from lift_core.records import RunRecord
from lift_core.training import FinetuneConfig
from lift_ui import figures_training as figs
from lift_ui.run_data import (
    long_metrics, optimizer_state_bytes, progress_numbers, read_record, tradeoff_points,
)

REPO = Path(__file__).resolve().parents[1]
POLL_SECONDS = 1.5
_DEFAULTS = FinetuneConfig()


def runs_root() -> Path:
    """Where launched runs go: $LIFT_RUNS_DIR, else ./runs (absolute)."""
    return Path(os.environ.get("LIFT_RUNS_DIR") or "runs").expanduser().resolve()


def sample_runs_root() -> Path:
    """The shipped sample runs: ./sample_runs of the repository ($LIFT_SAMPLE_RUNS overrides)."""
    return Path(os.environ.get("LIFT_SAMPLE_RUNS") or REPO / "sample_runs").expanduser().resolve()


def manager() -> JobManager:
    """The job manager of the runs folder (one job at a time across tabs and sessions)."""
    return JobManager(runs_root())


# --- settings and commands -----------------------------------------------------------------


@dataclass
class TrainSettings:
    """What the launch form picked (FinetuneConfig field names; eval_limit None = all)."""

    model: str = _DEFAULTS.model
    method: str = _DEFAULTS.method
    lora_rank: int = _DEFAULTS.lora_rank
    filter_rank: int = _DEFAULTS.filter_rank
    update_interval: int = _DEFAULTS.update_interval
    lr: float | None = None
    steps: int = _DEFAULTS.steps
    seed: int = _DEFAULTS.seed
    device: str = _DEFAULTS.device
    batch_size: int = _DEFAULTS.batch_size
    eval_every: int = _DEFAULTS.eval_every
    eval_limit: int | None = _DEFAULTS.eval_limit
    threads: int | None = None


def default_threads() -> int:
    """Half the cores, as the app itself uses (LIFT_TORCH_THREADS overrides).

    torch's default of one thread per core oversubscribes a shared or busy CPU: measured on
    the shared 2-core machine, a built-in run took 60 ms/step with one thread and ~3 s/step
    with two.
    """
    try:
        return max(1, int(os.environ.get("LIFT_TORCH_THREADS") or (os.cpu_count() or 2) // 2))
    except ValueError:
        return 1


_FLAGS = ["model", "lora_rank", "filter_rank", "update_interval", "steps", "seed", "device",
          "batch_size", "eval_every", "eval_limit", "threads"]


def _shared_args(s: TrainSettings) -> list[str]:
    args = []
    for name in _FLAGS:
        value = getattr(s, name)
        if value is not None:
            args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def finetune_argv(s: TrainSettings, out: Path) -> list[str]:
    """Arguments after ``python -m lift_core`` for one run (the job runs exactly these)."""
    lr = s.lr if s.lr is not None else default_lr(s.method)
    return ["finetune", "--method", s.method, "--lr", f"{lr:g}", *_shared_args(s),
            "--no-progress", "--out", str(out)]


def compare_argv(s: TrainSettings, methods: list[str], out: Path) -> list[str]:
    """Arguments after ``python -m lift_core`` for a comparison (per-method default LRs)."""
    return ["compare", "--methods", ",".join(methods), *_shared_args(s), "--no-progress", "--out", str(out)]


def command_text(argv: list[str]) -> str:
    """The shell command a user would type for ``argv``."""
    from lift_core.jobs import _quote

    return "python -m lift_core " + " ".join(_quote(a) for a in argv)


def planned_dir(prefix: str, slot: str) -> Path:
    """A fresh run folder ``<runs>/<prefix>-<timestamp>``, fixed per form slot until launched."""
    key = f"_lift_planned_{slot}"
    stamp = st.session_state.get(key) or time.strftime("%Y%m%d-%H%M%S")
    path, n = runs_root() / f"{prefix}-{stamp}", 1
    while path.exists():  # taken meanwhile (another tab launched in the same second)
        n += 1
        path = runs_root() / f"{prefix}-{stamp}-{n}"
    st.session_state[key] = path.name.removeprefix(f"{prefix}-")
    return path


def _replan(slot: str) -> None:
    st.session_state.pop(f"_lift_planned_{slot}", None)


@st.cache_data(max_entries=32, show_spinner=False)
def check_model(name: str) -> None:
    """Raise the core's LiftError for a missing, unreachable or encoder-only model (cheap)."""
    from lift_core.models import is_causal_lm, load_config, load_model

    if not is_causal_lm(load_config(name)):
        load_model(name, kind="causal", check_memory=False)  # raises before loading weights


def launch(argv: list[str], run_dirs: list[Path], *, label: str, kind: str, slot: str,
           settings: TrainSettings, steps: int) -> Job:
    """Validate, then start the job in the background.

    Raises:
        LiftError: bad settings or model, or another job already running (JobManager).
    """
    config = {k: v for k, v in asdict(settings).items() if k != "method"}
    FinetuneConfig(method=settings.method, **config)  # the core's checks, before any process starts
    check_model(settings.model)
    job = manager().start(argv, run_dirs=run_dirs, label=label,
                          extra={"kind": kind, "steps": steps})
    _replan(slot)
    return job


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def _pct(value) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{100 * value:.1f}%"


# --- the launch form -----------------------------------------------------------------------


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _kept(name: str, default) -> dict:
    """Widget kwargs that keep its value across page switches (Streamlit drops it otherwise)."""
    st.session_state[f"_w_ft_{name}"] = st.session_state.get(f"ft_{name}", default)

    def keep():
        st.session_state[f"ft_{name}"] = st.session_state[f"_w_ft_{name}"]

    return {"key": f"_w_ft_{name}", "on_change": keep}


def _method_changed() -> None:
    method = st.session_state["ft_method"] = st.session_state["_w_ft_method"]
    if not st.session_state.get("ft_lr_typed"):  # a typed rate survives a method change
        st.session_state["ft_lr"] = f"{default_lr(method):g}"


def _lr_typed() -> None:
    text = st.session_state["_w_ft_lr"].strip()
    st.session_state["ft_lr_typed"] = bool(text)
    st.session_state["ft_lr"] = text or f"{default_lr(st.session_state.get('ft_method', 'lift')):g}"


def settings_form() -> TrainSettings | None:
    """Draw the launch form; return its settings, or None (with an error shown) if invalid."""
    d = _DEFAULTS
    left, mid, right = st.columns(3)
    choice = left.radio("Model", ["builtin", "other"], horizontal=True, **_kept("model_kind", "builtin"),
                        format_func=lambda o: "built-in tiny Llama" if o == "builtin" else "other")
    model = "builtin"
    if choice == "other":
        model = left.text_input("Local causal-LM directory or hub id", placeholder="./my-llama or gpt2",
                                **_kept("model_text", "")).strip()
    method = st.session_state["_w_ft_method"] = st.session_state.setdefault("ft_method", d.method)
    mid.selectbox("Method", METHODS, key="_w_ft_method", on_change=_method_changed,
                  format_func=lambda m: f"{m} (default lr {default_lr(m):g})")
    st.session_state["_w_ft_lr"] = st.session_state.setdefault("ft_lr", f"{default_lr(method):g}")
    mid.text_input("Learning rate", key="_w_ft_lr", on_change=_lr_typed,
                   help="Follows the method's default until you type one; clear it to go back.")
    device = right.selectbox("Device", ["auto", "cpu", "cuda"], **_kept("device", d.device),
                             help="auto: CUDA with bf16 when a GPU is present, else CPU. This machine: "
                             + ("a CUDA GPU is available." if _cuda() else "no CUDA GPU, so auto means CPU."))
    lora_rank = left.number_input("Budget rank (LoRA-equivalent)", 1, 4096, **_kept("lora_rank", d.lora_rank),
                                  help="k = min((m+n)·rank, m·n) trained numbers per matrix")
    filter_rank = mid.number_input("Filter rank r", 1, 4096, **_kept("filter_rank", d.filter_rank),
                                   help="rank of W_r that scores entries (lift)")
    interval = right.number_input("Mask update interval (steps)", 1, 100_000, **_kept("update_interval", d.update_interval))
    steps = left.number_input("Steps", 1, 1_000_000, **_kept("steps", d.steps))
    seed = mid.number_input("Seed", 0, 2**31 - 1, **_kept("seed", d.seed))
    with right.expander("More"):
        batch = st.number_input("Batch size", 1, 4096, **_kept("batch_size", d.batch_size))
        every = st.number_input("Evaluate every (steps)", 1, 1_000_000, **_kept("eval_every", d.eval_every))
        limit = st.number_input("Eval examples per set (0 = all)", 0, 100_000, **_kept("eval_limit", 0))
        threads = st.number_input("CPU threads", 1, os.cpu_count() or 1, **_kept("threads", default_threads()),
                                  help="torch threads of the job; more than the free cores slows it down")
    try:
        lr = float(st.session_state["ft_lr"])
    except ValueError:
        st.error(f"learning rate {st.session_state['ft_lr']!r} is not a number (e.g. 2e-3)")
        return None
    if not model:
        st.info("Type a model directory or hub id.")
        return None
    return TrainSettings(model, method, int(lora_rank), int(filter_rank), int(interval), lr, int(steps),
                         int(seed), device, int(batch), int(every), int(limit) or None, int(threads))


def launch_button(label: str, argv: list[str], run_dirs: list[Path], *, kind: str, slot: str,
                  settings: TrainSettings, steps: int, job_label: str, key: str) -> None:
    """A button that launches ``argv``; errors (one job at a time, bad input) show in place."""
    if st.button(label, key=key, type="primary"):
        try:
            launch(argv, run_dirs, label=job_label, kind=kind, slot=slot, settings=settings, steps=steps)
        except LiftError as exc:
            st.error(str(exc))
        else:
            st.rerun()


# --- the job panel -------------------------------------------------------------------------


def job_panel(kinds: tuple[str, ...], *, key: str) -> None:
    """The running job (whatever launched it), or the last job of one of ``kinds``."""
    mgr = manager()
    job = mgr.active()
    if job is None:
        last = mgr.last()
        if last is None or last.extra.get("kind") not in kinds:
            return
        job = last
    alive = job.is_alive()
    st.subheader(("Running: " if alive else "Last job: ") + job.label)
    where = st
    if alive:
        stop_col, where = st.columns([1, 5])
        if stop_col.button("Stop", key=f"{key}_stop", icon=":material/stop:"):
            with st.spinner("Stopping after the current step…"):
                mgr.stop()
            st.rerun()
    with where.expander("Command line of this job"):
        st.code(command_text(job.argv[3:]) if job.argv[1:3] == ["-m", "lift_core"] else job.command_line,
                language="bash", wrap_lines=True)
    _live(job, alive, key)


def _live(job: Job, polling: bool, key: str) -> None:
    @st.fragment(run_every=POLL_SECONDS if polling else None)
    def panel():
        if polling and not job.is_alive():
            st.rerun()  # the job ended: redraw the page once, without polling
        if job.extra.get("kind") == "compare":
            compare_view(job, key)
        else:
            run_view(job, key)

    panel()


def _status_box(status: str, error: str | None, job: Job) -> None:
    if status == "failed" or (status == "running" and not job.is_alive()):
        st.error(f"The run {status if status == 'failed' else 'ended without a summary'}"
                 + (f": {error}" if error else "") + ". Last lines of the job's log:")
        st.code(job.log_tail(15) or "(empty log)")
    elif status == "stopped":
        st.warning("Stopped on request; the record is intact (the accuracies are from the last evaluation).")
    elif status == "completed":
        st.success("Completed.")


def run_view(job: Job, key: str) -> None:
    """Live charts of a single run: progress, budget, loss, accuracies, mask churn."""
    steps = int(job.extra.get("steps") or 0)
    record = read_record(job.run_dirs[0])
    if record is None:
        if job.is_alive():
            st.info("Starting: loading the model and measuring accuracy before training…")
        else:
            _status_box("failed", None, job)
        return
    steps = int(record.config.get("steps") or steps)
    summary = record.summary or {}
    nums = progress_numbers(record, steps, time.time() - job.started if job.is_alive() else None)
    st.progress(min(nums["done"] / max(steps, 1), 1.0),
                text=f"step {nums['done']}/{steps} · elapsed {_clock(nums['elapsed'])} · ETA {_clock(nums['eta'])}")
    _status_box(summary.get("status", "running"), summary.get("error"), job)
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
    log_y = st.toggle("Log-scale loss", key=f"{key}_log")
    left, right = st.columns(2)
    left.plotly_chart(figs.loss_figure(data, log_y=log_y, steps=steps), key=f"{key}_loss")
    if record.config.get("method") in SPARSE_METHODS:
        right.plotly_chart(figs.churn_figure(data, steps=steps), key=f"{key}_churn")
        right.caption("Share of the mask replaced at each refresh (every "
                      f"{record.config.get('update_interval')} steps), over all matrices.")
    else:
        right.info(f"{record.config.get('method')} has no mask, so there is no mask churn to show.")
    st.plotly_chart(figs.accuracy_figure(data, steps=steps), key=f"{key}_acc")


def compare_view(job: Job, key: str) -> None:
    """Live overlay of a comparison: accuracies and loss per method, then the trade-off."""
    out = Path(job.run_dirs[0]).parent
    state = read_compare(out) or {"runs": [{"method": Path(d).name, "path": d, "status": "pending"}
                                           for d in job.run_dirs]}
    records = {e["method"]: r for e in state["runs"] if (r := read_record(e["path"])) is not None}
    steps = int(job.extra.get("steps") or 1)
    done = sum(progress_numbers(r, steps)["done"] for r in records.values())
    total = steps * len(state["runs"])
    st.progress(min(done / total, 1.0), text=f"{done}/{total} steps over {len(state['runs'])} runs · "
                + " · ".join(f"{e['method']}: {e['status']}" for e in state["runs"]))
    if state.get("status") not in (None, "running") or not job.is_alive():
        _status_box(state.get("status", "running"), None, job)
    if not records:
        if job.is_alive():
            st.info("Starting the first run…")
        return
    data = long_metrics(records)
    st.plotly_chart(figs.accuracy_figure(data, steps=steps), key=f"{key}_acc")
    left, right = st.columns(2)
    left.plotly_chart(figs.loss_figure(data, steps=steps, log_y=True), key=f"{key}_loss")
    right.plotly_chart(figs.tradeoff_figure(tradeoff_points(records)), key=f"{key}_tradeoff")
    right.caption("Each point is a method at its latest evaluation. Up is more learned, left is "
                  "less forgotten: the paper's claim is that LIFT sits up and to the left.")


# --- browsing records ----------------------------------------------------------------------


def run_label(path: Path) -> str:
    """A short name for a run: its path under sample_runs/ or the runs folder."""
    path = Path(path)
    for root, name in ((sample_runs_root(), "sample_runs"), (runs_root(), "runs")):
        try:
            return f"{name}/{path.relative_to(root)}"
        except ValueError:
            continue
    return str(path)


def _signature(paths) -> tuple:
    # A record changes while it runs: key the cache on its files' sizes and mtimes.
    sig = []
    for p in paths:
        for name in ("metrics.jsonl", "summary.json"):
            f = Path(p) / name
            sig.append((str(f), f.stat().st_mtime_ns, f.stat().st_size) if f.exists() else (str(f),))
    return tuple(sig)


@st.cache_data(max_entries=8, show_spinner=False)
def _cached_table(paths: tuple[str, ...], signature: tuple):
    from lift_core.records import runs_table

    table = runs_table(list(paths))
    table.insert(0, "label", [run_label(p) for p in paths])
    return table


def browse_runs() -> pd.DataFrame:
    """Every run record under sample_runs/ and the runs folder (unreadable ones skipped)."""
    from lift_core.records import list_runs

    paths = tuple(str(p) for p in list_runs(sample_runs_root(), runs_root()) if read_record(p) is not None)
    return _cached_table(paths, _signature(paths))


def records_for(table: pd.DataFrame) -> dict[str, RunRecord]:
    """label -> record for the rows of a runs table (records that vanished are skipped)."""
    found = {}
    for label, path in zip(table["label"], table["path"]):
        record = read_record(path)
        if record is not None:
            found[label] = record
    return found


# --- workshop ------------------------------------------------------------------------------

# The live demo: LIFT on the built-in model, short enough to finish in about a minute on a
# CPU laptop (measured: docs/studio.md), with enough evaluations to draw the curves.
DEMO = TrainSettings(method="lift", steps=300, eval_every=50, eval_limit=60)


def demo_settings() -> TrainSettings:
    """The demo's settings with this machine's thread count."""
    return TrainSettings(**{**asdict(DEMO), "threads": default_threads()})


def sample_records() -> dict[str, RunRecord]:
    """Completed sample runs, label -> record (none when sample_runs/ is empty)."""
    table = browse_runs()
    if table.empty:
        return {}
    table = table[table["label"].str.startswith("sample_runs/") & (table["status"] == "completed")]
    return records_for(table)
