"""The four views of a sweep that compare methods fairly, as DataFrames over run records.

A sweep is a grid of ordinary runs (method x learning rate x seed, optionally x budget); these
functions read their records and return plain tables that the app plots, the CLI prints and
``write_csvs`` saves: the accuracy-forgetting **frontier** (every run, each method's Pareto
front), **forgetting at matched target accuracy** (source accuracy when target accuracy
first reaches a level, interpolated between evaluations), the **budget curve** and the
**LR curve**. Means and standard deviations (ddof=1, NaN for one seed) are over seeds.
Accuracies are fractions (0-1), as in the run records.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from lift_core.errors import LiftError
from lift_core.runs.records import list_runs, read_run
from lift_core.sweeps.runner import read_index
from lift_core.train.registry import METHOD_REGISTRY

LEVELS = (0.5, 0.8, 0.9)
POINT_COLUMNS = ["run_dir", "method", "lr", "seed", "budget", "trainable_fraction", "target_before",
                 "source_before", "target_acc", "source_acc", "forgetting"]
AT_TARGET_COLUMNS = ["method", "level", "source_mean", "source_std", "forgetting_mean", "forgetting_std",
                     "step_mean", "n_reached", "n_total"]
# The measures averaged over seeds by the curves, each as <name>_mean and <name>_std.
_MEASURES = ("target_acc", "source_acc", "forgetting")
CSV_FILES = ("frontier.csv", "forgetting_at_target.csv", "budget_curve.csv", "lr_curve.csv")


def sweep_run_dirs(sweep_dir: str | os.PathLike) -> list[Path]:
    """The run folders of a sweep, in its index's order; for a folder without ``sweep.json``,
    every run record under it.

    Raises:
        LiftError: when the folder does not exist.
    """
    sweep_dir = Path(sweep_dir).expanduser()
    if not sweep_dir.is_dir():
        raise LiftError(f"sweep folder {sweep_dir} does not exist (give a folder written by `sweep --out`)")
    index = read_index(sweep_dir)
    if index is None:
        return list_runs(sweep_dir)
    return [sweep_dir / entry["dir"] for entry in index.get("runs", [])]


def _completed(run_dirs):
    """Records of the completed runs among ``run_dirs`` (missing or unreadable ones skipped):
    a stopped or failed run's last numbers say nothing about where its settings lead."""
    for path in run_dirs:
        try:
            record = read_run(path)
        except LiftError:
            continue
        if record.status == "completed" and record.summary is not None:
            yield record


def _budget(config: dict):
    # Dense fine-tuning trains every entry: no budget. The others spend lora_rank's budget.
    method = METHOD_REGISTRY.get(config.get("method"))
    if method is not None and method.kind == "dense":
        return None
    return config.get("lora_rank")


def load_points(run_dirs) -> pd.DataFrame:
    """One row per completed run (see POINT_COLUMNS); ``forgetting`` = source accuracy before
    minus after, in accuracy units (0.1 = 10 points)."""
    rows = []
    for record in _completed(run_dirs):
        cfg, summary = record.config, record.summary
        before_s, after_s = summary.get("source_acc_before"), summary.get("source_acc")
        rows.append({
            "run_dir": str(record.path), "method": cfg.get("method"),
            "lr": cfg.get("lr_used", cfg.get("lr")), "seed": cfg.get("seed"), "budget": _budget(cfg),
            "trainable_fraction": (cfg.get("budget") or {}).get("trainable_fraction"),
            "target_before": summary.get("target_acc_before"), "source_before": before_s,
            "target_acc": summary.get("target_acc"), "source_acc": after_s,
            "forgetting": None if before_s is None or after_s is None else before_s - after_s,
        })
    points = pd.DataFrame(rows, columns=POINT_COLUMNS)
    for column in POINT_COLUMNS[2:]:
        points[column] = pd.to_numeric(points[column], errors="coerce")
    return points


def _in_registry_order(table: pd.DataFrame, *more: str) -> pd.DataFrame:
    """Rows sorted by method in registry order (then by ``more``), as every list shows them."""
    order = {name: i for i, name in enumerate(METHOD_REGISTRY)}
    key = lambda col: col.map(order).fillna(len(order)) if col.name == "method" else col  # noqa: E731
    return table.sort_values(["method", *more], key=key, kind="stable").reset_index(drop=True)


def _pareto(target: np.ndarray, source: np.ndarray) -> np.ndarray:
    """True where no other point is at least as good in both and better in one."""
    dominated = ((target[None, :] >= target[:, None]) & (source[None, :] >= source[:, None])
                 & ((target[None, :] > target[:, None]) | (source[None, :] > source[:, None])))
    return ~dominated.any(axis=1)


