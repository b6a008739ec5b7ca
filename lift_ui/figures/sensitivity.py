"""Plotly figure of the noise-sensitivity test: a metric against the noise scale.

One line per selector (LIFT, magnitude, random, LIFT-smallest) in the method colours, the
mean over draws with ± one std as error bars, the clean model as a dashed line. Data in
(lift_core.analysis.sensitivity.summarize's DataFrame), Figure out; no Streamlit, no torch.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from lift_core.train.registry import method_color, method_label
from lift_ui.figures.explorer import _layout


def sensitivity_figure(summary: pd.DataFrame, metric: str, label: str, *,
                       clean: float | None = None, draws: int | None = None) -> go.Figure:
    """``metric`` (mean ± std over draws) against the noise scale, log x, one line per selector.

    Args:
        summary: one row per (selector, scale) with ``<metric>_mean`` and ``<metric>_std``.
        metric: the metric's column stem, e.g. "source_loss".
        label: the y axis title.
        clean: the unperturbed model's value, drawn as a dashed line.
        draws: noise draws per point, for the hover text.

    Scale 0 has no place on a log axis: its rows are left out (they equal the clean value).
    """
    shown = summary[summary["scale"] > 0]
    fig = go.Figure()
    per_point = f"{draws} draws" if draws else "draws"
    for selector, rows in shown.groupby("selector", sort=False):
        rows = rows.sort_values("scale")
        fig.add_trace(go.Scatter(
            x=rows["scale"], y=rows[f"{metric}_mean"], name=method_label(selector),
            mode="lines+markers", line=dict(color=method_color(selector), width=2),
            error_y=dict(type="data", array=rows[f"{metric}_std"], visible=True, thickness=1.2, width=4),
            customdata=rows[[f"{metric}_std"]].to_numpy(),
            hovertemplate=(f"<b>{method_label(selector)}</b><br>noise %{{x:g}} × std(W)<br>{label}: "
                           f"%{{y:.5g}} ± %{{customdata[0]:.3g}} (mean ± std over {per_point})<extra></extra>"),
        ))
    if clean is not None:
        fig.add_hline(y=clean, line=dict(color="black", dash="dash", width=1),
                      annotation_text=f"no noise: {clean:.4g}", annotation_position="top left")
    scales = sorted(shown["scale"].unique())  # a tick at every measured scale, labelled in full
    fig.update_xaxes(type="log", title="noise scale s (noise std = s × std(W), log)", tickmode="array",
                     tickvals=scales, ticktext=[f"{s:g}σ" for s in scales])
    fig.update_yaxes(title=label)
    _layout(fig, label, height=420)
    # Legend under the axis: the metric labels are long enough to run into a legend on top.
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0.0),
                      margin=dict(b=90))
    return fig
