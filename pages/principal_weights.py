"""Principal weights: which entries LIFT picks, next to |W| and the magnitude mask."""

import streamlit as st

from lift_ui.navigation import heavy_imports, require_app_navigation


def _overlap_metrics(box, codes, where: str) -> None:
    """Jaccard and entry counts of a difference-code array (the whole matrix or a window)."""
    both, only_lift, only_mag = (int((codes == code).sum()) for code in (BOTH, ONLY_LIFT, ONLY_MAGNITUDE))
    union = both + only_lift + only_mag
    box.metric(f"Jaccard LIFT vs magnitude, {where}", f"{both / union:.3f}" if union else "–",
               help="|A∩B| / |A∪B| of the selected entries")
    box.metric(f"Selected by both, {where}", f"{both:,} of {union:,}",
               help="Entries in both masks, of those in either.")
    box.metric(f"Only LIFT / only magnitude, {where}", f"{only_lift:,} / {only_mag:,}",
               help="Over the whole matrix both masks hold k entries, so the two counts are equal.")


require_app_navigation()
st.title("Principal weights")
# The rest loads torch: on a fresh server the title above paints first (issue 14).
with heavy_imports():
    from lift_core.analysis.overlap import mask_difference, row_col_counts
    from lift_ui import caches, sidebar
    from lift_ui.figures.explorer import COLORS
    from lift_ui.figures.matrix import difference_heatmap, magnitude_heatmap, mask_heatmap, row_col_figure
    from lift_ui.pooling import BOTH, ONLY_LIFT, ONLY_MAGNITUDE, TIED, ZOOM_SIDE, MatrixView, category_shares
sel = sidebar.explorer_sidebar()
if sel is None:
    st.info("Pick a model in the sidebar.")
    st.stop()

m, n = sel.layer.shape
st.caption(f"{sel.layer.label} · `{sel.layer.name}` · {sel.budget_text} · filter rank r = {sel.filter_rank}")
w_abs = caches.weight_abs(sel.model_name, sel.layer.name)
wr_abs = caches.low_rank_abs(sel.model_name, sel.layer.name, sel.filter_rank, sel.svd)
masks = caches.layer_masks(sel.model_name, sel.layer.name, sel.k, sel.filter_rank, sel.svd)
lift, mag = caches.torch_mask(masks["lift"]), caches.torch_mask(masks["magnitude"])
codes = mask_difference(lift, mag).numpy()

view = MatrixView.whole((m, n))
if st.toggle(f"Zoom: one {ZOOM_SIDE}x{ZOOM_SIDE} window at full resolution", key="pw_zoom"):
    c1, c2 = st.columns(2)
    row0 = c1.slider("First row", 0, m - ZOOM_SIDE, key="pw_row") if m > ZOOM_SIDE else 0
    col0 = c2.slider("First column", 0, n - ZOOM_SIDE, key="pw_col") if n > ZOOM_SIDE else 0
    view = MatrixView.window((m, n), row0, col0)

# Panels side by side share one colour scale, so equal shades mean equal values.
w_view, wr_view = view.magnitudes(w_abs), view.magnitudes(wr_abs)
top = float(max(w_view.max(initial=0), wr_view.max(initial=0)))
lift_view, mag_view = view.mask(masks["lift"]), view.mask(masks["magnitude"])
share_top = float(max(lift_view.max(initial=0), mag_view.max(initial=0)))
left, right = st.columns(2)
left.plotly_chart(magnitude_heatmap(w_view, "|W|", zmax=top, **view.placement))
right.plotly_chart(magnitude_heatmap(wr_view, f"|W_r|, r = {sel.filter_rank}", zmax=top, **view.placement))
left.plotly_chart(mask_heatmap(lift_view, "LIFT mask: largest |W_r|", zmax=share_top, **view.placement))
right.plotly_chart(mask_heatmap(mag_view, "magnitude mask: largest |W|", color=COLORS["magnitude"],
                                zmax=share_top, **view.placement))
pooled = view.factor > 1
st.caption(
    f"Showing {view.describe()}. Rows are output units, columns input features. "
    + ("Magnitude maps show each block's largest entry; mask maps show the fraction of each "
       "block that is selected. " if pooled else "")
    + "The two panels of each row share one colour scale."
)

left, right = st.columns([3, 2])
counts = view.difference(codes)
left.plotly_chart(difference_heatmap(counts, "Where LIFT and magnitude differ", **view.placement))
_overlap_metrics(right, codes, "whole matrix")
if view.side is not None:  # the metrics of what is on screen, under those of the whole matrix
    _overlap_metrics(right, view.window_of(codes), "this window")
if pooled:
    shares = category_shares(counts)
    right.caption(
        f"Pooled ({view.factor}x{view.factor}): each block is coloured by its most common kind of "
        "selected entry (hover for the counts). Of the blocks holding any: "
        f"{shares[ONLY_LIFT]:.0%} mostly only LIFT, {shares[ONLY_MAGNITUDE]:.0%} mostly only magnitude, "
        f"{shares[BOTH]:.0%} mostly both, {shares[TIED]:.0%} tied. Zoom in to see single entries."
    )
right.caption(
    "The paper reports that LIFT's mask overlaps the plain magnitude mask only partly "
    "(~20% for Q/K, ~5% for up/down projections), and the overlap grows with the filter rank."
)

lift_rows, lift_cols = row_col_counts(lift)
mag_rows, mag_cols = row_col_counts(mag)
st.plotly_chart(row_col_figure(lift_rows.numpy(), mag_rows.numpy(), lift_cols.numpy(), mag_cols.numpy()))
st.caption(
    "Selected entries in each row and each column. |W_r| is built from a few singular "
    "directions, so LIFT's choices pile up in the rows and columns those directions weight "
    "heavily; magnitude follows wherever single large entries happen to be."
)
