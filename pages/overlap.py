"""Overlap: how far LIFT's mask is from the magnitude, random and LIFT-smallest masks."""

import streamlit as st

from lift_ui.navigation import heavy_imports, require_app_navigation

require_app_navigation()
st.title("Overlap between masks")
# The rest loads torch: on a fresh server the title above paints first (issue 14).
with heavy_imports():
    from lift_core.errors import LiftError
    from lift_ui import caches, sidebar
    from lift_ui.figures.explorer import model_overlap_figure, overlap_sweep_figure, pairwise_figure
sel = sidebar.explorer_sidebar()
if sel is None:
    st.info("Pick a model in the sidebar.")
    st.stop()

st.caption(f"{sel.layer.label} · `{sel.layer.name}` · {sel.budget_text} · filter rank r = {sel.filter_rank}")
name, layer = sel.model_name, sel.layer.name
masks = caches.layer_masks(name, layer, sel.k, sel.filter_rank, sel.svd)
pairs = caches.pairwise(masks)
now = float(pairs.loc["lift", "magnitude"])
density = sel.k / sel.layer.numel
st.markdown(
    "Jaccard = |A∩B| / |A∪B|: 1 for identical masks; two unrelated masks of density "
    "d = k/(m·n) share only by chance, Jaccard ≈ d/(2−d). "
    "The paper reports LIFT-vs-magnitude overlap of ~20% (up to 40%) for Q/K and ~5% (up to "
    f"20%) for up/down projections, growing with the filter rank. Here, for `{layer}` of "
    f"{name} at these settings, it is **{now:.3f}** (chance: {density / (2 - density):.3f})."
)
left, right = st.columns(2)
by_rank = caches.sweep_filter_rank(name, layer, sel.k, sel.svd)
left.plotly_chart(overlap_sweep_figure(by_rank, "filter_rank", sel.filter_rank, "filter rank r (log)",
                                       f"vs filter rank, at k = {sel.k:,}", current_jaccard=now))
left.caption("At full rank W_r = W, so LIFT and magnitude coincide (Jaccard 1). At small r "
             "they share little: principal weights are not the largest weights.")
by_budget = caches.sweep_budget(name, layer, sel.filter_rank, sel.svd)
if sel.density is None:
    budget_chart = overlap_sweep_figure(by_budget, "lora_rank", sel.lora_rank, "budget as LoRA rank (log)",
                                        f"vs budget, at r = {sel.filter_rank}", current_jaccard=now)
else:  # the budget in use is a density: the same sweep on a density axis, marked there
    budget_chart = overlap_sweep_figure(by_budget.assign(density_pct=100 * by_budget["density"]), "density_pct",
                                        100 * density, "budget as density, % of the matrix (log)",
                                        f"vs budget, at r = {sel.filter_rank}", current_jaccard=now, tick_unit="%")
right.plotly_chart(budget_chart)
right.caption("Bigger budgets overlap more by simple counting: the random lines show how much "
              "overlap chance alone gives at each budget. LIFT vs random (wide grey) and magnitude "
              "vs random (thin, open diamonds) lie on top of each other: both are chance level. "
              "The star is the current setting, the same value as in the table below.")

left, right = st.columns([2, 3])
left.plotly_chart(pairwise_figure(pairs))
right.markdown(
    "**The four masks, same k:** *LIFT* (largest |W_r|, the paper's method), *magnitude* "
    "(largest |W|), *random*, and *LIFT-smallest* (smallest |W_r|: the default in the "
    "authors' latest released code, kept here as a baseline because the paper describes the "
    "largest entries)."
)

st.header("Whole model")
st.caption(
    f"Every linear layer inside the transformer blocks at filter rank {sel.filter_rank} and "
    f"LoRA-rank budget {sel.lora_rank} (k = (m+n)·{sel.lora_rank} per layer"
    + (", not the density budget" if sel.density is not None else "") + f"), {sidebar.SVD_LABELS[sel.svd]} SVD."
)
args = (name, sel.lora_rank, sel.filter_rank, sel.svd)
found = caches.cached_model_analysis(*args)
# The run that follows a click already knows it: the button (same key, so the same element)
# turns into a disabled "Analyzing…" label. Replacing it by the bar left a faded copy below.
running = found is None and bool(st.session_state.get("analyze_all"))
if found is None and (st.button("Analyzing every layer…" if running else "Analyze every layer",
                                type="tertiary" if running else "primary", key="analyze_all",
                                disabled=running) or running):
    bar = st.progress(0.0, text="starting…")
    try:
        found = caches.model_analysis(*args, progress=lambda done, total, layer_name: bar.progress(
            done / total, text=f"{done}/{total} · {layer_name}"))
    except LiftError as exc:
        st.error(str(exc))
    bar.empty()
    if found is not None:
        st.rerun()  # draw the result without the "Analyzing…" label (the analysis is memoized)
if found is None:
    st.stop()
table, notes = found
for note in notes:
    st.info(note)
st.plotly_chart(model_overlap_figure(table))
st.caption("One bar per layer, coloured by role; the black ticks are LIFT vs a random mask of "
           "the same size, the overlap chance alone would give.")
st.download_button("Download the table (CSV)", table.to_csv(index=False).encode(), file_name=f"lift_analysis_{sel.lora_rank}_{sel.filter_rank}.csv", mime="text/csv")
with st.expander("Per-layer table"):
    st.dataframe(table, hide_index=True)
