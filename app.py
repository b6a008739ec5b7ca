"""LIFT Studio: `streamlit run app.py`. The page list below is the whole navigation.

Nothing here imports torch: a cold process takes seconds to import it, and the page
would stay blank meanwhile. The navigation, then each page's title and intro, are drawn
first; the page imports torch after them, under a spinner (lift_ui.navigation, issue 14).
"""

import streamlit as st

from lift_ui.navigation import configure_torch

st.set_page_config(page_title="LIFT Studio", page_icon=":material/filter_alt:", layout="wide")

# One line per page. Sections appear in the sidebar in this order.
PAGES = {
    "Explore": [
        st.Page("pages/home.py", title="Overview", icon=":material/home:", default=True),
        st.Page("pages/spectrum.py", title="Spectrum", icon=":material/show_chart:"),
        st.Page("pages/principal_weights.py", title="Principal weights", icon=":material/grid_on:"),
        st.Page("pages/overlap.py", title="Overlap", icon=":material/join_inner:"),
        st.Page("pages/sensitivity.py", title="Sensitivity", icon=":material/blur_on:"),
    ],
    "Train": [
        st.Page("pages/finetune.py", title="Fine-tune", icon=":material/model_training:"),
        st.Page("pages/runs.py", title="Runs", icon=":material/table_chart:"),
        st.Page("pages/what_changed.py", title="What changed", icon=":material/difference:"),
        st.Page("pages/workshop.py", title="Workshop", icon=":material/school:"),
    ],
}

page = st.navigation({section: pages for section, pages in PAGES.items() if pages})
configure_torch()  # no-op until a page has imported torch (inside navigation.heavy_imports)
page.run()
