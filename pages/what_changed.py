"""What changed: ΔW = W_tuned − W_base per layer for saved runs (or two model folders),
with the paper's claims about it beside the charts, and before/after answers."""

import dataclasses
from pathlib import Path

import streamlit as st

from lift_ui.navigation import heavy_imports, require_app_navigation

require_app_navigation()
st.title("What changed")
st.caption("How each method changed the weights: ΔW = W_tuned − W_base for every block linear, "
           "measured against the base's own principal weights and singular subspaces.")
# The rest loads torch: on a fresh server the title above paints first (issue 14).
with heavy_imports():
    from lift_core.analysis.delta import ModelPair, run_pair, saved_model_dir
    from lift_core.errors import LiftError
    from lift_core.train.registry import PRINCIPAL_METHOD
    from lift_ui import caches, train_form
    from lift_ui.figures import delta as figs

runs = train_form.browse_runs()
saved = runs[[saved_model_dir(p) is not None for p in runs["path"]]] if len(runs) else runs
modes = ["Saved runs", "Two model folders"]
mode = st.radio("Compare", modes, index=0 if len(saved) else 1, horizontal=True, key="wc_mode")


def _two_folders() -> list[ModelPair]:
    left, right, r1, r2 = st.columns([3, 3, 1, 1])
    base = left.text_input("Base model (alias, folder or hub id)", "builtin", key="wc_base")
    tuned = right.text_input("Fine-tuned model folder", "", key="wc_tuned",
                             placeholder="runs/my-run/model")
    filter_rank = r1.number_input("Filter rank r", 1, 4096, 4, key="wc_r")
    lora_rank = r2.number_input("LoRA rank", 1, 4096, 4, key="wc_lora")
    if not tuned.strip():
        st.info("Give the folder of a fine-tuned model (saved with `save_pretrained`) and its base.")
        st.stop()
    return [ModelPair(label=Path(tuned).name or "tuned", method="", base=base.strip(),
                      tuned=tuned.strip(), filter_rank=int(filter_rank), lora_rank=int(lora_rank))]


def _saved_runs() -> list[ModelPair]:
    if saved.empty:
        st.info("No run with a saved model yet. Fine-tune with `--save` (the app's Fine-tune page "
                "saves by default), e.g. `python -m lift_core compare --save --out runs/cmp`, "
                "or compare two model folders instead.")
        st.stop()
    labels = list(saved["label"])
    picked = st.multiselect(f"Runs with a saved model ({len(labels)} found)", labels,
                            default=labels[:5], key="wc_runs")
    if not picked:
        st.info("Pick one or more runs.")
        st.stop()
    paths = dict(zip(saved["label"], saved["path"]))
    return [dataclasses.replace(run_pair(paths[label]), label=label) for label in picked]


pairs = _saved_runs() if mode == modes[0] else _two_folders()
try:
    with st.spinner("Measuring ΔW layer by layer…"):
        table, spectra = caches.delta_tables(pairs)
except LiftError as exc:
    st.error(str(exc))
    st.stop()

lora_rank = int(table["lora_rank"].iloc[0])
st.dataframe(table, hide_index=True, height=260)
st.download_button("Download the per-layer table (CSV)", table.to_csv(index=False),
                   file_name="delta_w.csv", mime="text/csv", key="wc_csv")

left, right = st.columns(2)
left.plotly_chart(figs.per_layer_figure(table, "rel_delta_fro"), key="wc_size")
left.caption(
    "**Size.** ‖ΔW‖_F / ‖W‖_F: how far each matrix moved, relative to its own size. The paper "
    "finds LIFT's ΔW has *larger entries* than full fine-tuning's and LoRA's: it spends the "
    "whole change on few weights. Compare the table's `max_abs_delta` (largest single change) "
    "and `changed_fraction` (entries that moved at all, the union over mask refreshes).")
right.plotly_chart(figs.per_layer_figure(table, "delta_effective_rank", lora_rank=lora_rank), key="wc_rank")
right.caption(
    f"**Rank.** Effective rank of ΔW (exp of the entropy of its normalised singular values). A "
    f"LoRA update has rank at most {lora_rank} (dashed) by construction; the paper's claim is "
    "that LIFT's sparse ΔW has a *far higher* rank, close to full fine-tuning's — the same "
    "number of trained entries spread over many directions.")

left, right = st.columns(2)
left.plotly_chart(figs.mask_energy_figure(table), key="wc_energy")
left.caption(
    "**Where.** The share of ‖ΔW‖² that falls on the base's LIFT principal weights (top-k of "
    "|W_r| at the run's filter rank and budget) and on its magnitude mask (top-k of |W|). LIFT "
    "trains exactly its mask, so its share is 100% at the start and stays near it (refreshes "
    "move the mask). Dotted: the share of the entries the mask covers — what a ΔW spread evenly "
    "would put there.")
right.plotly_chart(figs.per_layer_figure(table, "left_angle_max_deg"), key="wc_angle")
right.caption(
    "**Rotation.** The largest principal angle between the top-r left singular subspaces of W "
    "and W + ΔW (the table also has the input side, the mean cos² — 1 = unchanged — and the "
    "relative change of the spectral norm σ₁). Principal weights are defined by these top "
    "directions, so this shows how far each method turns what LIFT set out to protect; the "
    "paper's noise test finds that changing principal weights moves the spectral norm far more "
    "than changing random or large-magnitude ones.")

layers = list(table.drop_duplicates("layer")["layer"])
layer = st.selectbox("Layer for the spectrum of ΔW", layers, key="wc_layer")
runs_shown = table.drop_duplicates("run")
st.plotly_chart(figs.delta_spectrum_figure(
    {r: spectra[f"{r}/{layer}"] for r in runs_shown["run"] if f"{r}/{layer}" in spectra},
    dict(zip(runs_shown["run"], runs_shown["method"])), lora_rank=lora_rank, layer=layer), key="wc_spectrum")
st.caption("Normalised singular values of ΔW for one layer. LoRA's spectrum ends at its rank; "
           "a sparse or full update keeps a long tail.")

st.subheader("Before and after")
by_label = {p.label: p for p in pairs}
c1, c2 = st.columns([3, 1])
lift_first = next((i for i, p in enumerate(pairs) if p.method == PRINCIPAL_METHOD), 0)
who = c1.selectbox("Run", list(by_label), index=lift_first, key="wc_gen_run")
n = c2.number_input("Prompts per task", 1, 20, 4, key="wc_gen_n")
if st.button("Generate answers (base and tuned)", key="wc_gen"):
    st.session_state["wc_gen_for"] = (who, int(n))
if st.session_state.get("wc_gen_for") == (who, int(n)):
    try:
        with st.spinner("Generating…"):
            answers = caches.generations(by_label[who], int(n))
        st.dataframe(answers, hide_index=True)
        st.caption("Greedy answers of the base and the tuned model to target prompts (what the run "
                   "learned) and source prompts (what it may have forgotten); ✓ columns say whether "
                   "the final answer matches the gold one.")
    except LiftError as exc:
        st.error(str(exc))
