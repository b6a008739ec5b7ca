"""Run records reshaped for the training charts: plain pandas, no Streamlit.

Reads records through :mod:`lift_core.runs.records`, tolerating runs that are still being written
(or not started yet), and turns them into the long frames the builders in
:mod:`lift_ui.figures.training` take; also the per-method trade-off points and the
workshop's sentences about what a set of runs shows.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lift_core.errors import LiftError
from lift_core.jsonio import read_json_object
from lift_core.runs.folder import GENERATIONS_FILE, PROGRESS_FILE
from lift_core.runs.records import RunRecord, is_run_dir, read_run
from lift_core.train.registry import METHOD_REGISTRY, PRINCIPAL_METHOD, method_label, method_names


def read_record(path) -> RunRecord | None:
    """The run record at ``path``, or None when it is not (yet) there or not readable."""
    try:
        return read_run(path) if is_run_dir(path) else None
    except (LiftError, OSError, ValueError):
        return None


def long_metrics(records: dict[str, RunRecord]) -> pd.DataFrame:
    """One frame of every run's metrics rows, tagged with ``label`` and ``method``."""
    frames = []
    for label, record in records.items():
        m = record.metrics.copy()
        if m.empty:
            continue
        m["label"], m["method"] = label, record.config.get("method")
        frames.append(m)
    cols = ["label", "method", "step", "elapsed", "loss", "lr", "memory", "target_acc", "source_acc",
            "mask_churn"]
    if not frames:
        return pd.DataFrame(columns=cols)
    out = pd.concat(frames, ignore_index=True)
    for col in cols:
        if col not in out:
            out[col] = float("nan")
    return out


def mean_curves(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per method and step: mean (and std across runs) of loss, accuracies and churn."""
    values = ["loss", "target_acc", "source_acc", "mask_churn"]
    grouped = metrics.groupby(["method", "step"])[values]
    out = grouped.mean().join(grouped.std(ddof=1), rsuffix="_std").reset_index()
    out["label"] = out["method"].map(method_label)
    return out


def progress_numbers(record: RunRecord | None, steps: int, now_elapsed: float | None = None) -> dict:
    """Steps done, elapsed seconds and an ETA from the run's pace so far (None if unknown)."""
    done, elapsed, eta = 0, now_elapsed, None
    if record is not None and not record.metrics.empty:
        m = record.metrics
        done = int(m["step"].max())
        last = float(m["elapsed"].iloc[-1])
        elapsed = max(elapsed or 0.0, last)
        start = float(m.loc[m["step"] == 0, "elapsed"].iloc[0]) if (m["step"] == 0).any() else 0.0
        if done > 0 and record.summary is None and record.status == "running":
            eta = (last - start) / done * (steps - done)
    return {"done": done, "steps": steps, "elapsed": elapsed, "eta": eta}


SETUP_PHASES = ("loading the model and computing the masks (an SVD per layer)",
                "evaluating before training (step 0 accuracies)", "training")


def setup_phase(record: RunRecord | None) -> int:
    """Which of SETUP_PHASES a starting run is in, from what its record holds so far:
    config.json is written once the model and masks are ready, the step-0 row once the
    evaluation before training is done."""
    if record is None:
        return 0
    m = record.metrics
    return 1 if m.empty or not (m["step"] == 0).any() else 2


def read_generations(run_dir) -> pd.DataFrame:
    """A run's generations.jsonl (``step``, ``generations``; the last line per step), empty
    when it has none; a cut-off or unreadable line is skipped (the file is optional)."""
    import json

    try:
        lines = (Path(run_dir) / GENERATIONS_FILE).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return pd.DataFrame(columns=["step", "generations"])
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and isinstance(row.get("generations"), list):
            rows.append(row)
    frame = pd.DataFrame(rows, columns=["step", "generations"])
    return frame.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)


def evaluation_progress(record: RunRecord | None) -> dict | None:
    """A running run's evaluation in progress, from its progress.json: ``phase``, ``step``,
    ``done`` and ``total`` batches; None when it is not evaluating (or has no such file)."""
    if record is None or record.status != "running":
        return None
    try:
        progress = read_json_object(record.path / PROGRESS_FILE)
    except (LiftError, OSError):
        return None
    if not progress or not str(progress.get("phase", "")).startswith("evaluating"):
        return None
    if not all(isinstance(progress.get(k), int) for k in ("step", "done", "total")):
        return None
    return progress


