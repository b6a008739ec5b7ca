"""Plotly figure builders for the explorer pages: plain data in, a Figure out.

Nothing here touches Streamlit or torch: every builder takes numpy arrays or DataFrames,
so the tests can check traces and axes without a browser. Spectrum and overlap charts live
here; the matrix heatmaps are in :mod:`lift_ui.figures.matrix`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from lift_core.train.registry import METHOD_REGISTRY, method_label

# One colour per method (so per mask strategy) from its registry record, used on every page.
COLORS = {
    **{name: method.color for name, method in METHOD_REGISTRY.items()},
    "shuffled": "#7f7f7f",
    "marker": "#d62728",
}
ROLE_COLORS = {
    "q": "#1f77b4", "k": "#aec7e8", "v": "#2ca02c", "o": "#98df8a", "qkv": "#17becf",
    "gate": "#9467bd", "up": "#ff7f0e", "down": "#d62728", "lm_head": "#7f7f7f",
}
# Columns of lift_core.analysis.overlap's sweeps: jaccard_<a>_vs_<b> -> (a pair, colour, dash).
SWEEP_LINES = {
    f"jaccard_{a}_vs_{b}": (f"{method_label(a)} vs {method_label(b)}", color, dash)
    for a, b, color, dash in (
        ("lift", "magnitude", COLORS["magnitude"], "solid"),
        ("lift", "random", COLORS["random"], "dot"),
        ("lift", "lift_smallest", COLORS["lift_smallest"], "dash"),
        ("magnitude", "random", "#bcbd22", "dashdot"),
    )
}
MASK_LABELS = {m.mask: m.label for m in METHOD_REGISTRY.values() if m.mask is not None}


def _layout(fig: go.Figure, title: str, height: int = 380) -> go.Figure:
    fig.update_layout(
        title=dict(text=title, font=dict(size=15)),
        height=height,
        margin=dict(l=60, r=20, t=50, b=50),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
        template="plotly_white",
    )
    return fig


def log_ticks(low: float, high: float, unit: str = "") -> dict:
    """Axis ticks at 1-2-5 steps of each decade within [low, high], labelled in full.

    Plotly's own log ticks label sub-decade steps by their first digit only ("2 … 5 … 9"
    below 1 read as 2 … 9 above it), so the charts place and label every tick themselves.
    """
    low, high = max(float(low), 1e-12), max(float(high), 1e-12)
    values = [m * 10.0**e for e in range(int(np.floor(np.log10(low))), int(np.ceil(np.log10(high))) + 1)
              for m in (1, 2, 5) if low <= m * 10.0**e <= high]
    return dict(tickmode="array", tickvals=values, ticktext=[f"{v:g}{unit}" for v in values])


def spectrum_figure(
    singular_values: np.ndarray, shuffled: np.ndarray, mp_edge: float, filter_rank: int
) -> go.Figure:
    """Singular values vs index on log-log axes, with the shuffled copy and the MP edge.

    The last singular values of a square matrix dive towards 0 and would squeeze the part
    that matters (the top and the bulk) into a sliver, so values below the 10th percentile
    of W's are not drawn (for W and the shuffled copy alike) and the axis title says so.

    Args:
        singular_values: descending singular values of W.
        shuffled: descending singular values of W with its entries randomly permuted.
        mp_edge: Marchenko–Pastur upper edge of a same-shape random matrix.
        filter_rank: r, marked with a vertical line.
    """
    s = np.asarray(singular_values, dtype=float)
    positive = s[s > 0]
    low = float(np.quantile(positive, 0.10)) if len(positive) else 1e-6
    high = float(s.max(initial=1.0))
    fig = go.Figure()
    for values, name, style in ((s, "W", dict(mode="lines+markers", marker=dict(size=3),
                                                 line=dict(color=COLORS["lift"], width=2))),
                                (np.asarray(shuffled, dtype=float), "shuffled copy",
                                 dict(mode="lines", line=dict(color=COLORS["shuffled"], dash="dot")))):
        if len(values):  # the cut tail becomes gaps, so indices stay those of W
            fig.add_trace(go.Scatter(x=np.arange(1, len(values) + 1), y=np.where(values >= low, values, np.nan),
                                     name=name, connectgaps=False, **style))
    # Reference lines are traces (not shapes) so they behave on log axes and in tests.
    fig.add_trace(go.Scatter(x=[1, len(s)], y=[mp_edge, mp_edge], mode="lines",
                             name=f"MP bulk edge ({mp_edge:.3g})",
                             line=dict(color="black", dash="dash", width=1)))
    fig.add_trace(go.Scatter(x=[filter_rank, filter_rank], y=[low, high],
                             mode="lines", name=f"filter rank r = {filter_rank}",
                             line=dict(color=COLORS["marker"], width=1)))
    fig.update_xaxes(type="log", title="index i (log)", **log_ticks(1, len(s)))
    bottom, top = low / 1.3, high * 1.3
    fig.update_yaxes(type="log", title="singular value σ<sub>i</sub> (log; lowest 10% not drawn)",
                     range=[np.log10(bottom), np.log10(top)], **log_ticks(bottom, top))
    return _layout(fig, "Singular values")


def energy_figure(energy: np.ndarray, filter_rank: int) -> go.Figure:
    """Cumulative energy (fraction of ‖W‖²_F kept by rank r) with the filter rank marked."""
    e = np.asarray(energy, dtype=float)
    ranks = np.arange(1, len(e) + 1)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=ranks, y=e, name="energy kept", mode="lines",
                             line=dict(color=COLORS["lift"], width=2)))
    r = min(max(1, filter_rank), len(e))
    fig.add_trace(go.Scatter(x=[r], y=[e[r - 1]], name=f"r = {r}: {e[r - 1]:.0%}",
                             mode="markers+text", text=[f"r={r}: {e[r - 1]:.0%}"],
                             textposition="middle right",
                             marker=dict(color=COLORS["marker"], size=10)))
    fig.update_xaxes(type="log", title="rank r (log)", **log_ticks(1, len(e)))
    fig.update_yaxes(range=[0, 1.02], title="fraction of ‖W‖<sub>F</sub><sup>2</sup> kept", tickformat=".0%")
    return _layout(fig, "Cumulative energy of the rank-r approximation")


# "LIFT vs random" and "magnitude vs random" are both chance level and coincide: the first is
# drawn as a wide pale band with large dots, the second as a thin line with open diamonds on top.
_SWEEP_STYLE = {
    "jaccard_lift_vs_random": dict(width=7, opacity=0.45, symbol="circle", size=11),
    "jaccard_magnitude_vs_random": dict(width=1.5, opacity=1.0, symbol="diamond-open", size=8),
}


def overlap_sweep_figure(
    table: pd.DataFrame, x: str, current: float, x_title: str, title: str, *,
    current_jaccard: float | None = None, tick_unit: str = "",
) -> go.Figure:
    """Jaccard of mask pairs as one knob varies (a column of ``table``), log x axis.

    Args:
        table: rows from lift_core.analysis.overlap.overlap_vs_filter_rank / overlap_vs_budget. Rows
            whose budget covers the whole matrix (``density`` 1) are marked as clipped.
        x: the column that varies ("filter_rank", "lora_rank" or a density column).
        current: the sidebar's current value, marked with a vertical line.
        current_jaccard: LIFT vs magnitude at exactly the current settings, drawn as a point
            on the line (between sweep points the line only interpolates).
        tick_unit: appended to the x tick labels (e.g. "%").
    """
    fig = go.Figure()
    for column, (label, color, dash) in SWEEP_LINES.items():
        if column in table:
            style = _SWEEP_STYLE.get(column, dict(width=2, opacity=1.0, symbol="circle", size=6))
            fig.add_trace(go.Scatter(
                x=table[x], y=table[column], name=label, mode="lines+markers", opacity=style["opacity"],
                line=dict(color=color, dash=dash, width=style["width"]),
                marker=dict(symbol=style["symbol"], size=style["size"], color=color)))
    if "density" in table and (table["density"] >= 1).any():
        clipped = table[table["density"] >= 1]
        fig.add_trace(go.Scatter(
            x=clipped[x], y=[1.0] * len(clipped), mode="markers+text", text=["whole matrix "] + [""] * (len(clipped) - 1),
            textposition="middle left", name="budget clipped: all entries",
            marker=dict(symbol="x", size=12, color="black")))
    fig.add_trace(go.Scatter(x=[current, current], y=[0, 1], mode="lines", name="current",
                             line=dict(color=COLORS["marker"], width=1), showlegend=False))
    if current_jaccard is not None:
        fig.add_trace(go.Scatter(
            x=[current], y=[current_jaccard], mode="markers", name=f"now: LIFT vs magnitude {current_jaccard:.3f}",
            marker=dict(symbol="star", size=14, color=COLORS["marker"], line=dict(color="white", width=1))))
    values = pd.to_numeric(table[x], errors="coerce").dropna()
    low, high = min(values.min(), current), max(values.max(), current)
    fig.update_xaxes(type="log", title=x_title, **log_ticks(low, high, tick_unit))
    fig.update_yaxes(range=[0, 1.05], title="Jaccard |A∩B| / |A∪B|")
    fig = _layout(fig, title, height=500)
    # Below the plot: inside it the legend hid the clipped points at the top right.
    fig.update_layout(legend=dict(orientation="h", x=0, y=-0.2, xanchor="left", yanchor="top",
                                  entrywidth=0.5, entrywidthmode="fraction"),
                      margin=dict(b=40))
    return fig


def pairwise_figure(table: pd.DataFrame) -> go.Figure:
    """Annotated heatmap of the square pairwise-Jaccard table (index = columns = mask names)."""
    labels = [MASK_LABELS.get(c, c) for c in table.columns]
    z = table.to_numpy(dtype=float)
    fig = go.Figure(go.Heatmap(
        z=z, x=labels, y=labels, zmin=0, zmax=1, colorscale="Blues",
        text=np.round(z, 3), texttemplate="%{text}", hovertemplate="%{y} vs %{x}: %{z:.3f}<extra></extra>",
        colorbar=dict(title="Jaccard"),
    ))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, "Pairwise Jaccard at the current settings", height=360)


def model_overlap_figure(table: pd.DataFrame) -> go.Figure:
    """One bar per layer of LIFT-vs-magnitude Jaccard, coloured by role; random as a reference.

    Args:
        table: lift_core.analysis.layers.analyze_model(...).table (needs layer, block, role and
            jaccard_lift_vs_magnitude; jaccard_lift_vs_random is drawn when present).
    """
    labels = _unique([_short_label(b, r) for b, r in zip(table["block"], table["role"])])
    fig = go.Figure()
    for role in dict.fromkeys(table["role"]):
        rows = (table["role"] == role).to_numpy()
        fig.add_trace(go.Bar(
            x=[l for l, keep in zip(labels, rows) if keep],
            y=table.loc[rows, "jaccard_lift_vs_magnitude"], name=role,
            marker_color=ROLE_COLORS.get(role, "#8c564b"),
            customdata=table.loc[rows, "layer"],
            hovertemplate="%{customdata}<br>Jaccard %{y:.3f}<extra></extra>",
        ))
    if "jaccard_lift_vs_random" in table:
        fig.add_trace(go.Scatter(x=labels, y=table["jaccard_lift_vs_random"], mode="markers",
                                 name="LIFT vs random", marker=dict(color="black", symbol="line-ew-open", size=10)))
    fig.update_xaxes(title="layer (block · role)", categoryorder="array", categoryarray=labels,
                     tickangle=-60)
    fig.update_yaxes(title="Jaccard LIFT vs magnitude", rangemode="tozero")
    return _layout(fig, "LIFT vs magnitude overlap, every layer", height=420)


def _short_label(block, role) -> str:
    if block is None or pd.isna(block):  # None, NaN or pandas' NA outside the blocks
        return f"– {role}"
    return f"{int(block)} {role}"


def _unique(labels: list[str]) -> list[str]:
    """Labels made unique (a categorical axis would merge repeats) by numbering repeats."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out
