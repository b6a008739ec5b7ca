"""LIFT Studio: `streamlit run app.py`. The page list below is the whole navigation.

The frame (navigation) is drawn before anything imports torch: a cold process takes
seconds to import it, and the page would stay blank meanwhile (issue 14).
"""

import sys

import streamlit as st

st.set_page_config(page_title="LIFT Studio", page_icon=":material/filter_alt:", layout="wide")

# One line per page. Sections appear in the sidebar in this order.
PAGES = {
    "Explore": [
        st.Page("pages/home.py", title="Overview", icon=":material/home:", default=True),
        st.Page("pages/spectrum.py", title="Spectrum", icon=":material/show_chart:"),
        st.Page("pages/principal_weights.py", title="Principal weights", icon=":material/grid_on:"),
        st.Page("pages/overlap.py", title="Overlap", icon=":material/join_inner:"),
    ],
    "Train": [
        st.Page("pages/finetune.py", title="Fine-tune", icon=":material/model_training:"),
        st.Page("pages/runs.py", title="Runs", icon=":material/table_chart:"),
        st.Page("pages/what_changed.py", title="What changed", icon=":material/difference:"),
        st.Page("pages/workshop.py", title="Workshop", icon=":material/school:"),
    ],
}

page = st.navigation({section: pages for section, pages in PAGES.items() if pages})
if "torch" in sys.modules:
    from lift_ui.sidebar import configure_torch
else:  # the first run of a fresh server: say what the wait is while torch loads
    with st.spinner("Starting LIFT Studio: loading PyTorch (first visit only)…"):
        from lift_ui.sidebar import configure_torch
configure_torch()
page.run()