def evaluation_due(record: RunRecord | None, steps: int) -> int | None:
    """The step whose evaluation a running run is (probably) in: the next step's row is
    written only after its evaluation, so the bar would otherwise sit at the step before."""
    if record is None or record.status != "running" or record.metrics.empty:
        return None
    upcoming = int(record.metrics["step"].max()) + 1
    every = int(record.config.get("eval_every") or 0)
    if upcoming <= steps and ((every and upcoming % every == 0) or upcoming == steps):
        return upcoming
    return None


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def duration_sentence(demo_steps: int, local_runs: dict[str, RunRecord], samples: dict[str, RunRecord]) -> str:
    """How long the live demo takes, from measurements: the last demo on this machine, else
    the pace of the latest built-in-model run here (the machine as loaded now), else the
    recorded LIFT sample runs' pace, scaled to the demo's steps.

    Args:
        local_runs: runs made on this machine (the runs folder), label -> record.
    """
    done = sorted((r for r in local_runs.values() if r.status == "completed" and r.summary
                   and r.summary.get("seconds_per_step") and r.config.get("model") == "builtin"),
                  key=lambda r: r.path.stat().st_mtime)
    demos = [r for r in done if r.path.name.startswith("demo-")]
    if demos:
        last = demos[-1].summary
        return (f"the last demo on this machine took {_clock(last['wall_seconds'])} "
                f"({last['seconds_per_step'] * 1000:.0f} ms per step; more on a busy machine)")
    if done:
        last, where = done[-1].summary, f"the latest run on this machine ({done[-1].path.name})"
        pace, extra = last["seconds_per_step"], last["wall_seconds"] - last["train_seconds"]
    else:
        lift = [r.summary for r in samples.values()
                if r.config.get("method") == PRINCIPAL_METHOD and r.summary and r.summary.get("seconds_per_step")]
        if not lift:
            return "its time depends on this machine (no run measured here yet)"
        pace = sum(s["seconds_per_step"] for s in lift) / len(lift)
        extra = sum(s["wall_seconds"] - s["train_seconds"] for s in lift) / len(lift)
        where = "the recorded LIFT sample runs"
    return (f"about {_clock(pace * demo_steps + extra)} at the pace of {where} ({pace * 1000:.0f} ms "
            f"per step plus {extra:.0f} s of loading and evaluation), plus a few seconds to start; "
            "longer on a busy machine")


def refresh_interval_text(records: dict[str, RunRecord], default: int) -> str:
    """'every 100 steps' from the runs' update_interval (the value the text describes)."""
    values = sorted({int(r.config["update_interval"]) for r in records.values()
                     if r.config.get("update_interval")}) or [default]
    return "every " + " or ".join(str(v) for v in values) + " steps"


def optimizer_state_bytes(record: RunRecord) -> tuple[int | None, bool]:
    """(bytes, exact): the summary's figure once the run ends, else an estimate from the budget.

    The estimate is what SparseAdamW stores per trained number, from the method's registry
    record (two fp32 moments, plus an int32 index per entry for the sparse methods).
    """
    if record.summary and record.summary.get("optimizer_state_bytes") is not None:
        return int(record.summary["optimizer_state_bytes"]), True
    trainable = (record.config.get("budget") or {}).get("trainable_params")
    method = METHOD_REGISTRY.get(record.config.get("method"))
    if trainable is None or method is None:
        return None, False
    return trainable * method.state_bytes_per_number, False


def tradeoff_points(records: dict[str, RunRecord]) -> pd.DataFrame:
    """label, method, target_acc, forgetting per run, from its latest evaluation (runs that
    failed or were interrupted are left out: their last numbers say nothing about the method)."""
    rows = []
    for label, record in records.items():
        m = record.metrics
        if "source_acc" not in m or record.status in ("failed", "interrupted"):
            continue
        evals = m[m["source_acc"].notna()]
        if len(evals) < 2:
            continue
        first, last = evals.iloc[0], evals.iloc[-1]
        rows.append({"label": label, "method": record.config.get("method"), "target_acc": last["target_acc"],
                     "forgetting": first["source_acc"] - last["source_acc"], "note": _early_end(record, last)})
    return pd.DataFrame(rows, columns=["label", "method", "target_acc", "forgetting", "note"])


