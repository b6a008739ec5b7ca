"""Plotly figure builders for what fine-tuning changed (ΔW): data in, Figure out.

The input is :func:`lift_core.analysis.delta.pairs_delta_table`'s long table (a row per
run and layer, with ``run`` and ``method`` columns) or its per-layer ΔW spectra. Colours
follow the method, as on the training charts; several runs of one method get different
dashes. Layers run along the x axis in model order, labelled ``<block>.<role>``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from lift_core.train.registry import method_color, method_label
from lift_ui.figures.explorer import _layout, log_ticks
from lift_ui.figures.training import _side_legend, _styles

_REFERENCE = dict(color="#555555", dash="dash", width=1)

# The measures the per-layer chart can show: column -> (title, y axis title, log y).
PER_LAYER_MEASURES = {
    "rel_delta_fro": ("How much each layer changed", "‖ΔW‖_F / ‖W‖_F", True),
    "max_abs_delta": ("Largest single change", "max |ΔW|", True),
    "delta_effective_rank": ("Effective rank of ΔW", "effective rank", True),
    "delta_stable_rank": ("Stable rank of ΔW", "stable rank", True),
    "left_angle_max_deg": ("Rotation of the top-r output subspace", "largest principal angle (°)", False),
    "right_angle_max_deg": ("Rotation of the top-r input subspace", "largest principal angle (°)", False),
    "spectral_norm_change": ("Change of the spectral norm", "(σ₁(W+ΔW) − σ₁(W)) / σ₁(W)", False),
    "energy_on_lift_mask": ("ΔW's energy on LIFT's principal weights", "share of ‖ΔW‖²", False),
}


def _legend_below(fig: go.Figure) -> None:
    # Half-width charts: a legend beside the plot would take half of it; below it takes none.
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0.0),
                      margin=dict(b=40))


def _block_ticks(labels: list[str]) -> dict:
    """Ticks at the first layer of each block ("block 0", ...): every layer's label does not fit."""
    starts = [(i, label.split(".")[0]) for i, label in enumerate(labels)
              if i == 0 or label.split(".")[0] != labels[i - 1].split(".")[0]]
    if len(starts) < 2:  # no blocks to speak of: label every layer
        return dict(tickmode="array", tickvals=list(range(len(labels))), ticktext=labels, tickangle=-60)
    return dict(tickmode="array", tickvals=[i for i, _ in starts], ticktext=[f"block {b}" for _, b in starts])


def layer_labels(table: pd.DataFrame) -> list[str]:
    """``<block>.<role>`` for each distinct layer, in the table's order."""
    layers = table.drop_duplicates("layer")
    return [f"{b}.{r}" if pd.notna(b) else str(n).rsplit(".", 1)[-1]
            for n, b, r in zip(layers["layer"], layers["block"], layers["role"])]


def _runs(table: pd.DataFrame) -> pd.DataFrame:
    if "run" not in table:
        table = table.assign(run="tuned", method="")
    return table.assign(label=table["run"])


def _legend_name(label: str, method: str) -> str:
    return f"{method_label(method)} · {label}" if method else label


