"""The training pages' UI layer: the settings form, launching jobs, browsing run records.

Training never runs inside Streamlit: a launch starts the same ``python -m lift_core
finetune|compare`` command the page previews, through :class:`lift_core.runs.jobs.JobManager`
(one job per machine, found again after a reload or from another tab). The live panel of a
job is :mod:`lift_ui.live_panel`. Record reading and reshaping for the charts are plain
functions (:mod:`lift_ui.run_data`), tested without Streamlit.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from lift_core.errors import LiftError
from lift_core.runs.jobs import Job, JobManager, shell_command
from lift_core.runs.records import RunRecord
from lift_core.train.config import FinetuneConfig
from lift_core.train.options import PER_METHOD_FIELDS, ConfigField, config_fields, finetune_options
from lift_core.train.registry import PRINCIPAL_METHOD, default_lr, methods_help
from lift_ui.run_data import long_metrics, read_record  # noqa: F401  (long_metrics: for the pages)

REPO = Path(__file__).resolve().parents[1]
POLL_SECONDS = 1.5
MIN_EVAL_POINTS = 8  # evaluations (step 0 included) that make a readable accuracy curve


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


# The form offers every FinetuneConfig field but these: the job's folder is planned here
# (a fresh one per launch), and running a hub model's own code on this server is not a
# choice to offer whoever can reach the page.
APP_SKIPPED_FIELDS = ("out_dir", "overwrite", "trust_remote_code")
# Fields with a widget of their own (model kind + path, method + the LR that follows it).
_CUSTOM_FIELDS = ("model", "method", "lr")
# Fields above the "More settings" expander, in this order; any other field (a new one
# included) lands in the expander with a widget for its type.
_MAIN_FIELDS = ("device", "lora_rank", "filter_rank", "update_interval", "steps", "seed")
_LABELS = {"lora_rank": "Budget rank (LoRA-equivalent)", "filter_rank": "Filter rank r",
           "update_interval": "Mask update interval (steps)", "svd": "SVD for the masks",
           "eval_every": "Evaluate every (steps)", "eval_limit": "Eval examples per set",
           "threads": "CPU threads", "train_data": "Training data file",
           "max_length": "Max length (tokens)", "processes": "Processes (data-parallel)",
           "grad_exchange": "Gradient exchange (several processes)"}


def form_fields() -> list[ConfigField]:
    """The FinetuneConfig fields the launch form sets, in the config's order."""
    return [f for f in config_fields(FinetuneConfig) if f.name not in APP_SKIPPED_FIELDS]


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


def finetune_argv(config: FinetuneConfig, out: Path) -> list[str]:
    """Arguments after ``python -m lift_core`` for one run (the job runs exactly these).

    The method and its learning rate are always written; other settings when they differ
    from the config's defaults.
    """
    options = finetune_options(config, skip=("method", "lr") + APP_SKIPPED_FIELDS)
    return ["finetune", "--method", config.method, "--lr", str(config.lr_used), *options,
            "--no-progress", "--out", str(out)]


def compare_argv(config: FinetuneConfig, methods: list[str], out: Path) -> list[str]:
    """Arguments after ``python -m lift_core`` for a comparison (per-method default LRs)."""
    options = finetune_options(config, skip=PER_METHOD_FIELDS + APP_SKIPPED_FIELDS)
    return ["compare", "--methods", ",".join(methods), *options, "--no-progress", "--out", str(out)]


def command_text(argv: list[str]) -> str:
    """The shell command a user would type for ``argv``."""
    return "python -m lift_core " + shell_command(argv)


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
    from lift_core.models.loading import is_causal_lm, load_config, load_model

    if not is_causal_lm(load_config(name)):
        load_model(name, kind="causal", check_memory=False)  # raises before loading weights


def launch(argv: list[str], run_dirs: list[Path], *, label: str, kind: str, slot: str,
           settings: FinetuneConfig, steps: int) -> Job:
    """Check the model (its settings were checked when the config was made), then start
    the job in the background.

    Raises:
        LiftError: a bad model, or another job already running (JobManager).
    """
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
    st.session_state["ft_lr"] = text or f"{default_lr(st.session_state.get('ft_method', PRINCIPAL_METHOD)):g}"


def _form_default(f: ConfigField):
    # The job's threads default to what the app itself uses, not torch's one per core.
    return default_threads() if f.name == "threads" else f.default


def _help(f: ConfigField) -> str:
    if f.name == "device":
        return f.doc + " This machine: " + ("a CUDA GPU is available." if _cuda()
                                            else "no CUDA GPU, so auto means CPU.")
    return f.doc + (" Leave it empty for that." if f.optional else "")


def field_widget(container, f: ConfigField):
    """A widget for one config field, by its type; returns the field's value."""
    label = _LABELS.get(f.name) or f.name.replace("_", " ").capitalize()
    default = _form_default(f)
    if f.kind is str and default is None:
        default = ""  # a text box holds text; empty means unset
    kwargs = {"help": _help(f), **_kept(f.name, default)}
    if f.choices is not None:
        return container.selectbox(label, f.choices, **kwargs)
    if f.kind is bool:
        return container.checkbox(label, **kwargs)
    if f.kind in (int, float):
        # value=None lets an optional number be cleared ("unset"); step sets int vs float.
        optional = {"value": None, "placeholder": "unset"} if f.optional else {}
        step = 1 if f.kind is int else 0.01
        return container.number_input(label, step=step, format=None if f.kind is int else "%g",
                                      **optional, **kwargs)
    text = (container.text_input(label, placeholder="unset" if f.optional else "", **kwargs)
            or "").strip()
    return None if f.optional and not text else text


