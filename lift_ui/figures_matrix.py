"""Heatmaps of a weight matrix, its rank-r approximation and the masks, plus row/column counts.

Builders take an already pooled or zoomed array and say where it sits in the full matrix
(``row0``, ``col0`` and the pooling ``factor``), so hover labels show original indices.
Rows are output units, columns input features, row 0 at the top like a printed matrix.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lift_ui.figures import COLORS, _layout

# Difference codes of lift_core.overlap.mask_difference(lift, magnitude).
DIFFERENCE_LABELS = ("neither", "only LIFT", "only magnitude", "both")
DIFFERENCE_COLORS = ("#f2f2f2", COLORS["lift"], COLORS["magnitude"], "#262626")


def _placed_heatmap(z, factor: int, row0: int, col0: int, **kwargs) -> go.Heatmap:
    return go.Heatmap(z=z, x0=col0, dx=factor, y0=row0, dy=factor, **kwargs)


def _matrix_axes(fig: go.Figure, factor: int) -> go.Figure:
    block = f" (blocks of {factor}x{factor})" if factor > 1 else ""
    fig.update_xaxes(title=f"input feature (column){block}", showgrid=False)
    fig.update_yaxes(title="output unit (row)", autorange="reversed", showgrid=False,
                     scaleanchor=None)
    return fig


def magnitude_heatmap(
    z: np.ndarray, title: str, *, factor: int = 1, row0: int = 0, col0: int = 0
) -> go.Figure:
    """Heatmap of |W| or |W_r| (already max-pooled by ``factor`` when factor > 1)."""
    hover = "row %{y}, col %{x}: %{z:.3g}<extra></extra>"
    fig = go.Figure(_placed_heatmap(np.asarray(z, dtype=float), factor, row0, col0,
                                    colorscale="Viridis", colorbar=dict(title="|value|"),
                                    hovertemplate=hover))
    return _layout(_matrix_axes(fig, factor), title, height=420)


def mask_heatmap(
    z: np.ndarray, title: str, *, factor: int = 1, row0: int = 0, col0: int = 0, color: str = COLORS["lift"]
) -> go.Figure:
    """Heatmap of one mask: 0/1 at full resolution, the selected fraction per block when pooled."""
    z = np.asarray(z, dtype=float)
    label = "selected" if factor == 1 else "fraction selected"
    hover = "row %{y}, col %{x}: %{z:.2f}<extra></extra>"
    fig = go.Figure(_placed_heatmap(z, factor, row0, col0, colorscale=[[0, "#ffffff"], [1, color]],
                                    zmin=0, zmax=1 if factor == 1 else max(float(z.max(initial=0)), 1e-9),
                                    showscale=factor > 1, colorbar=dict(title=label), hovertemplate=hover))
    return _layout(_matrix_axes(fig, factor), title, height=420)


def difference_heatmap(
    codes: np.ndarray, title: str, *, factor: int = 1, row0: int = 0, col0: int = 0
) -> go.Figure:
    """4-colour categorical map: 0 neither, 1 only LIFT, 2 only magnitude, 3 both."""
    codes = np.asarray(codes, dtype=int)
    scale = []
    for i, color in enumerate(DIFFERENCE_COLORS):
        scale += [[i / 4, color], [(i + 1) / 4, color]]
    names = np.asarray(DIFFERENCE_LABELS, dtype=object)[codes]
    fig = go.Figure(_placed_heatmap(
        codes, factor, row0, col0, zmin=-0.5, zmax=3.5, colorscale=scale, customdata=names,
        hovertemplate="row %{y}, col %{x}: %{customdata}<extra></extra>",
        colorbar=dict(tickvals=[0, 1, 2, 3], ticktext=list(DIFFERENCE_LABELS), title=""),
    ))
    return _layout(_matrix_axes(fig, factor), title, height=460)


def row_col_figure(
    lift_rows: np.ndarray, mag_rows: np.ndarray, lift_cols: np.ndarray, mag_cols: np.ndarray
) -> go.Figure:
    """Selected entries per row and per column, LIFT against magnitude (two panels)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "selected entries per row (output unit)", "selected entries per column (input feature)"))
    for col, (lift, mag) in enumerate(((lift_rows, mag_rows), (lift_cols, mag_cols)), start=1):
        for name, counts in (("lift", lift), ("magnitude", mag)):
            counts = np.asarray(counts)
            fig.add_trace(go.Scatter(
                x=np.arange(len(counts)), y=counts, mode="lines", line_shape="hv",
                name="LIFT" if name == "lift" else "magnitude", legendgroup=name,
                showlegend=col == 1, line=dict(color=COLORS[name], width=1),
            ), row=1, col=col)
    fig.update_xaxes(title_text="row index", row=1, col=1)
    fig.update_xaxes(title_text="column index", row=1, col=2)
    fig.update_yaxes(title_text="selected entries", row=1, col=1, rangemode="tozero")
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    fig = _layout(fig, "Where the selected entries sit", height=400)
    fig.update_layout(margin=dict(t=90), legend=dict(x=0.5, xanchor="center", y=1.16, yanchor="bottom"))
    return fig
