"""Plotly figure builders for training runs: loss, accuracy, mask churn, the trade-off.

Plain functions, data in and a Figure out (no Streamlit, no torch). Curves come as one
"long" DataFrame with a row per (run, metrics row): ``label`` (what the legend says),
``method``, ``step`` and any of ``loss``, ``target_acc``, ``source_acc``, ``mask_churn``,
``lr``, ``memory``, ``elapsed`` (accuracies as fractions; shown in %). The x axis is the step
or the wall time (``x="elapsed"``, seconds since the run started). Colour follows the method, so LIFT is the same
orange on every page; several runs of one method get different dashes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lift_core.train.registry import METHOD_REGISTRY, method_color, method_label
from lift_ui.figures.explorer import _layout

# Every method's colour, from its registry record (method_color reads the registry itself).
METHOD_COLORS = {name: method.color for name, method in METHOD_REGISTRY.items()}
_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")


def ema(values, alpha: float) -> np.ndarray:
    """Exponential moving average (weight ``alpha`` on the newest value), NaNs skipped."""
    series = pd.Series(np.asarray(values, dtype=float))
    return series.ewm(alpha=alpha, adjust=True, ignore_na=True).mean().to_numpy()


def _styles(metrics: pd.DataFrame) -> dict[str, dict]:
    """label -> line style: the method's colour, a new dash per extra run of that method."""
    styles, seen = {}, {}
    for label, method in metrics[["label", "method"]].drop_duplicates("label").itertuples(index=False):
        n = seen.get(method, 0)
        seen[method] = n + 1
        styles[label] = dict(color=method_color(method), dash=_DASHES[n % len(_DASHES)])
    return styles


def _rows_with(metrics: pd.DataFrame, column: str) -> pd.DataFrame:
    if column not in metrics:
        return metrics.iloc[0:0]
    # A stable sort keeps the runs in the order given, so legends follow the caller's order.
    return metrics[metrics[column].notna()].sort_values("step", kind="stable")


X_AXES = {"step": "step", "elapsed": "wall time (s since the run started)"}
# Accuracy axes (%): 0-100 with room for a marker at either end (plus cliponaxis=False on
# the traces, so a point at 0 % or 100 % is never cut in half by the plot edge).
ACCURACY_RANGE = (-3, 103)


def _x_range(fig: go.Figure, steps: int | None, x: str = "step") -> None:
    # A fixed x range keeps the charts of one run lined up while it is still growing (with a
    # margin, so the step-0 markers are not cut in half). Wall time has no known end.
    if steps and x == "step":
        fig.update_xaxes(range=[-0.02 * steps, steps * 1.02])


def _side_legend(fig: go.Figure) -> None:
    # Many runs: a vertical legend right of the plot, clear of the title and subplot titles.
    fig.update_layout(legend=dict(orientation="v", yanchor="top", y=1.0, xanchor="left", x=1.02))


def _empty_note(fig: go.Figure, text: str) -> None:
    fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                       font=dict(size=13, color="#888888"))


