"""Fine-tune: launch one run, all methods in a row, or a sweep in the background and watch it live."""

import streamlit as st

from lift_ui.navigation import heavy_imports, require_app_navigation

require_app_navigation()
st.title("Fine-tune")
# The rest loads torch: on a fresh server the title above paints first (issue 14).
with heavy_imports():
    from lift_core.runs.compare import DEFAULT_METHODS
    from lift_core.train.registry import method_names
    from lift_ui import data_files, live_panel, sweep_panel, train_form
st.caption(f"Runs go to `{train_form.runs_root()}` (set LIFT_RUNS_DIR to change it). Training runs as a "
           "separate process: closing or reloading this tab does not stop it, and one job runs at a time.")

settings = train_form.settings_form()
data_files.data_panel(settings)
if settings is not None:
    run_tab, compare_tab, sweep_tab = st.tabs(["One run", "Compare all methods", "Sweep"])
    with run_tab:
        out = train_form.planned_dir(settings.method, "run")
        argv = train_form.finetune_argv(settings, out)
        st.code(train_form.command_text(argv), language="bash")
        train_form.launch_button("Run", argv, [out], kind="finetune", slot="run", settings=settings,
                               steps=settings.steps, job_label=f"{settings.method}, {settings.steps} steps",
                               key="ft_run")
    with compare_tab:
        methods = st.multiselect("Methods, in run order", method_names(), default=list(DEFAULT_METHODS), key="ft_compare_methods")
        st.caption("The same settings for every method, each with its own default learning rate; "
                   "one job that trains them one after another into one folder.")
        if methods:
            out = train_form.planned_dir("compare", "compare")
            argv = train_form.compare_argv(settings, methods, out)
            st.code(train_form.command_text(argv), language="bash")
            train_form.launch_button("Compare all", argv, [out / m for m in methods], kind="compare",
                                   slot="compare", settings=settings, steps=settings.steps,
                                   job_label=f"compare {', '.join(methods)} ({settings.steps} steps each)",
                                   key="ft_compare")
    with sweep_tab:
        sweep_panel.sweep_tab(settings)

live_panel.job_panel(("finetune", "compare", "sweep"), key="ft_live")