def per_layer_figure(table: pd.DataFrame, column: str, *, lora_rank: int | None = None) -> go.Figure:
    """One line per run of ``column`` over the layers (a key of ``PER_LAYER_MEASURES``).

    Args:
        lora_rank: draw it as a dashed line (for the rank measures).
    """
    title, y_title, log_y = PER_LAYER_MEASURES.get(column, (column, column, False))
    table = _runs(table)
    styles = _styles(table)
    labels = layer_labels(table)
    position = {name: i for i, name in enumerate(table.drop_duplicates("layer")["layer"])}
    fig = go.Figure()
    for (label, method), run in table.groupby(["label", "method"], sort=False):
        fig.add_trace(go.Scatter(
            x=[position[n] for n in run["layer"]], y=run[column], mode="lines+markers",
            name=_legend_name(label, method), line=dict(width=2, **styles[label]), marker=dict(size=5),
            hovertemplate=f"{label}<br>%{{text}}<br>{y_title}: %{{y:.4g}}<extra></extra>",
            text=[labels[position[n]] for n in run["layer"]]))
    if lora_rank:  # a trace, not add_hline: shapes on a log axis take log10 coordinates
        fig.add_trace(go.Scatter(x=[-0.5, len(labels) - 0.5], y=[lora_rank] * 2, mode="lines",
                                 name=f"LoRA rank {lora_rank}", line=_REFERENCE, hoverinfo="skip"))
    fig.update_xaxes(title="layer, in model order (hover for block.role)", **_block_ticks(labels))
    fig.update_yaxes(title=y_title, type="log" if log_y else "linear")
    values = table[column].to_numpy(dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    if log_y and len(values):
        fig.update_yaxes(**log_ticks(min(values.min(), lora_rank or np.inf), max(values.max(), lora_rank or 0)))
    _layout(fig, title, height=440)
    _legend_below(fig)
    return fig


def mask_energy_figure(table: pd.DataFrame) -> go.Figure:
    """Per run, the median share of ΔW's energy on the LIFT and on the magnitude mask.

    The mask's share of the entries is drawn as the level a ΔW spread evenly would reach.
    """
    table = _runs(table)
    summary = table.groupby(["label", "method"], sort=False)[
        ["energy_on_lift_mask", "energy_on_magnitude_mask", "mask_share"]].median().reset_index()
    names = [_legend_name(l, m) for l, m in zip(summary["label"], summary["method"])]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=names, y=summary["energy_on_lift_mask"], name="on LIFT's principal weights",
                         marker_color=method_color("lift"),
                         hovertemplate="%{x}<br>LIFT mask: %{y:.1%}<extra></extra>"))
    fig.add_trace(go.Bar(x=names, y=summary["energy_on_magnitude_mask"], name="on the magnitude mask",
                         marker_color=method_color("magnitude"),
                         hovertemplate="%{x}<br>magnitude mask: %{y:.1%}<extra></extra>"))
    if len(summary):  # in the legend: a label on the line would sit on the bars
        share = float(summary["mask_share"].median())
        fig.add_trace(go.Scatter(x=names, y=[share] * len(names), mode="lines", hoverinfo="skip",
                                 name=f"the masks' share of the entries ({share:.1%})",
                                 line=dict(color="#555555", dash="dot", width=1)))
    fig.update_layout(barmode="group")
    fig.update_yaxes(title="share of ‖ΔW‖_F² (median over layers)", tickformat=".0%", range=[0, 1.05])
    return _layout(fig, "Where ΔW's energy sits", height=400)


def delta_spectrum_figure(spectra: dict[str, np.ndarray], methods: dict[str, str],
                          *, lora_rank: int | None = None, layer: str = "") -> go.Figure:
    """Normalised singular values σᵢ/σ₁ of one layer's ΔW, one line per run (log-log).

    Args:
        spectra: run label -> ΔW's singular values (descending).
        methods: run label -> method (for the colour).
    """
    frame = pd.DataFrame({"label": list(spectra), "method": [methods.get(l, "") for l in spectra]})
    styles = _styles(frame) if len(frame) else {}
    fig = go.Figure()
    for label, s in spectra.items():
        s = np.asarray(s, dtype=float)
        if not len(s) or s[0] <= 0:
            continue
        keep = s > s[0] * 1e-6  # an exactly low-rank ΔW has round-off below this
        fig.add_trace(go.Scatter(x=np.arange(1, len(s) + 1)[keep], y=(s / s[0])[keep], mode="lines",
                                 name=_legend_name(label, methods.get(label, "")),
                                 line=dict(width=2, **styles[label])))
    if lora_rank and fig.data:  # a trace, not add_vline: shapes on a log axis take log10 coordinates
        low = min(float(np.min(t.y)) for t in fig.data)
        fig.add_trace(go.Scatter(x=[lora_rank] * 2, y=[low, 1.0], mode="lines", hoverinfo="skip",
                                 name=f"LoRA rank {lora_rank}", line=_REFERENCE))
    fig.update_xaxes(title="index i", type="log")
    fig.update_yaxes(title="σᵢ(ΔW) / σ₁(ΔW)", type="log")
    if fig.data:
        longest = max(len(t.x) for t in fig.data)
        fig.update_xaxes(**log_ticks(1, max(longest, lora_rank or 1)))
        fig.update_yaxes(**log_ticks(min(float(np.min(t.y)) for t in fig.data), 1.0))
    _layout(fig, f"Singular spectrum of ΔW{' · ' + layer if layer else ''}", height=400)
    _side_legend(fig)
    return fig