def loss_figure(metrics: pd.DataFrame, *, log_y: bool = False, alpha: float = 0.1,
                raw: bool | None = None, steps: int | None = None, x: str = "step") -> go.Figure:
    """Training loss per step: EMA-smoothed lines, and the raw values faintly behind them.

    Args:
        metrics: long frame with label, method, step, loss.
        log_y: log-scale y axis.
        alpha: EMA weight of the newest step (smaller = smoother).
        raw: draw the raw loss too; default only when there is a single run.
        steps: total steps, to fix the x range while a run grows.
        x: "step" or "elapsed" (wall time).
    """
    rows = _rows_with(metrics, "loss")
    styles = _styles(metrics) if len(metrics) else {}
    raw = rows["label"].nunique() == 1 if raw is None else raw
    fig = go.Figure()
    for label, run in rows.groupby("label", sort=False):
        style = styles[label]
        if raw:  # readable behind the smoothed line, not a ghost of it
            fig.add_trace(go.Scatter(x=run[x], y=run["loss"], mode="lines", name=f"{label} (raw)",
                                     line=dict(color=style["color"], width=1.2), opacity=0.55))
        fig.add_trace(go.Scatter(x=run[x], y=ema(run["loss"], alpha), mode="lines",
                                 name=f"{label} (EMA)" if raw else label, line=dict(width=2.5, **style)))
    fig.update_xaxes(title=X_AXES[x])
    fig.update_yaxes(title="loss (log)" if log_y else "loss", type="log" if log_y else "linear",
                     **(_log_ticks(rows["loss"]) if log_y else {}))
    _x_range(fig, steps, x)
    if rows.empty:
        _empty_note(fig, "no training step yet")
    fig = _layout(fig, "Training loss")
    if len(fig.data) > 6:  # too many for a half-width chart: names stay in the hover text
        fig.update_layout(showlegend=False)
    elif len(fig.data) > 3:
        _side_legend(fig)
    return fig


def accuracy_figure(metrics: pd.DataFrame, *, steps: int | None = None, x: str = "step",
                    title: str = "Accuracy: learned (target) and kept (source)") -> go.Figure:
    """Target and source accuracy vs step, two rows on one shared x axis.

    Forgetting shows as the source row falling while the target row rises. Optional columns
    ``target_acc_std`` / ``source_acc_std`` draw error bars (mean curves across seeds).
    """
    styles = _styles(metrics) if len(metrics) else {}
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("target task (what is being learned)",
                                        "source task (what the model knew: forgetting shows here)"))
    for row, column in ((1, "target_acc"), (2, "source_acc")):
        rows = _rows_with(metrics, column)
        for label, run in rows.groupby("label", sort=False):
            spread = run.get(f"{column}_std")
            errors = None if spread is None or spread.isna().all() else dict(
                type="data", array=100 * spread.fillna(0).to_numpy(), visible=True, thickness=1)
            fig.add_trace(go.Scatter(
                x=run[x], y=100 * run[column], mode="lines+markers", name=label,
                legendgroup=label, showlegend=row == 1, error_y=errors, cliponaxis=False,
                line=dict(width=2, **styles[label]), marker=dict(size=6)), row=row, col=1)
        # Fixed 0-100: the scale does not jump as a run's first evaluations come in.
        fig.update_yaxes(title="accuracy %", range=list(ACCURACY_RANGE), row=row, col=1)
    fig.update_xaxes(title=X_AXES[x], row=2, col=1)
    _x_range(fig, steps, x)
    fig = _layout(fig, title, height=520)
    _side_legend(fig)
    return fig


def churn_figure(metrics: pd.DataFrame, *, steps: int | None = None) -> go.Figure:
    """Fraction of mask entries that changed at each refresh (sparse methods only).

    A refresh at the final step (``steps``, when given) is left out: no step trains with
    that mask, so it changes nothing.
    """
    rows = _rows_with(metrics, "mask_churn")
    if steps:
        rows = rows[rows["step"] < steps]
    styles = _styles(metrics) if len(metrics) else {}
    fig = go.Figure()
    for label, run in rows.groupby("label", sort=False):
        fig.add_trace(go.Scatter(x=run["step"], y=100 * run["mask_churn"], mode="lines+markers",
                                 name=label, line=dict(width=2, **styles[label]), marker=dict(size=8)))
    fig.update_xaxes(title="step of the mask refresh")
    fig.update_yaxes(title="mask entries changed %", rangemode="tozero")
    _x_range(fig, steps)
    if rows.empty:
        _empty_note(fig, "no mask refresh yet")
    fig = _layout(fig, "Mask churn at each refresh", height=320)
    if len(fig.data) > 3:
        _side_legend(fig)
    return fig


