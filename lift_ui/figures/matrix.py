"""Heatmaps of a weight matrix, its rank-r approximation and the masks, plus row/column counts.

Builders take an already pooled or zoomed array and say where it sits in the full matrix
(``row0``, ``col0`` and the pooling ``factor``), so hover labels show original indices.
Rows are output units, columns input features, row 0 at the top like a printed matrix.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lift_ui.figures.explorer import COLORS, MASK_LABELS, _layout
from lift_ui.pooling import difference_counts, majority_codes

# Difference codes of lift_core.analysis.overlap.mask_difference(lift, magnitude).
DIFFERENCE_LABELS = ("neither", "only LIFT", "only magnitude", "both")
DIFFERENCE_COLORS = ("#f2f2f2", COLORS["lift"], COLORS["magnitude"], "#262626")
# Pooled blocks are drawn by their most common kind (lift_ui.pooling.majority_codes).
POOLED_LABELS = ("no selected entry", "mostly only LIFT", "mostly only magnitude", "mostly both",
                 "tie: only LIFT = only magnitude")
POOLED_COLORS = DIFFERENCE_COLORS + ("#a9a9a9",)
_PLOT_SIDE = 430  # px a matrix gets across in half of a 1,400 px page, colour bar aside


def _placed_heatmap(z, factor: int, row0: int, col0: int, **kwargs) -> go.Heatmap:
    return go.Heatmap(z=z, x0=col0, dx=factor, y0=row0, dy=factor, **kwargs)


def _matrix_axes(fig: go.Figure, factor: int) -> go.Figure:
    """Row 0 on top and square cells, so a 1536x384 matrix is drawn four times taller than wide."""
    block = f" · cells are blocks of {factor}x{factor} entries" if factor > 1 else ""
    fig.update_xaxes(title=f"column = input feature{block}", showgrid=False, constrain="domain")
    fig.update_yaxes(title="row = output unit", autorange="reversed", showgrid=False,
                     scaleanchor="x", scaleratio=1, constrain="domain")
    return fig


def _matrix_height(z: np.ndarray) -> int:
    """Figure height that gives the matrix its aspect ratio within sensible bounds."""
    rows, cols = np.shape(z)[-2:]
    plot = min(max(_PLOT_SIDE * rows / max(cols, 1), 220), 640)
    return int(plot + 110)  # title and axis title


def _hover_place(factor: int) -> str:
    return "block at row %{y}, col %{x}" if factor > 1 else "row %{y}, col %{x}"


def magnitude_heatmap(
    z: np.ndarray, title: str, *, factor: int = 1, row0: int = 0, col0: int = 0,
    zmax: float | None = None,
) -> go.Figure:
    """Heatmap of |W| or |W_r| (already max-pooled by ``factor`` when factor > 1).

    Args:
        zmax: top of the colour scale; pass the same value to panels meant to be compared.
    """
    z = np.asarray(z, dtype=float)
    top = float(z.max(initial=0)) if zmax is None else float(zmax)
    hover = _hover_place(factor) + ": %{z:.3g}<extra></extra>"
    fig = go.Figure(_placed_heatmap(z, factor, row0, col0, colorscale="Viridis", zmin=0, zmax=max(top, 1e-9),
                                    colorbar=dict(title="|value|"), hovertemplate=hover))
    return _layout(_matrix_axes(fig, factor), title, height=_matrix_height(z))


def mask_heatmap(
    z: np.ndarray, title: str, *, factor: int = 1, row0: int = 0, col0: int = 0,
    color: str = COLORS["lift"], zmax: float | None = None,
) -> go.Figure:
    """Heatmap of one mask: 0/1 at full resolution, the selected fraction per block when pooled.

    Args:
        zmax: top of the colour scale when pooled (default: this mask's largest fraction);
            pass the same value to the LIFT and magnitude panels so equal shades mean equal shares.
    """
    z = np.asarray(z, dtype=float)
    label = "selected" if factor == 1 else "fraction selected"
    top = 1.0 if factor == 1 else float(z.max(initial=0) if zmax is None else zmax)
    hover = _hover_place(factor) + ": %{z:.2f}<extra></extra>"
    fig = go.Figure(_placed_heatmap(z, factor, row0, col0, colorscale=[[0, "#ffffff"], [1, color]],
                                    zmin=0, zmax=max(top, 1e-9), showscale=factor > 1,
                                    colorbar=dict(title=label), hovertemplate=hover))
    return _layout(_matrix_axes(fig, factor), title, height=_matrix_height(z))


def difference_heatmap(
    data: np.ndarray, title: str, *, factor: int = 1, row0: int = 0, col0: int = 0
) -> go.Figure:
    """Categorical map of where LIFT and magnitude differ.

    Args:
        data: difference codes (m, n) at full resolution (0 neither, 1 only LIFT, 2 only
            magnitude, 3 both), or per-block counts (3, rows, cols) from
            :func:`lift_ui.pooling.difference_counts`; blocks are coloured by their most
            common kind and the hover shows the counts.
    """
    data = np.asarray(data)
    counts = data if data.ndim == 3 else difference_counts(data, 1)
    codes = majority_codes(counts)
    pooled = factor > 1
    labels, colors = (POOLED_LABELS, POOLED_COLORS) if pooled else (DIFFERENCE_LABELS, DIFFERENCE_COLORS)
    scale = []
    for i, color in enumerate(colors):
        scale += [[i / len(colors), color], [(i + 1) / len(colors), color]]
    names = np.asarray(labels, dtype=object)[codes]
    if pooled:
        custom = np.stack([names, *counts.astype(object)], axis=-1)
        hover = (_hover_place(factor) + ": %{customdata[0]}<br>only LIFT %{customdata[1]}, "
                 "only magnitude %{customdata[2]}, both %{customdata[3]}<extra></extra>")
    else:
        custom, hover = names, _hover_place(factor) + ": %{customdata}<extra></extra>"
    fig = go.Figure(_placed_heatmap(
        codes, factor, row0, col0, zmin=-0.5, zmax=len(colors) - 0.5, colorscale=scale,
        customdata=custom, hovertemplate=hover,
        colorbar=dict(tickvals=list(range(len(labels))), ticktext=list(labels), title=""),
    ))
    return _layout(_matrix_axes(fig, factor), title, height=_matrix_height(codes))


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
                name=MASK_LABELS[name], legendgroup=name,
                showlegend=col == 1, line=dict(color=COLORS[name], width=1),
            ), row=1, col=col)
    fig.update_xaxes(title_text="row index", row=1, col=1)
    fig.update_xaxes(title_text="column index", row=1, col=2)
    fig.update_yaxes(title_text="selected entries", row=1, col=1, rangemode="tozero")
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    fig = _layout(fig, "Where the selected entries sit", height=400)
    fig.update_layout(margin=dict(t=90), legend=dict(x=0.5, xanchor="center", y=1.16, yanchor="bottom"))
    return fig
