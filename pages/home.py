"""Overview: what LIFT is, and the layers of the chosen model."""

import streamlit as st

from lift_ui.navigation import heavy_imports


def _sample_runs_forgetting() -> str:
    """What the shipped sample runs measured about forgetting, computed from their records
    (the same sentence as the Workshop's), so the page cannot contradict them."""
    records = train_form.sample_records()
    if not records:
        return ""
    table = runs_table([r.path for r in records.values()])
    found = run_data.workshop_findings(method_table(table)).get("forgetting")
    if not found:
        return ""
    return (f"**What the shipped sample runs measured** ({len(records)} short runs of the built-in "
            f"tiny Llama, far from the paper's scale; see the Workshop): {found}")


st.title("LIFT Studio")
st.markdown(
    "**LIFT** (Liu et al., ICML 2025) fine-tunes only a model's *principal weights*. "
    "For a weight matrix W (out × in) it takes the best rank-r approximation W_r from the SVD "
    "(r is the *filter rank*), scores every entry by |W_r[i, j]|, and trains just the k "
    "entries with the largest score — entries of the original W, everything else frozen. "
    "The budget k matches a LoRA of rank `lora_rank`: k = min((m+n)·lora_rank, m·n), "
    "so rank 128 on Llama-2-7B trains ~6% of each attention matrix, ~4% of each MLP matrix."
)
st.markdown(
    "The paper's finding: these principal weights are **not** simply the largest weights. "
    "Plain magnitude selection is a poor baseline, but after rank reduction it becomes a "
    "strong one. On Llama-scale models the paper reports that LIFT matches or beats full "
    "fine-tuning on reasoning tasks and forgets less of the source domain than full "
    "fine-tuning and LoRA."
)
# The rest loads torch: on a fresh server the title and intro above paint first (issue 14).
with heavy_imports():
    from lift_core.runs.compare import method_table
    from lift_core.runs.records import runs_table
    from lift_core.train.registry import METHOD_REGISTRY
    from lift_ui import caches, run_data, sidebar, train_form
measured = _sample_runs_forgetting()
if measured:
    st.markdown(measured)
with st.expander(f"The {len(METHOD_REGISTRY)} methods you can fine-tune with (Train pages, CLI `--method`)"):
    st.markdown("\n".join(f"- **{m.label}** (`{m.name}`, default lr {m.default_lr:g}): {m.description}"
                           for m in METHOD_REGISTRY.values()))
sel = sidebar.explorer_sidebar()
st.subheader("Explore")
cols = st.columns(3)
cols[0].page_link("pages/spectrum.py", label="Spectrum: where the structure is", icon=":material/show_chart:")
cols[1].page_link("pages/principal_weights.py", label="Principal weights: which entries", icon=":material/grid_on:")
cols[2].page_link("pages/overlap.py", label="Overlap: LIFT vs magnitude", icon=":material/join_inner:")
if sel is None:
    st.info("Pick a model in the sidebar to list its layers.")
    st.stop()
st.subheader(f"Linear layers of {sel.model_name}")
st.caption(
    f"{sel.params / 1e6:.1f}M parameters. LIFT trains the linear layers inside the transformer "
    "blocks (q, k, v, o, gate, up, down); embeddings, norms, biases and heads stay frozen."
    + ("" if sel.causal else " This is an encoder-only model: explore it here, fine-tune a decoder.")
)
st.dataframe(caches.model_layers_table(sel.model_name), hide_index=True, width="stretch")