def tradeoff_figure(points: pd.DataFrame, *, title: str = "Accuracy vs forgetting") -> go.Figure:
    """One point per method (or run): x = forgetting, y = target accuracy, in points.

    Args:
        points: columns ``label``, ``method``, ``forgetting``, ``target_acc`` (fractions) and
            optionally ``forgetting_std`` / ``target_acc_std`` (error bars, e.g. across seeds)
            and ``runs`` (number of runs averaged, shown in the hover text).
    """
    fig = go.Figure()
    # Alternate the label side, so two methods at nearly the same spot stay readable.
    sides = ("top center", "bottom center", "middle right", "middle left")
    for i, point in enumerate(points.itertuples(index=False)):
        p = point._asdict()
        if p.get("forgetting") is None or p.get("target_acc") is None or pd.isna(p["forgetting"]) or pd.isna(p["target_acc"]):
            continue
        err = {}
        for axis, col in (("error_x", "forgetting_std"), ("error_y", "target_acc_std")):
            if p.get(col) is not None and not pd.isna(p[col]):
                err[axis] = dict(type="data", array=[100 * p[col]], visible=True, thickness=1.5)
        runs = f"<br>{int(p['runs'])} runs, mean ± std" if p.get("runs") and p["runs"] > 1 else ""
        # A run that ended early (stopped) is marked as such, hollow, with where it stopped.
        note = p.get("note") if isinstance(p.get("note"), str) else ""
        runs += f"<br>{note}" if note else ""
        fig.add_trace(go.Scatter(
            x=[100 * p["forgetting"]], y=[100 * p["target_acc"]], mode="markers+text",
            name=p["label"], text=[f"{p['label']} ({note})" if note else p["label"]],
            textposition=sides[i % len(sides)],
            marker=dict(size=14, color=method_color(p["method"]), symbol="circle-open" if note else "circle",
                        line=dict(color=method_color(p["method"]) if note else "white", width=2 if note else 1)),
            hovertemplate=f"{p['label']}: forgetting %{{x:.1f}} pt, target %{{y:.1f}}%{runs}<extra></extra>",
            cliponaxis=False, **err))  # a point on the outer gridline (0 %, 100 %) is drawn whole
    fig.update_xaxes(title="forgetting: source accuracy lost (points) → worse", zeroline=True,
                     zerolinecolor="#bbbbbb", **_bracketing_range(points, "forgetting"))
    fig.update_yaxes(title="target accuracy % → better", **_bracketing_range(points, "target_acc"))
    fig = _layout(fig, title, height=420)
    fig.update_layout(showlegend=False)
    return fig


def _bracketing_range(points: pd.DataFrame, column: str) -> dict:
    """Axis settings whose first and last gridlines bracket every point and error bar of
    ``column`` (in %), so no point sits beyond the outer gridlines, with room for labels."""
    values = 100 * pd.to_numeric(points.get(column), errors="coerce")
    std = f"{column}_std"
    err = 100 * pd.to_numeric(points[std], errors="coerce").fillna(0) if std in points else 0 * values
    lo, hi = (values - err).min(), (values + err).max()
    if pd.isna(lo):
        return {}
    span = max(hi - lo, 1.0)
    dtick = next(d for d in (1, 2, 5, 10, 20, 50) if span / d <= 6)
    bottom, top = np.floor(lo / dtick) * dtick, np.ceil(hi / dtick) * dtick
    return {"range": [bottom - 0.4 * dtick, top + 0.4 * dtick], "tick0": 0, "dtick": dtick}


def _log_ticks(values) -> dict:
    """Log-axis ticks at 1-2-5 steps, written out in full (plotly's own write 0.5 as '5')."""
    values = pd.to_numeric(pd.Series(values), errors="coerce")
    values = values[values > 0]
    if values.empty:
        return {}
    lo, hi = np.floor(np.log10(values.min())), np.ceil(np.log10(values.max()))
    ticks = [m * 10.0 ** e for e in range(int(lo), int(hi) + 1) for m in (1, 2, 5)]
    ticks = [t for t in ticks if values.min() / 2 <= t <= values.max() * 2]
    return {"tickvals": ticks, "ticktext": [f"{t:g}" for t in ticks]}


