"""Sensitivity: the paper's noise test. Which entries hurt the model most when noised?"""

import streamlit as st

from lift_ui.navigation import heavy_imports, require_app_navigation

require_app_navigation()
st.title("Noise sensitivity")
# The rest loads torch: on a fresh server the title above paints first (issue 14).
with heavy_imports():
    from lift_core.analysis.sensitivity import MAX_DRAWS, SELECTORS, SensitivityConfig, format_summary, most_damaging
    from lift_core.analysis.sensitivity_measures import METRICS
    from lift_core.errors import LiftError
    from lift_core.train.registry import method_label
    from lift_ui import caches, sidebar
    from lift_ui.figures.sensitivity import sensitivity_figure
sel = sidebar.explorer_sidebar()
if sel is None:
    st.info("Pick a model in the sidebar.")
    st.stop()

SCALES = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
left, right = st.columns(2)
scope = left.radio("Where the noise goes", ("every block linear", "only the sidebar's layer"), horizontal=True,
                   key="sens_scope")
selectors = left.multiselect("Selectors", SELECTORS, default=SELECTORS, format_func=method_label, key="sens_selectors")
scales = right.multiselect("Noise scales (× std(W))", SCALES, default=SCALES[1:-1], format_func=lambda s: f"{s:g}σ",
                           key="sens_scales")
draws = right.number_input("Noise draws per point", 1, MAX_DRAWS, 3, key="sens_draws")
limit = left.slider("Eval examples per set", 10, 150, 50, step=10, key="sens_limit") if sel.causal else None
try:
    config = SensitivityConfig(selectors=tuple(selectors), scales=tuple(scales), draws=int(draws),
                               budget_rank=sel.lora_rank, filter_rank=sel.filter_rank,
                               layer=sel.layer.name if scope.startswith("only") else None,
                               eval_limit=limit, svd=sel.svd)
except LiftError as exc:
    st.error(str(exc))
    st.stop()
st.caption(f"{sel.model_name} · {'`' + sel.layer.name + '`' if config.layer else 'every block linear'} · "
           f"budget k = (m+n)·{sel.lora_rank} per matrix (the sidebar's LoRA-rank budget) · filter rank r = "
           f"{sel.filter_rank} · {config.perturbations} evaluations")

found = caches.cached_sensitivity(sel.model_name, config)
running = found is None and bool(st.session_state.get("sens_run"))
if found is None and (st.button("Running the test…" if running else "Run the test", key="sens_run",
                                type="tertiary" if running else "primary", disabled=running) or running):
    bar = st.progress(0.0, text="choosing entries…")
    try:
        found = caches.sensitivity(sel.model_name, config, progress=lambda done, total, label: bar.progress(
            done / total, text=f"{done}/{total} · {label}"))
    except LiftError as exc:
        st.error(str(exc))
    bar.empty()
    if found is not None:
        st.rerun()  # draw the result without the "Running…" label (the result is memoized)

chart, text = st.columns([3, 2])
with text:
    st.markdown(
        "**What the test does.** In every matrix, each selector picks the same number of entries "
        "k = (m+n)·R: *LIFT* the largest |W_r| (principal weights), *magnitude* the largest |W|, "
        "*random* a fresh random set per draw, *LIFT-smallest* the smallest |W_r|. Gaussian noise "
        "with standard deviation s × std(W) is added to those entries only, the model is measured, "
        "and the entries are restored exactly before the next draw.\n\n"
        "**What the paper claims.** Principal weights are the most sensitive: noise on them "
        "hurts more than the same noise on the largest or on random weights.\n\n"
        "**Why the whole curve.** Which selection hurts most can change with the scale (small "
        "noise probes the local slope, large noise replaces the entries), so every scale is shown "
        "rather than one number. Error bars are ± one std over the draws."
    )
if found is None:
    st.stop()
summary = found.summary()
metric = text.selectbox("Measure", found.metrics, format_func=lambda m: METRICS[m].label, key="sens_metric")
chart.plotly_chart(sensitivity_figure(summary, metric, METRICS[metric].label, clean=found.baseline.get(metric),
                                      draws=config.draws))
for note in found.notes:
    chart.caption(note)
worst = most_damaging(summary[summary.scale > 0], metric)
if len(worst):
    text.markdown("**Most damaging selection at each scale** (" + METRICS[metric].label + "): "
                  + ", ".join(f"{s:g}σ {method_label(w)}" for s, w in worst.items()))
st.subheader("Mean ± std over draws")
st.dataframe(format_summary(summary, found.metrics), hide_index=True)
st.download_button("Download every draw (CSV)", found.table.to_csv(index=False).encode(),
                   file_name=f"sensitivity_{sel.lora_rank}_{sel.filter_rank}.csv", mime="text/csv")
