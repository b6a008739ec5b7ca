"""Principal weights: which entries LIFT picks, next to |W| and the magnitude mask."""

import streamlit as st

from lift_core.overlap import mask_difference, row_col_counts
from lift_ui import state
from lift_ui.figures_matrix import difference_heatmap, magnitude_heatmap, mask_heatmap, row_col_figure
from lift_ui.pooling import ZOOM_SIDE, MatrixView

st.title("Principal weights")
sel = state.explorer_sidebar()
if sel is None:
    st.info("Pick a model in the sidebar.")
    st.stop()

m, n = sel.layer.shape
st.caption(f"{sel.layer.label} · `{sel.layer.name}` · {sel.budget_text} · filter rank r = {sel.filter_rank}")
w_abs = state.weight_abs(sel.model_name, sel.layer.name)
wr_abs = state.low_rank_abs(sel.model_name, sel.layer.name, sel.filter_rank, sel.svd)
masks = state.layer_masks(sel.model_name, sel.layer.name, sel.k, sel.filter_rank, sel.svd)
lift, mag = state.torch_mask(masks["lift"]), state.torch_mask(masks["magnitude"])
codes = mask_difference(lift, mag).numpy()

view = MatrixView.whole((m, n))
if st.toggle(f"Zoom: one {ZOOM_SIDE}x{ZOOM_SIDE} window at full resolution", key="pw_zoom"):
    c1, c2 = st.columns(2)
    row0 = c1.slider("First row", 0, m - ZOOM_SIDE, key="pw_row") if m > ZOOM_SIDE else 0
    col0 = c2.slider("First column", 0, n - ZOOM_SIDE, key="pw_col") if n > ZOOM_SIDE else 0
    view = MatrixView.window((m, n), row0, col0)

left, right = st.columns(2)
left.plotly_chart(magnitude_heatmap(view.magnitudes(w_abs), "|W|", **view.placement))
right.plotly_chart(magnitude_heatmap(view.magnitudes(wr_abs), f"|W_r|, r = {sel.filter_rank}", **view.placement))
left.plotly_chart(mask_heatmap(view.mask(masks["lift"]), "LIFT mask: largest |W_r|", **view.placement))
right.plotly_chart(mask_heatmap(view.mask(masks["magnitude"]), "magnitude mask: largest |W|",
                                color="#5e3c99", **view.placement))
pooled = view.factor > 1
st.caption(
    f"Showing {view.describe()}. Rows are output units, columns input features. "
    + ("Magnitude maps show each block's largest entry; mask maps show the fraction of each "
       "block that is selected." if pooled else "")
)

left, right = st.columns([3, 2])
left.plotly_chart(difference_heatmap(view.codes(codes), "Where LIFT and magnitude differ", **view.placement))
both = int((codes == 3).sum())
right.metric("Selected by both", f"{both:,} of {sel.k:,}", help="Entries in both masks (each mask has k entries).")
right.metric("Jaccard LIFT vs magnitude", f"{both / (2 * sel.k - both):.3f}", help="|A∩B| / |A∪B|")
right.metric("Only LIFT (and as many only magnitude)", f"{int((codes == 1).sum()):,}",
             help="Both masks hold exactly k entries, so the two 'only' counts are equal.")
if pooled:
    right.caption(
        f"Pooled ({view.factor}x{view.factor}): a block is 'LIFT' if any entry in it is "
        "LIFT-selected and 'magnitude' if any is magnitude-selected, so 'both' means the block "
        "holds some of each, not necessarily the same entries. Zoom in to see single entries."
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
