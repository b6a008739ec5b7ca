"""Run records reshaped for the training charts: plain pandas, no Streamlit.

Reads records through :mod:`lift_core.records`, tolerating runs that are still being written
(or not started yet), and turns them into the long frames the builders in
:mod:`lift_ui.figures_training` take; also the per-method trade-off points and the
workshop's sentences about what a set of runs shows.
"""

from __future__ import annotations

import pandas as pd

from lift_core.errors import LiftError
from lift_core.methods import SPARSE_METHODS
from lift_core.records import RunRecord, is_run_dir, read_run
from lift_ui.figures_training import METHOD_NAMES


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
    cols = ["label", "method", "step", "loss", "target_acc", "source_acc", "mask_churn"]
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
    out["label"] = out["method"].map(lambda m: METHOD_NAMES.get(m, m))
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


def optimizer_state_bytes(record: RunRecord) -> tuple[int | None, bool]:
    """(bytes, exact): the summary's figure once the run ends, else an estimate from the budget.

    The estimate is what SparseAdamW stores: two fp32 moments per trained number, plus an
    int32 index per entry for the sparse methods.
    """
    if record.summary and record.summary.get("optimizer_state_bytes") is not None:
        return int(record.summary["optimizer_state_bytes"]), True
    trainable = (record.config.get("budget") or {}).get("trainable_params")
    if trainable is None:
        return None, False
    per = 12 if record.config.get("method") in SPARSE_METHODS else 8
    return trainable * per, False


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
                     "forgetting": first["source_acc"] - last["source_acc"]})
    return pd.DataFrame(rows, columns=["label", "method", "target_acc", "forgetting"])


def completed_runs(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a runs table that completed with a result. Failed, stopped, interrupted
    and running runs carry before-training or part-way numbers, which would drag a mean."""
    return table[(table["status"] == "completed") & table["target_acc"].notna() & table["forgetting"].notna()]


def method_points(table: pd.DataFrame) -> pd.DataFrame:
    """Trade-off points, one per method: mean ± std over the completed runs (completed_runs)."""
    from lift_core.compare_cli import method_table

    done = completed_runs(table)
    if done.empty:
        return pd.DataFrame(columns=["label", "method", "target_acc", "forgetting"])
    agg = method_table(done)
    return pd.DataFrame({
        "label": agg["method"].map(lambda m: METHOD_NAMES.get(m, m)), "method": agg["method"],
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

    Args:
        points: :func:`lift_core.compare_cli.method_table` of completed runs.

    Returns:
        dict with any of "accuracy", "forgetting", "selection", "memory" (missing when the
        runs needed for that sentence are not there).
    """
    names = {m: METHOD_NAMES.get(m, m) for m in points["method"]}
    runs = dict(zip(points["method"], points["runs"]))
    acc = {m: v for m in points["method"] if (v := _mean(points, m, "target_acc"))}
    forget = {m: v for m in points["method"] if (v := _mean(points, m, "forgetting"))}
    out = {}
    if acc:
        best = max(acc, key=lambda m: acc[m][0])
        before = _mean(points, best, "target_acc_before")
        listing = ", ".join(f"{names[m]} {_fmt(acc[m], runs[m])}" for m in acc)
        close = [names[m] for m in acc if m != best
                 and acc[best][0] - acc[m][0] <= max(acc[best][1], acc[m][1])]
        verdict = (f"Highest mean: {names[best]}, with {', '.join(close)} within one standard deviation of it."
                   if close else f"Highest here: {names[best]}.")
        out["accuracy"] = (f"Target accuracy after training (mean ± std over seeds): {listing}"
                           + (f", from {100 * before[0]:.1f}% before training" if before else "")
                           + f". {verdict}")
    if "lift" in forget:
        parts = [f"{_versus(forget['lift'], forget[m], 'more than', 'less than', 'points')} {names[m]}"
                 for m in ("full", "lora") if m in forget]
        value = 100 * forget["lift"][0]
        lost = (f"LIFT lost {value:.1f} points of source accuracy" if value >= 0
                else f"LIFT gained {-value:.1f} points of source accuracy")
        out["forgetting"] = lost + (f": {' and '.join(parts)}." if parts else ".") + (
            " (Forgetting = source accuracy before minus after; the paper finds LIFT forgets "
            "less than full fine-tuning and LoRA.)")
    if "lift" in acc and any(m in acc for m in ("magnitude", "random")):
        parts = [f"{_versus(acc['lift'], acc[m], 'above', 'below', 'points')} {names[m]}"
                 for m in ("magnitude", "random") if m in acc]
        out["selection"] = ("Same budget, different choice of entries: LIFT's target accuracy is "
                            + " and ".join(parts) + ". The paper ranks LIFT above magnitude and random selection.")
    state = {m: v for m in points["method"] if (v := _mean(points, m, "optimizer_state_bytes"))}
    trained = {m: v for m in points["method"] if (v := _mean(points, m, "trainable_params"))}
    if "lift" in state and "full" in state:
        out["memory"] = (f"LIFT trains {trained['lift'][0]:,.0f} numbers and keeps {state['lift'][0] / 1024:,.0f} KiB "
                         f"of optimizer state; full fine-tuning trains {trained['full'][0]:,.0f} and keeps "
                         f"{state['full'][0] / 1024:,.0f} KiB ({state['full'][0] / state['lift'][0]:.1f}x). "
                         "On Llama-2-7B the paper reports 27 GB vs 1.3 GB.")
    return out
