"""Runs: browse the recorded runs (sample runs and your own), overlay any of them, export the table."""

import streamlit as st

from lift_ui.navigation import heavy_imports, require_app_navigation

require_app_navigation()
st.title("Runs")
# The rest loads torch: on a fresh server the title above paints first (issue 14).
with heavy_imports():
    from lift_ui import live_panel, run_data, run_manager, train_form
    from lift_ui.figures import training as figs
table = train_form.browse_runs()
if table.empty:
    st.info(f"No run records yet in `sample_runs/` or `{train_form.runs_root()}`. Launch one on the "
            "Fine-tune page, or make the sample runs: `bash sample_runs/make_sample_runs.sh`.")
    st.stop()
unreadable = table[table["status"] == "unreadable"]
if len(unreadable):
    st.warning(f"{len(unreadable)} run record(s) cannot be read: "
               + "; ".join(f"{label}: {note}" for label, note in zip(unreadable["label"], unreadable["note"])))

left, right = st.columns([3, 2])
words = left.text_input("Filter runs", placeholder="words in the folder, name, tags, notes or method",
                        key="runs_filter")
statuses = right.multiselect("Status", sorted(table["status"].dropna().unique()), key="runs_status")
found = run_data.filter_runs(table, words, statuses)
labels = list(found["label"])
names = dict(zip(table["label"], table["name"].fillna("")))
default = [l for l in labels if l.startswith("sample_runs/")] or labels[-5:]
if "runs_picked" not in st.session_state:
    st.session_state["runs_picked"] = default
elif st.session_state.get("_runs_filter_seen", ("", [])) != (words, statuses):
    # A new filter: keep the picks it still shows, else pick what it found.
    st.session_state["runs_picked"] = [l for l in st.session_state["runs_picked"] if l in labels] or default
st.session_state["_runs_filter_seen"] = (words, statuses)
picked = st.multiselect(f"Runs to compare ({len(labels)} found)", labels, key="runs_picked",
                        format_func=lambda l: f"{names[l]} ({l})" if names.get(l) else l)
if not picked:
    st.info(f"No run matches “{words}”." if words and not labels else "Pick one or more runs.")
    run_manager.manage_panel(table)
    st.stop()
shown = table[table["label"].isin(picked)]

# Every setting in which the picked runs differ is a column, next to the results.
settings = [c for c in run_data.differing_settings(shown) if c not in ("lr", "steps")]
columns = ["label", "name", "tags", "method", "seed", "lr", "steps", *settings, "status", "steps_done",
           "target_acc_before", "target_acc", "source_acc_before", "source_acc", "forgetting",
           "trainable_params", "optimizer_state_bytes", "seconds_per_step", "wall_seconds", "note"]
# Columns nobody filled in (no names, tags or notes yet) would only push the results aside.
columns = [c for c in columns if c in ("label", "status") or shown[c].replace("", None).notna().any()]
# Short headers, so more columns fit before the table scrolls sideways.
short = {"target_acc_before": "target before", "target_acc": "target", "source_acc_before": "source before",
         "source_acc": "source", "steps_done": "done", "trainable_params": "trained numbers",
         "optimizer_state_bytes": "optimizer bytes", "seconds_per_step": "s/step", "wall_seconds": "wall s"}
config = {c: st.column_config.NumberColumn(short.get(c), format="percent")
          for c in columns if "acc" in c or c == "forgetting"}
config.update({c: st.column_config.NumberColumn(label) for c, label in short.items() if c in columns and c not in config})
config["label"] = st.column_config.TextColumn(pinned=True, width="medium")  # in view while scrolling sideways
st.dataframe(shown[columns], hide_index=True, column_config=config,
             height=min(38 + 35 * len(shown), 600))  # every row without an inner scroll, up to ~16
st.download_button("Download the table (CSV, every setting and result)",
                   shown.drop(columns=["path"]).to_csv(index=False), file_name="lift_runs.csv", mime="text/csv", key="runs_csv")
diff = run_data.config_diff(train_form.records_for(shown))
with st.expander(f"Config diff of the picked runs (settings that differ: {len(diff)})"):
    if diff.empty:
        st.caption("The picked runs have the same settings" if len(shown) > 1 else "Pick two or more runs.")
    else:
        st.table(diff.T if diff.shape[1] > diff.shape[0] else diff)  # the long side down: nothing cut off
run_manager.manage_panel(table)

data = train_form.long_metrics(train_form.records_for(shown))
opts = live_panel.chart_options(st, "runs")
st.plotly_chart(figs.accuracy_figure(data, x=opts["x"]), key="runs_acc")
for label, record in train_form.records_for(shown).items():
    if not run_data.read_generations(record.path).empty:  # records from before answers were kept have none
        with st.expander(f"Answers of {label} at its first and latest evaluation"):
            live_panel.generations_panel(record.path, f"runs_{label}")
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
