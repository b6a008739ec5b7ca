"""The training pages' UI layer: the settings form, launching jobs, browsing run records.

Training never runs inside Streamlit: a launch starts the same ``python -m lift_core
finetune|compare`` command the page previews, through :class:`lift_core.jobs.JobManager`
(one job per machine, found again after a reload or from another tab). The live panel of a
job is :mod:`lift_ui.job_view`. Record reading and reshaping for the charts are plain
functions (:mod:`lift_ui.run_data`), tested without Streamlit.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from lift_core.errors import LiftError
from lift_core.jobs import Job, JobManager
from lift_core.methods import METHODS, default_lr
from lift_core.records import RunRecord
from lift_core.training import FinetuneConfig
from lift_ui.run_data import long_metrics, read_record  # noqa: F401  (long_metrics: for the pages)

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
        lr = float("nan")
    if not 0 < lr < math.inf:  # inf and nan parse as floats, but no run can train with them
        st.error(f"learning rate {st.session_state['ft_lr']!r} must be a finite number > 0 (e.g. 2e-3)")
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
    # A record changes while it runs: key the cache on its files' sizes and mtimes, and on
    # whether its writer still lives (a killed run changes no file).
    from lift_core.records import CLAIM_FILE, owner_state, read_claim

    sig = []
    for p in paths:
        for name in ("config.json", "metrics.jsonl", "summary.json", CLAIM_FILE):
            f = Path(p) / name
            sig.append((str(f), f.stat().st_mtime_ns, f.stat().st_size) if f.exists() else (str(f),))
        claim = read_claim(Path(p))
        sig.append(owner_state(claim) if claim else None)
    return tuple(sig)


@st.cache_data(max_entries=8, show_spinner=False)
def _cached_table(paths: tuple[str, ...], signature: tuple):
    from lift_core.records import runs_table

    table = runs_table(list(paths))
    table.insert(0, "label", [run_label(p) for p in paths])
    return table


def browse_runs() -> pd.DataFrame:
    """Every run record under sample_runs/ and the runs folder; a record that cannot be read
    is a row with status "unreadable" and the reason in ``note``."""
    from lift_core.records import list_runs

    paths = tuple(str(p) for p in list_runs(sample_runs_root(), runs_root()))
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
