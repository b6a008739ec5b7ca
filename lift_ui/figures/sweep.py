"""Plotly figures of a sweep's four views: frontier, forgetting at matched target accuracy,
budget curve and LR curve.

Plain functions, a view's DataFrame (:mod:`lift_core.sweeps.views`) in and a Figure out (no
Streamlit). Accuracies come as fractions and are shown in % on fixed 0-100 axes, so a small
difference is not blown up into a large one; forgetting is in points (source accuracy lost).
Colour follows the method (the registry's colour, as on every other chart), one legend entry
per method.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lift_core.train.registry import method_color, method_label
from lift_ui.figures.explorer import _layout, log_ticks

_ACC_RANGE = [-2, 102]  # 0-100 %, with room for the markers at the edges
_DASHES = ("solid", "dash", "dot", "dashdot", "longdash")


def _errors(values) -> dict | None:
    """Plotly error bars (in %) from a std column; None when there is no spread to show."""
    values = pd.to_numeric(pd.Series(values), errors="coerce")
    if values.isna().all():
        return None
    return dict(type="data", array=100 * values.fillna(0).to_numpy(), visible=True, thickness=1.2)


def _empty(fig: go.Figure, text: str) -> None:
    fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                       font=dict(size=13, color="#888888"))


def _budget_text(budget) -> str:
    return "" if budget is None or pd.isna(budget) else f", budget {budget:g}"


def _spread(points: pd.DataFrame, averaged: bool) -> dict:
    """Error bars of seed means on both axes (none for single runs)."""
    if not averaged:
        return {}
    return {"error_x": _errors(points["target_acc_std"]), "error_y": _errors(points["source_acc_std"])}


def frontier_figure(table: pd.DataFrame) -> go.Figure:
    """Every run (or seed mean) as a point: x target accuracy, y source accuracy, both after
    training; per method its Pareto front as a line through filled markers, the other points
    hollow.

    Args:
        table: :func:`lift_core.sweeps.views.frontier` output (per run, or with
            ``average_seeds`` the ``*_mean`` / ``*_std`` columns, drawn with error bars).
    """
    averaged = "target_acc_mean" in table
    tx, sx = ("target_acc_mean", "source_acc_mean") if averaged else ("target_acc", "source_acc")
    fig = go.Figure()
    for method, group in table.dropna(subset=[tx, sx]).groupby("method", sort=False):
        color, name = method_color(method), method_label(method)
        hover = [f"{name}, lr {lr:g}{_budget_text(b)}" + ("" if averaged else f", seed {s:g}")
                 for lr, b, s in zip(group["lr"], group["budget"], group.get("seed", group["lr"]))]
        front = group[group["on_front"].astype(bool)].sort_values(tx)
        fig.add_trace(go.Scatter(
            x=100 * front[tx], y=100 * front[sx], mode="lines+markers", name=name, legendgroup=method,
            line=dict(color=color, width=2), marker=dict(size=10, color=color),
            **_spread(front, averaged),
            text=[hover[group.index.get_loc(i)] for i in front.index],
            hovertemplate="%{text}<br>target %{x:.1f}%, source %{y:.1f}% (on the front)<extra></extra>"))
        rest = group[~group["on_front"].astype(bool)]
        fig.add_trace(go.Scatter(
            x=100 * rest[tx], y=100 * rest[sx], mode="markers", name=f"{name} (dominated)",
            legendgroup=method, showlegend=False,
            marker=dict(size=9, color=color, symbol="circle-open", line=dict(width=2)),
            **_spread(rest, averaged),
            text=[hover[group.index.get_loc(i)] for i in rest.index],
            hovertemplate="%{text}<br>target %{x:.1f}%, source %{y:.1f}%<extra></extra>"))
    fig.update_xaxes(title="target accuracy after training (%) → learned more", range=_ACC_RANGE)
    fig.update_yaxes(title="source accuracy after training (%) → kept more", range=_ACC_RANGE)
    if not fig.data:
        _empty(fig, "no completed run yet")
    return _legend_below(_layout(fig, "Frontier: what each run learned vs what it kept", height=480))


def forgetting_at_target_figure(table: pd.DataFrame) -> go.Figure:
    """Grouped bars: per target level, each method's source accuracy when its target accuracy
    first reached the level (mean ± std over the runs that reached it), labelled "n/N reached".

    Args:
        table: :func:`lift_core.sweeps.views.forgetting_at_target` output.
    """
    fig = go.Figure()
    for method, group in table.groupby("method", sort=False):
        levels = [f"target {100 * level:g}%" for level in group["level"]]
        labels = [f"{r}/{n} reached" for r, n in zip(group["n_reached"], group["n_total"])]
        source = 100 * group["source_mean"].fillna(0)  # a level no run reached: an empty bar
        fig.add_trace(go.Bar(
            x=levels, y=source, name=method_label(method), marker_color=method_color(method),
            # Vertical, inside each bar from its base: side by side above the bars the counts
            # of five methods overlapped at half-page width.
            error_y=_errors(group["source_std"]), text=labels, textposition="inside",
            insidetextanchor="start", textangle=-90, textfont=dict(size=10),
            customdata=np.stack([100 * group["forgetting_mean"], group["step_mean"]], axis=-1),
            hovertemplate=(f"{method_label(method)}, %{{x}}: source %{{y:.1f}}%"
                           "<br>forgetting %{customdata[0]:.1f} pt, at step ≈ %{customdata[1]:.0f}"
                           "<br>%{text}<extra></extra>")))
    fig.update_layout(barmode="group", uniformtext=dict(minsize=9, mode="show"))
    fig.update_xaxes(title="the level target accuracy first reached")
    fig.update_yaxes(title="source accuracy at that moment (%) → kept more", range=[0, 110],
                     tickvals=list(range(0, 101, 20)))
    if not fig.data:
        _empty(fig, "no completed run yet")
    return _legend_below(_layout(fig, "Forgetting at matched target accuracy", height=480))


def _curves(fig: go.Figure, table: pd.DataFrame, x: str, panels, group_by=("method",)) -> None:
    """One line per method (dash per budget when several) in each (column, row, col, scale)."""
    dashes: dict[str, int] = {}
    for keys, group in table.groupby(list(group_by), sort=False, dropna=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        method, budget = keys[0], keys[1] if len(keys) > 1 else None
        dash = _DASHES[dashes.setdefault(method, 0) % len(_DASHES)]
        dashes[method] += 1
        group = group.sort_values(x)
        name = method_label(method) + _budget_text(budget)
        for n, (column, row, col) in enumerate(panels):
            fig.add_trace(go.Scatter(
                x=group[x] * (100 if x == "trainable_fraction" else 1), y=100 * group[f"{column}_mean"],
                error_y=_errors(group[f"{column}_std"]), mode="lines+markers", name=name,
                legendgroup=name, showlegend=n == 0, line=dict(color=method_color(method), dash=dash, width=2),
                marker=dict(size=8), text=[f"{k:g} seed(s)" for k in group["n_seeds"]],
                hovertemplate=f"{name}: %{{x:g}} → %{{y:.1f}} (%{{text}})<extra></extra>"), row=row, col=col)


def _legend_below(fig: go.Figure) -> go.Figure:
    """The legend under the x axis: above the plot, at half-page width, it ran into the title."""
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0),
                      margin=dict(b=110))
    return fig


def _two_panel_layout(fig: go.Figure, title: str) -> go.Figure:
    # The legend right of the panels: above them it would cover the subplot titles.
    fig = _layout(fig, title, height=400)
    fig.update_layout(margin=dict(t=80), legend=dict(orientation="v", yanchor="top", y=1.0,
                                                     xanchor="left", x=1.02))
    return fig


def _log_x(fig: go.Figure, values, unit: str = "") -> None:
    values = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    values = values[values > 0]
    if len(values):
        lo, hi = values.min() / 1.5, values.max() * 1.5
        fig.update_xaxes(type="log", range=[np.log10(lo), np.log10(hi)], **log_ticks(lo, hi, unit))
    else:
        fig.update_xaxes(type="log")


def budget_figure(table: pd.DataFrame) -> go.Figure:
    """Target accuracy and forgetting vs trainable fraction (log x), per method, mean ± std
    over seeds (:func:`lift_core.sweeps.views.budget_curve`)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("target accuracy (learned)", "forgetting (source lost)"))
    table = table.dropna(subset=["trainable_fraction"])
    _curves(fig, table, "trainable_fraction", (("target_acc", 1, 1), ("forgetting", 1, 2)))
    _log_x(fig, 100 * table["trainable_fraction"], "%")
    fig.update_xaxes(title="trainable share of block-linear entries (%, log)")
    fig.update_yaxes(title="target accuracy (%)", range=_ACC_RANGE, row=1, col=1)
    fig.update_yaxes(title="forgetting (points) → worse", zeroline=True, zerolinecolor="#bbbbbb",
                     range=[-10, 100], row=1, col=2)
    if table.empty:
        _empty(fig, "no completed run yet")
    return _two_panel_layout(fig, "Budget curve")


def lr_figure(table: pd.DataFrame) -> go.Figure:
    """Final target and source accuracy vs learning rate (log x), per method (and budget when
    the sweep has several), mean ± std over seeds (:func:`lift_core.sweeps.views.lr_curve`)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("target accuracy (learned)", "source accuracy (kept)"))
    several = table["budget"].nunique() > 1
    _curves(fig, table, "lr", (("target_acc", 1, 1), ("source_acc", 1, 2)),
            group_by=("method", "budget") if several else ("method",))
    _log_x(fig, table["lr"])
    fig.update_xaxes(title="learning rate (log)")
    fig.update_yaxes(title="accuracy after training (%)", range=_ACC_RANGE)
    if table.empty:
        _empty(fig, "no completed run yet")
    return _two_panel_layout(fig, "Learning-rate curve")