def _early_end(record: RunRecord, last_eval) -> str | None:
    """'stopped at step 200 of 300' for a run whose point is not from its planned last step."""
    steps = int(record.config.get("steps") or 0)
    at = int(last_eval["step"])
    if record.status == "stopped":
        done = int((record.summary or {}).get("steps_done") or record.metrics["step"].max())
        return f"stopped at step {done} of {steps}" + (f", last evaluated at {at}" if at != done else "")
    if record.status == "running" and at < steps:
        return f"running: step {at} of {steps}"
    return None


def ended_label(record: RunRecord | None, planned: str) -> str:
    """A job's heading from its record: "lift, 300 steps" says what was planned, which a
    stopped or failed run did not do."""
    if record is None or record.status not in ("stopped", "failed"):
        return planned  # an interrupted run's box says so; its last step is only a guess
    steps = int(record.config.get("steps") or 0)
    done = int((record.summary or {}).get("steps_done") or
               (record.metrics["step"].max() if len(record.metrics) else 0))
    return f"{record.config.get('method')}, {record.status} at step {done} of {steps}"


def completed_runs(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a runs table that completed with a result. Failed, stopped, interrupted
    and running runs carry before-training or part-way numbers, which would drag a mean."""
    return table[(table["status"] == "completed") & table["target_acc"].notna() & table["forgetting"].notna()]


def method_points(table: pd.DataFrame) -> pd.DataFrame:
    """Trade-off points, one per method: mean ± std over the completed runs (completed_runs)."""
    from lift_core.runs.compare import method_table

    done = completed_runs(table)
    if done.empty:
        return pd.DataFrame(columns=["label", "method", "target_acc", "forgetting"])
    agg = method_table(done)
    return pd.DataFrame({
        "label": agg["method"].map(method_label), "method": agg["method"],
        "runs": agg["runs"], "target_acc": agg["target_acc_mean"], "target_acc_std": agg["target_acc_std"],
        "forgetting": agg["forgetting_mean"], "forgetting_std": agg["forgetting_std"],
    })


def _mean(points: pd.DataFrame, method: str, col: str) -> tuple[float, float] | None:
    row = points[points["method"] == method]
    if row.empty or pd.isna(row[f"{col}_mean"].iloc[0]):
        return None
    std = row[f"{col}_std"].iloc[0]
    return float(row[f"{col}_mean"].iloc[0]), (0.0 if pd.isna(std) else float(std))


def _versus(a, b, more: str, less: str, unit: str) -> str:
    """'3.1 pt more than' / 'about level with' (within one standard deviation) ..."""
    diff = a[0] - b[0]
    if abs(diff) <= max(a[1], b[1]):
        return "about level with (within one standard deviation of)"
    return f"{100 * abs(diff):.1f} {unit} {more if diff > 0 else less}"


def _fmt(value: tuple[float, float], runs: int) -> str:
    return f"{100 * value[0]:.1f}%" + (f" ± {100 * value[1]:.1f}" if runs > 1 else "")


def workshop_findings(points: pd.DataFrame) -> dict[str, str]:
    """Plain sentences about what a set of runs shows, computed from a method table.

    LIFT (the registry's PRINCIPAL_METHOD) is compared for forgetting with the methods that
    train dense weights or adapters, for selection with the other masks at the same budget,
    and for memory with full fine-tuning (the dense method).

    Args:
        points: :func:`lift_core.runs.compare.method_table` of completed runs.

    Returns:
        dict with any of "accuracy", "forgetting", "selection", "memory" (missing when the
        runs needed for that sentence are not there).
    """
    means = {col: {m: v for m in points["method"] if (v := _mean(points, m, col))}
             for col in ("target_acc", "forgetting", "optimizer_state_bytes", "trainable_params")}
    runs = dict(zip(points["method"], points["runs"]))
    out = {}
    if means["target_acc"]:
        out["accuracy"] = _accuracy_sentence(points, means["target_acc"], runs)
    lift, label = PRINCIPAL_METHOD, method_label(PRINCIPAL_METHOD)
    forget = means["forgetting"]
    if lift in forget:
        others = [m for m in method_names() if METHOD_REGISTRY[m].kind != "sparse" and m in forget]
        parts = [f"{_versus(forget[lift], forget[m], 'more than', 'less than', 'points')} {method_label(m)}"
                 for m in others]
        value = 100 * forget[lift][0]
        lost = (f"{label} lost {value:.1f} points of source accuracy" if value >= 0
                else f"{label} gained {-value:.1f} points of source accuracy")
        out["forgetting"] = lost + (f": {' and '.join(parts)}." if parts else ".") + (
            " (Forgetting = source accuracy before minus after; the paper finds LIFT forgets "
            "less than full fine-tuning and LoRA.)")
    acc = means["target_acc"]
    masks = [m for m in method_names("sparse") if m != lift and m in acc]
    if lift in acc and masks:
        parts = [f"{_versus(acc[lift], acc[m], 'above', 'below', 'points')} {method_label(m)}"
                 for m in masks]
        out["selection"] = (f"Same budget, different choice of entries: {label}'s target accuracy is "
                            + " and ".join(parts) + ". The paper ranks LIFT above magnitude and random selection.")
    memory = _memory_sentence(means["optimizer_state_bytes"], means["trainable_params"])
    if memory:
        out["memory"] = memory
    return out


def _accuracy_sentence(points: pd.DataFrame, acc: dict, runs: dict) -> str:
    best = max(acc, key=lambda m: acc[m][0])
    before = _mean(points, best, "target_acc_before")
    listing = ", ".join(f"{method_label(m)} {_fmt(acc[m], runs[m])}" for m in acc)
    close = [method_label(m) for m in acc if m != best
             and acc[best][0] - acc[m][0] <= max(acc[best][1], acc[m][1])]
    verdict = (f"Highest mean: {method_label(best)}, with {', '.join(close)} within one standard "
               "deviation of it." if close else f"Highest here: {method_label(best)}.")
    return (f"Target accuracy after training (mean ± std over seeds): {listing}"
            + (f", from {100 * before[0]:.1f}% before training" if before else "") + f". {verdict}")


def _memory_sentence(state: dict, trained: dict) -> str | None:
    """LIFT's trained numbers and optimizer state against full fine-tuning's."""
    lift = PRINCIPAL_METHOD
    dense = next((m for m in method_names("dense") if m in state), None)
    if lift not in state or dense is None:
        return None
    return (f"{method_label(lift)} trains {trained[lift][0]:,.0f} numbers and keeps "
            f"{state[lift][0] / 1024:,.0f} KiB of optimizer state; {method_label(dense)} trains "
            f"{trained[dense][0]:,.0f} and keeps {state[dense][0] / 1024:,.0f} KiB "
            f"({state[dense][0] / state[lift][0]:.1f}x). On Llama-2-7B the paper reports 27 GB vs 1.3 GB.")


# config.json entries that differ between any two runs without being settings.
_NOT_SETTINGS = ("out_dir", "overwrite", "pid", "versions", "format", "budget", "data", "setup")


def differing_settings(table: pd.DataFrame) -> list[str]:
    """The setting columns (records.SETTING_COLUMNS, plus lr and steps) whose values differ
    between the rows of a runs table."""
    from lift_core.runs.records import SETTING_COLUMNS

    return [c for c in ["lr", "steps", *SETTING_COLUMNS]
            if c in table and table[c].astype(str).nunique() > 1]


def config_diff(records: dict[str, RunRecord]) -> pd.DataFrame:
    """setting x run: the config.json entries (budget and data sizes included) that differ
    between the given runs; empty when they agree, or with fewer than two runs."""
    flat = {}
    for label, record in records.items():
        cfg = {k: v for k, v in record.config.items() if k not in _NOT_SETTINGS}
        budget = record.config.get("budget") or {}
        cfg.update({f"budget.{k}": v for k, v in budget.items() if not isinstance(v, (list, dict))})
        cfg.update({f"data.{k}": v for k, v in (record.config.get("data") or {}).items()})
        flat[label] = {k: (None if v is None else f"{v:.4g}" if isinstance(v, float) else str(v))
                       for k, v in cfg.items()}
    frame = pd.DataFrame(flat)
    if frame.shape[1] < 2:
        return frame.iloc[0:0]
    differs = frame.apply(lambda row: row.nunique(dropna=False) > 1, axis=1)
    out = frame[differs].fillna("–")
    out.index.name = "setting"
    return out


def filter_runs(table: pd.DataFrame, text: str = "", statuses: list[str] | None = None) -> pd.DataFrame:
    """Rows whose label, name, tags, notes or method contain every word of ``text`` (any
    case), and whose status is one of ``statuses`` (all when None or empty)."""
    keep = pd.Series(True, index=table.index)
    if statuses:
        keep &= table["status"].isin(statuses)
    haystack = table.reindex(columns=["label", "name", "tags", "notes", "method"]).fillna("").astype(str).agg(
        " ".join, axis=1).str.lower()
    for word in text.lower().split():
        keep &= haystack.str.contains(word, regex=False)
    return table[keep]