def memory_figure(table: pd.DataFrame) -> go.Figure:
    """Trainable numbers and optimizer-state memory per method, side by side.

    Args:
        table: columns ``method``, ``trainable_params``, ``optimizer_state_bytes``.
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=("trainable numbers", "optimizer state (KiB)"))
    colors = [method_color(m) for m in table["method"]]
    names = [method_label(m) for m in table["method"]]
    fig.add_trace(go.Bar(x=names, y=table["trainable_params"], marker_color=colors, showlegend=False,
                         hovertemplate="%{x}: %{y:,} numbers<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Bar(x=names, y=table["optimizer_state_bytes"] / 1024, marker_color=colors,
                         showlegend=False, hovertemplate="%{x}: %{y:,.0f} KiB<extra></extra>"), row=1, col=2)
    fig.update_yaxes(rangemode="tozero")
    fig = _layout(fig, "What each method trains and stores", height=340)
    fig.update_layout(margin=dict(t=80))
    return fig


def series_figure(metrics: pd.DataFrame, column: str, *, title: str, y_title: str, scale: float = 1.0,
                  steps: int | None = None, x: str = "step", log_y: bool = False) -> go.Figure:
    """One line per run of any per-step column (the learning rate, memory) against step or time.

    Args:
        metrics: long frame with label, method, step (and elapsed) and ``column``.
        scale: multiplies the values (e.g. 2**-20 for MiB).
    """
    rows = _rows_with(metrics, column)
    styles = _styles(metrics) if len(metrics) else {}
    fig = go.Figure()
    for label, run in rows.groupby("label", sort=False):
        fig.add_trace(go.Scatter(x=run[x], y=scale * run[column], mode="lines", name=label,
                                 line=dict(width=2, **styles[label])))
    fig.update_xaxes(title=X_AXES[x])
    fig.update_yaxes(title=y_title, type="log" if log_y else "linear", rangemode="tozero")
    _x_range(fig, steps, x)
    if rows.empty:
        _empty_note(fig, f"no {y_title} recorded yet")
    fig = _layout(fig, title, height=300)
    if len(fig.data) > 3:
        _side_legend(fig)
    return fig


GENERATION_COLUMNS = ["step", "task", "prompt", "answer", "gold", "correct"]


def generations_table(metrics: pd.DataFrame, *, latest_only: bool = False) -> pd.DataFrame:
    """The kept answers of a run's first and latest evaluations (rows with ``step`` and
    ``generations``: run_data.read_generations, one per evaluation),
    one row per prompt, target before source, so what was learned and what was forgotten read
    side by side (the same prompt, before and now). ``latest_only``: only the latest."""
    if "generations" not in metrics:
        return pd.DataFrame(columns=GENERATION_COLUMNS)
    evals = metrics[metrics["generations"].map(lambda g: isinstance(g, list) and len(g) > 0)]
    if evals.empty:
        return pd.DataFrame(columns=GENERATION_COLUMNS)
    picked = evals.iloc[[-1]] if latest_only else evals.iloc[[0, -1]].drop_duplicates("step")
    rows = [{"step": int(step), **sample} for step, samples in zip(picked["step"], picked["generations"])
            for sample in samples]
    table = pd.DataFrame(rows).reindex(columns=GENERATION_COLUMNS)
    order = {"target": 0, "source": 1}
    table["_task"] = table["task"].map(order).fillna(2)
    table["_n"] = table.groupby(["step", "task"]).cumcount()
    table = table.sort_values(["_task", "_n", "step"], kind="stable")
    return table.drop(columns=["_task", "_n"]).reset_index(drop=True)