def _model_and_method(left, mid) -> tuple[str, str]:
    """The custom widgets: model kind and path, method, and the LR that follows the method."""
    choice = left.radio("Model", ["builtin", "other"], horizontal=True, **_kept("model_kind", "builtin"),
                        format_func=lambda o: "built-in tiny Llama" if o == "builtin" else "other")
    model = "builtin"
    if choice == "other":
        model = left.text_input("Local causal-LM directory or hub id", placeholder="./my-llama or gpt2",
                                **_kept("model_text", "")).strip()
    methods = next(f.choices for f in form_fields() if f.name == "method")
    method = st.session_state["_w_ft_method"] = st.session_state.setdefault(
        "ft_method", FinetuneConfig.method)
    mid.selectbox("Method", methods, key="_w_ft_method", on_change=_method_changed,
                  format_func=lambda m: f"{m} (default lr {default_lr(m):g})",
                  help=methods_help(separator="  \n"))  # a Markdown line break
    st.session_state["_w_ft_lr"] = st.session_state.setdefault("ft_lr", f"{default_lr(method):g}")
    mid.text_input("Learning rate", key="_w_ft_lr", on_change=_lr_typed,
                   help="Follows the method's default until you type one; clear it to go back.")
    return model, method


def settings_form() -> FinetuneConfig | None:
    """Draw the launch form (a widget per FinetuneConfig field); return its config, or None
    (with the reason shown) when the settings are incomplete or invalid."""
    columns = st.columns(3)
    model, method = _model_and_method(columns[0], columns[1])
    fields = {f.name: f for f in form_fields() if f.name not in _CUSTOM_FIELDS}
    main = [fields.pop(name) for name in _MAIN_FIELDS]
    values = {f.name: field_widget(columns[(i + 2) % 3], f) for i, f in enumerate(main)}
    with st.expander("More settings"):
        more = st.columns(3)
        values.update({f.name: field_widget(more[i % 3], f) for i, f in enumerate(fields.values())})
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
    try:  # the core's checks, before any process starts
        config = FinetuneConfig(model=model, method=method, lr=lr, **values)
    except LiftError as exc:
        st.error(str(exc))
        return None
    points = config.steps // config.eval_every + 1 + (config.steps % config.eval_every > 0)
    if points < MIN_EVAL_POINTS:  # e.g. 300 steps, every 100: 4 points are no curve
        st.caption(f"The accuracy chart will have {points} points; for a curve, evaluate every "
                   f"{max(config.steps // (MIN_EVAL_POINTS - 1), 1)} steps or less (More settings), "
                   "with fewer eval examples to keep it quick.")
    return config


def launch_button(label: str, argv: list[str], run_dirs: list[Path], *, kind: str, slot: str,
                  settings: FinetuneConfig, steps: int, job_label: str, key: str) -> None:
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
    from lift_core.runs.notes import NOTES_FILE
    from lift_core.runs.records import CLAIM_FILE, owner_state, read_claim

    sig = []
    for p in paths:
        for name in ("config.json", "metrics.jsonl", "summary.json", CLAIM_FILE, NOTES_FILE):
            f = Path(p) / name
            sig.append((str(f), f.stat().st_mtime_ns, f.stat().st_size) if f.exists() else (str(f),))
        claim = read_claim(Path(p))
        sig.append(owner_state(claim) if claim else None)
    return tuple(sig)


@st.cache_data(max_entries=8, show_spinner=False)
def _cached_table(paths: tuple[str, ...], signature: tuple):
    from lift_core.runs.records import runs_table

    table = runs_table(list(paths))
    table.insert(0, "label", [run_label(p) for p in paths])
    return table


def browse_runs() -> pd.DataFrame:
    """Every run record under sample_runs/ and the runs folder; a record that cannot be read
    is a row with status "unreadable" and the reason in ``note``."""
    from lift_core.runs.records import list_runs

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

# The live demo: LIFT on the built-in model, short enough to finish in minutes on a CPU
# (the Workshop states the measured time), with enough evaluations to draw the curves.
DEMO = FinetuneConfig(method=PRINCIPAL_METHOD, steps=300, eval_every=40, eval_limit=60, save=False)


def demo_settings() -> FinetuneConfig:
    """The demo's settings with this machine's thread count."""
    return dataclasses.replace(DEMO, threads=default_threads())


def local_records() -> dict[str, RunRecord]:
    """The runs made on this machine (the runs folder), label -> record."""
    table = browse_runs()
    if table.empty:
        return {}
    return records_for(table[table["label"].str.startswith("runs/")])


def sample_records() -> dict[str, RunRecord]:
    """Completed sample runs, label -> record (none when sample_runs/ is empty); the runs of a
    sample sweep (sample_runs/sweep*/) are left out: they are read as sweeps, with other settings."""
    table = browse_runs()
    if table.empty:
        return {}
    table = table[table["label"].str.startswith("sample_runs/") & (table["status"] == "completed")]
    in_sweep = table["path"].map(lambda p: (Path(p).parent / "sweep.json").is_file())
    return records_for(table[~in_sweep])
