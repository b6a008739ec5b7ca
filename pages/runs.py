"""Runs: browse the recorded runs (sample runs and your own), overlay any of them, export the table."""

import streamlit as st

from lift_ui import live_panel, run_data, train_form
from lift_ui.figures import training as figs
from lift_ui.sidebar import require_app_navigation

require_app_navigation()
st.title("Runs")
table = train_form.browse_runs()
if table.empty:
    st.info(f"No run records yet in `sample_runs/` or `{train_form.runs_root()}`. Launch one on the "
            "Fine-tune page, or make the sample runs: `bash sample_runs/make_sample_runs.sh`.")
    st.stop()
unreadable = table[table["status"] == "unreadable"]
if len(unreadable):
    st.warning(f"{len(unreadable)} run record(s) cannot be read: "
               + "; ".join(f"{label}: {note}" for label, note in zip(unreadable["label"], unreadable["note"])))

labels = list(table["label"])
default = [l for l in labels if l.startswith("sample_runs/")] or labels[-5:]
picked = st.multiselect(f"Runs to compare ({len(labels)} found)", labels, default=default, key="runs_picked")
if not picked:
    st.info("Pick one or more runs.")
    st.stop()
shown = table[table["label"].isin(picked)]

columns = ["label", "method", "seed", "lr", "status", "steps_done", "steps", "target_acc_before", "target_acc",
           "source_acc_before", "source_acc", "forgetting", "trainable_params", "optimizer_state_bytes",
           "seconds_per_step", "wall_seconds", "note"]
st.dataframe(shown[columns], hide_index=True, column_config={
    c: st.column_config.NumberColumn(format="percent") for c in columns if "acc" in c or c == "forgetting"})
st.download_button("Download the table (CSV)", shown.drop(columns=["path"]).to_csv(index=False),
                   file_name="lift_runs.csv", mime="text/csv", key="runs_csv")

data = train_form.long_metrics(train_form.records_for(shown))
opts = live_panel.chart_options(st, "runs")
st.plotly_chart(figs.accuracy_figure(data, x=opts["x"]), key="runs_acc")
left, right = st.columns(2)
left.plotly_chart(figs.loss_figure(data, raw=False, **opts), key="runs_loss")
left.caption("EMA-smoothed; colours and dashes as in the accuracy chart (hover for the run).")
points = run_data.method_points(shown)
right.plotly_chart(figs.tradeoff_figure(points, title="Accuracy vs forgetting (mean ± std per method)"),
                   key="runs_tradeoff")
left_out = len(shown) - len(run_data.completed_runs(shown))
right.caption("One point per method: the mean over the picked runs that completed, with ± one standard "
              "deviation across seeds as error bars. Failed, stopped, interrupted, running and unreadable "
              f"runs are left out ({left_out} of the picked runs).")