def seed_means(points: pd.DataFrame, keys=("method", "budget", "lr")) -> pd.DataFrame:
    """Mean and std over seeds of target_acc, source_acc and forgetting per ``keys`` (NaN keys,
    e.g. full fine-tuning's budget, kept), with ``trainable_fraction`` (mean) and ``n_seeds``."""
    keys = list(keys)
    columns = keys + ["trainable_fraction"] + [f"{m}_{s}" for m in _MEASURES for s in ("mean", "std")] + ["n_seeds"]
    if points.empty:
        return pd.DataFrame(columns=columns)
    grouped = points.groupby(keys, dropna=False, sort=True)
    table = grouped[list(_MEASURES)].agg(["mean", "std"])
    table.columns = [f"{m}_{s}" for m, s in table.columns]
    table["trainable_fraction"] = grouped["trainable_fraction"].mean()
    table["n_seeds"] = grouped["seed"].count()
    return _in_registry_order(table.reset_index()[columns])


def frontier(points: pd.DataFrame, *, average_seeds: bool = False) -> pd.DataFrame:
    """``points`` (or, with ``average_seeds``, their seed means per method/budget/lr) with a
    bool column ``on_front``: Pareto-optimal within its method in (target accuracy up, source
    accuracy up). Rows without both accuracies are never on the front."""
    table = seed_means(points) if average_seeds else points.copy()
    target_col, source_col = ("target_acc_mean", "source_acc_mean") if average_seeds else ("target_acc", "source_acc")
    table["on_front"] = False
    for _, group in table.groupby("method", sort=False):
        group = group.dropna(subset=[target_col, source_col])
        if len(group):
            flags = _pareto(group[target_col].to_numpy(float), group[source_col].to_numpy(float))
            table.loc[group.index, "on_front"] = flags
    return table


def _evaluations(metrics: pd.DataFrame) -> pd.DataFrame:
    """The evaluation rows (subset or full sets alike), in step order."""
    if "target_acc" not in metrics or "source_acc" not in metrics:
        return metrics.iloc[0:0]
    evals = metrics.dropna(subset=["target_acc", "source_acc"])
    return evals.sort_values("step", kind="stable")


def source_at_target(evals: pd.DataFrame, level: float) -> tuple[float, float] | None:
    """(step, source accuracy) where target accuracy first reaches ``level``, or None if never.

    Between two consecutive evaluations a -> b with target(a) < level <= target(b), both the
    step and the source accuracy are interpolated linearly at the crossing. When the first
    evaluation (before training) already reaches the level, its own values are returned.

    Args:
        evals: rows with step, target_acc, source_acc, in step order (see ``_evaluations``).
    """
    steps, target, source = (evals[c].to_numpy(float) for c in ("step", "target_acc", "source_acc"))
    if not len(target):
        return None
    if target[0] >= level:
        return steps[0], source[0]
    for i in range(1, len(target)):
        if target[i - 1] < level <= target[i]:
            frac = (level - target[i - 1]) / (target[i] - target[i - 1])
            return (steps[i - 1] + frac * (steps[i] - steps[i - 1]),
                    source[i - 1] + frac * (source[i] - source[i - 1]))
    return None


def crossings(run_dirs, levels=LEVELS) -> pd.DataFrame:
    """One row per completed run and level: run_dir, method, lr, seed, budget, level, reached,
    step, source (at the crossing), forgetting (source before minus at the crossing)."""
    rows = []
    for record in _completed(run_dirs):
        evals = _evaluations(record.metrics)
        cfg = record.config
        base = {"run_dir": str(record.path), "method": cfg.get("method"), "lr": cfg.get("lr_used", cfg.get("lr")),
                "seed": cfg.get("seed"), "budget": _budget(cfg)}
        before = float(evals["source_acc"].iloc[0]) if len(evals) else np.nan
        for level in levels:
            hit = source_at_target(evals, level)
            step, source = hit if hit is not None else (np.nan, np.nan)
            rows.append({**base, "level": float(level), "reached": hit is not None, "step": step,
                         "source": source, "forgetting": before - source})
    return pd.DataFrame(rows, columns=["run_dir", "method", "lr", "seed", "budget", "level", "reached",
                                       "step", "source", "forgetting"])


