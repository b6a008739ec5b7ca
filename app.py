"""LIFT Studio: `streamlit run app.py`. The page list below is the whole navigation."""

import streamlit as st

from lift_ui.sidebar import configure_torch

st.set_page_config(page_title="LIFT Studio", page_icon=":material/filter_alt:", layout="wide")
configure_torch()

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

st.navigation({section: pages for section, pages in PAGES.items() if pages}).run()
