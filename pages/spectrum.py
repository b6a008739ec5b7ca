"""Spectrum: is this matrix more than noise, and how much does rank r keep?"""

import streamlit as st

from lift_ui.navigation import heavy_imports, require_app_navigation

require_app_navigation()
st.title("Spectrum")
# The rest loads torch: on a fresh server the title above paints first (issue 14).
with heavy_imports():
    from lift_ui import caches, sidebar
    from lift_ui.figures.explorer import energy_figure, spectrum_figure
sel = sidebar.explorer_sidebar()
if sel is None:
    st.info("Pick a model in the sidebar.")
    st.stop()

spec = caches.spectrum(sel.model_name, sel.layer.name)
energy_r = float(spec["energy"][sel.filter_rank - 1])
st.caption(f"{sel.layer.label} · `{sel.layer.name}`")

cols = st.columns(4)
cols[0].metric("Stable rank", f"{spec['stable_rank']:.1f}", help="Σᵢσᵢ² / σ₁² (squared Frobenius norm over squared spectral norm): how many directions carry the energy.")
cols[1].metric("Effective rank", f"{spec['effective_rank']:.0f}", help="exp(entropy of the normalised singular values).")
cols[2].metric("Above the MP edge", spec["above_mp_edge"], help="Singular values a same-shape random matrix would not reach.")
cols[3].metric(f"Energy kept at r = {sel.filter_rank}", f"{energy_r:.1%}")

left, right = st.columns(2)
left.plotly_chart(spectrum_figure(spec["singular_values"], spec["shuffled"], spec["mp_edge"], sel.filter_rank))
left.caption(
    "Orange: the singular values of W. Dotted grey: the same entries shuffled into random "
    "places, which keeps their values but destroys the structure (both drawn down to the 10th "
    "percentile of W's singular values). Dashed: the Marchenko–Pastur "
    "bulk edge, the largest singular value an i.i.d. random matrix of this shape and entry "
    "spread would have. Values above the edge are learned structure, not noise."
)
right.plotly_chart(energy_figure(spec["energy"], sel.filter_rank))
right.caption(
    r"The fraction of the energy $\lVert W\rVert_F^2 = \sum_i \sigma_i^2$ that the best rank-r "
    "approximation W_r keeps. LIFT scores entries "
    "by |W_r|, so r decides how much of the matrix's structure the score sees. (The spectrum "
    "is always computed exactly, whatever the SVD mode.)"
)
with st.expander("What does this say about principal weights?", expanded=True):
    st.markdown(
        f"A trained matrix is not random: its top singular directions stand above the bulk "
        f"({spec['above_mp_edge']} here), while the shuffled copy, with identical entries, "
        "stays near the edge. Principal weights are the entries that matter *to those top "
        "directions*: LIFT keeps only the rank-r part W_r and picks the k largest |W_r| "
        "entries. Plain |W| mixes that structure with the noise-like bulk, which is why the "
        "largest weights are a different, weaker set. The paper finds a filter rank close to "
        "the budget rank works best, and a much larger filter rank is not better — as r grows, "
        "W_r approaches W and the mask approaches plain magnitude."
    )