def forgetting_at_target(run_dirs, levels=LEVELS) -> pd.DataFrame:
    """Per method and level: source accuracy (and forgetting) when target accuracy first
    reaches the level, mean and std over the runs that reached it (all LRs, seeds and
    budgets of that method), the mean step of the crossing, and ``n_reached`` of
    ``n_total`` completed runs. Runs that never reach a level are counted, never averaged."""
    table = crossings(run_dirs, levels)
    rows = []
    for (method, level), group in table.groupby(["method", "level"], sort=False):
        reached = group[group["reached"]]
        rows.append({"method": method, "level": level,
                     "source_mean": reached["source"].mean(), "source_std": reached["source"].std(),
                     "forgetting_mean": reached["forgetting"].mean(),
                     "forgetting_std": reached["forgetting"].std(), "step_mean": reached["step"].mean(),
                     "n_reached": len(reached), "n_total": len(group)})
    return _in_registry_order(pd.DataFrame(rows, columns=AT_TARGET_COLUMNS), "level")


def budget_curve(points: pd.DataFrame, *, best_lr: bool = True) -> pd.DataFrame:
    """Target accuracy, source accuracy and forgetting vs trainable fraction, per method and
    budget (mean and std over seeds). With ``best_lr`` each (method, budget) keeps only the
    learning rate with the highest mean target accuracy, so a method is not judged at a rate
    that does not suit it; the ``lr`` column says which one."""
    table = seed_means(points)
    if best_lr and len(table):
        best = (table.assign(_b=table["budget"].fillna(-1))
                .sort_values("target_acc_mean", ascending=False, kind="stable")
                .drop_duplicates(["method", "_b"]).drop(columns="_b"))
        table = best
    return _in_registry_order(table, "trainable_fraction")


def lr_curve(points: pd.DataFrame) -> pd.DataFrame:
    """Final target accuracy, source accuracy and forgetting vs learning rate, per method and
    budget (mean and std over seeds)."""
    return _in_registry_order(seed_means(points), "budget", "lr")


def views(sweep_dir: str | os.PathLike, levels=LEVELS) -> dict[str, pd.DataFrame]:
    """The four views of a sweep folder, by CSV file name."""
    run_dirs = sweep_run_dirs(sweep_dir)
    points = load_points(run_dirs)
    return {"frontier.csv": frontier(points), "forgetting_at_target.csv": forgetting_at_target(run_dirs, levels),
            "budget_curve.csv": budget_curve(points), "lr_curve.csv": lr_curve(points)}


def write_csvs(sweep_dir: str | os.PathLike, levels=LEVELS) -> list[Path]:
    """Write frontier.csv, forgetting_at_target.csv, budget_curve.csv and lr_curve.csv into
    ``sweep_dir``; returns their paths."""
    sweep_dir = Path(sweep_dir).expanduser()
    paths = []
    for name, table in views(sweep_dir, levels).items():
        path = sweep_dir / name
        table.to_csv(path, index=False)
        paths.append(path)
    return paths


def _pm(mean, std, scale: float = 100.0) -> str:
    if pd.isna(mean):
        return "–"
    return f"{scale * mean:.1f}" + ("" if pd.isna(std) else f" ± {scale * std:.1f}")


def summary_table(sweep_dir: str | os.PathLike, levels=LEVELS) -> str:
    """Plain-text summary for the CLI: final accuracies per method/budget/lr (mean ± std over
    seeds, in %), then forgetting at matched target accuracy per method and level."""
    run_dirs = sweep_run_dirs(sweep_dir)
    points = load_points(run_dirs)
    if points.empty:
        return "no completed runs yet"
    final = lr_curve(points)
    shown = pd.DataFrame({
        "method": final["method"], "budget": final["budget"].map(lambda b: "–" if pd.isna(b) else f"{b:g}"),
        "lr": final["lr"].map(lambda v: f"{v:g}"), "seeds": final["n_seeds"],
        "target %": [_pm(m, s) for m, s in zip(final["target_acc_mean"], final["target_acc_std"])],
        "source %": [_pm(m, s) for m, s in zip(final["source_acc_mean"], final["source_acc_std"])],
        "forgetting pt": [_pm(m, s) for m, s in zip(final["forgetting_mean"], final["forgetting_std"])],
    })
    at = forgetting_at_target(run_dirs, levels)
    matched = pd.DataFrame({
        "method": at["method"], "target reaches": at["level"].map(lambda v: f"{100 * v:g}%"),
        "source % then": [_pm(m, s) for m, s in zip(at["source_mean"], at["source_std"])],
        "forgetting pt": [_pm(m, s) for m, s in zip(at["forgetting_mean"], at["forgetting_std"])],
        "reached": [f"{r}/{n}" for r, n in zip(at["n_reached"], at["n_total"])],
    })
    return ("Final accuracies (mean ± std over seeds)\n" + shown.to_string(index=False)
            + "\n\nForgetting at matched target accuracy (runs that reached the level)\n"
            + matched.to_string(index=False))
