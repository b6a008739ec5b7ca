"""Workshop: walk a room through LIFT with the recorded sample runs: the paper's claims tested on
the shipped sample sweep, the five methods at the default setting, then a live run for a minute."""

import streamlit as st

from lift_ui.navigation import heavy_imports, require_app_navigation

require_app_navigation()
st.title("Workshop: LIFT in ten minutes")
# The rest loads torch: on a fresh server the title above paints first (issue 14).
with heavy_imports():
    from lift_core.runs.compare import method_table
    from lift_core.runs.records import runs_table
    from lift_core.train.registry import PRINCIPAL_METHOD, method_label, method_names
    from lift_ui import claims_panel, live_panel, run_data, train_form
    from lift_ui.figures import training as figs
records = train_form.sample_records()
demo = train_form.demo_settings()
refresh = run_data.refresh_interval_text(records, demo.update_interval)
st.markdown(
    "**Principal weights.** Take a weight matrix W, keep only its best rank-r approximation W_r "
    "(from the SVD), and score every entry by |W_r|. The k highest-scoring entries are the "
    "*principal weights*; LIFT fine-tunes only those entries of the original W, with k matched to "
    "a LoRA of the same rank: k = (m+n)·rank per matrix, about 5% of the entries. The Adam state is "
    "kept only for those k entries, and the mask is recomputed from the current weights "
    f"periodically ({refresh} in these runs; Liu et al., ICML 2025).")

claims_panel.claims_section(train_form.sample_runs_root())

if not records:
    st.info("No completed sample runs yet (`bash sample_runs/make_sample_runs.sh` makes them, "
            "~1 min per run). The live demo below still works.")
else:
    table = runs_table([r.path for r in records.values()])
    points = method_table(table)
    facts = run_data.workshop_findings(points)
    seeds = int(points["runs"].max())
    steps = int(table["steps"].max())
    st.header("The five methods at the default setting")
    st.caption(f"{len(records)} recorded runs: {', '.join(points['method'])} on the built-in tiny Llama, "
               f"{steps} steps, up to {seeds} seeds each, each method at its default learning rate "
               "(sample_runs/<method>-seed<S>/). Nothing is trained to show them.")

    st.subheader("1. Learning the new task, and what it costs")
    curves = run_data.mean_curves(run_data.long_metrics(records))
    st.plotly_chart(figs.accuracy_figure(curves, title="Accuracy during training (mean ± std over seeds)"),
                    key="ws_acc")
    st.markdown(
        "The model was pretrained on a *source* task (reversing, sorting, single arithmetic facts) "
        "and is fine-tuned on a *target* task (chained arithmetic). The top row is what it learns; "
        "the bottom row is what it keeps of the source task. " + facts.get("accuracy", ""))

    st.subheader("2. Accuracy vs forgetting")
    left, right = st.columns([3, 2])
    left.plotly_chart(figs.tradeoff_figure(run_data.method_points(table),
                                           title="Target accuracy vs forgetting (mean ± std)"), key="ws_tradeoff")
    right.markdown(
        "Up is more learned, left is less forgotten. In the paper, LIFT beats full fine-tuning on "
        "reasoning benchmarks (e.g. Llama-3-8B, 7 benchmarks: 81.78 vs 80.18) and keeps more "
        "source-domain accuracy: >10 points above full fine-tuning and ~20 above LoRA on Llama-3-8B.")
    for key in ("forgetting", "selection"):
        if key in facts:
            right.markdown("**These runs:** " + facts[key])

    st.subheader("3. What each method trains and stores")
    st.plotly_chart(figs.memory_figure(points.rename(columns={
        "trainable_params_mean": "trainable_params", "optimizer_state_bytes_mean": "optimizer_state_bytes"})),
        key="ws_memory")
    st.markdown("LoRA and the sparse methods train the same number of numbers; full fine-tuning trains "
                "every entry and needs Adam moments for all of them. " + facts.get("memory", ""))

    st.subheader("4. The mask moves")
    sparse = curves[curves["method"].isin(method_names("sparse"))]
    st.plotly_chart(figs.churn_figure(sparse, steps=steps), key="ws_churn")
    # The refresh after the last step trains nothing: left out of the chart and the numbers.
    lift = sparse[(sparse["method"] == PRINCIPAL_METHOD) & sparse["mask_churn"].notna() & (sparse["step"] < steps)]
    churn = (f" Here {method_label(PRINCIPAL_METHOD)} replaced {100 * lift['mask_churn'].min():.1f}–"
             f"{100 * lift['mask_churn'].max():.1f}% of its mask at each refresh." if len(lift) else "")
    st.markdown(f"{refresh.capitalize()} the mask is recomputed from the *current* weights: entries that "
                "stay keep their Adam moments, new ones start from zero. Training changes which weights "
                "are principal." + churn)

st.header("Live demo")
out = train_form.planned_dir("demo", "demo")
argv = train_form.finetune_argv(demo, out)
took = run_data.duration_sentence(demo.steps, train_form.local_records(), records)
st.markdown(f"A short LIFT run on the built-in model ({demo.steps} steps, evaluation on {demo.eval_limit} "
            f"problems of each task every {demo.eval_every} steps): {took}. It runs in the background; "
            "the charts below update as it trains.")
st.code(train_form.command_text(argv), language="bash")
train_form.launch_button("Start the live demo", argv, [out], kind="demo", slot="demo", settings=demo,
                       steps=demo.steps, job_label=f"live demo: lift, {demo.steps} steps", key="ws_demo")
reference = None
if records:  # the live run is drawn against the recorded LIFT runs (mean over seeds)
    lift_runs = {k: r for k, r in records.items() if r.config.get("method") == PRINCIPAL_METHOD}
    if lift_runs:
        reference = run_data.mean_curves(run_data.long_metrics(lift_runs))
        reference["label"] = f"recorded {method_label(PRINCIPAL_METHOD)} runs (mean of {len(lift_runs)})"
live_panel.job_panel(("demo",), key="ws_live", reference=reference)
