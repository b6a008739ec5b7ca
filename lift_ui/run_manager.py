"""The Runs page's management panel: name, notes and tags of a run, delete to the trash, restore.

Only runs made by this app (under the runs folder) can be renamed or deleted; the shipped
sample runs are read-only. The files are written by :mod:`lift_core.runs.notes`; a deleted
run lands in ``<runs>/.trash`` and is listed here with a Restore button.
"""

from __future__ import annotations

import datetime

import pandas as pd
import streamlit as st

from lift_core.errors import LiftError
from lift_core.runs.notes import list_trash, parse_tags, read_notes, restore_run, trash_run, write_notes
from lift_ui.train_form import run_label, runs_root


def _done(message: str) -> None:
    st.session_state["_runs_message"] = message
    st.rerun()


def manage_panel(table: pd.DataFrame) -> None:
    """Edit one of this app's runs (name, notes, tags), delete it, or restore a deleted one."""
    if message := st.session_state.pop("_runs_message", None):
        st.success(message)
    own = table[table["label"].str.startswith("runs/") & (table["status"] != "unreadable")]
    with st.expander(f"Name, notes, tags, delete (your runs: {len(own)})"):
        if own.empty:
            st.caption("Runs you launch from this app can be named, tagged and deleted here; "
                       "the sample runs are read-only.")
        else:
            _edit(own)
        _trash()


def _edit(own: pd.DataFrame) -> None:
    label = st.selectbox("Run", list(own["label"]), key="runs_manage_pick")
    path = own.loc[own["label"] == label, "path"].iloc[0]
    notes = read_notes(path)
    with st.form(key=f"runs_notes_{label}"):
        name = st.text_input("Name", value=notes["name"], max_chars=80)
        tags = st.text_input("Tags (comma-separated)", value=", ".join(notes["tags"]))
        text = st.text_area("Notes", value=notes["notes"], height=80)
        if st.form_submit_button("Save"):
            try:
                write_notes(path, name=name, notes=text, tags=parse_tags(tags))
            except LiftError as exc:
                st.error(str(exc))
            else:
                _done(f"Saved the notes of {label}.")
    status = own.loc[own["label"] == label, "status"].iloc[0]
    if st.button("Move to trash", key="runs_trash", icon=":material/delete:",
                 disabled=status == "running", help="Undoable: restore it from the list below."):
        try:
            trash_run(path, runs_root())
        except LiftError as exc:
            st.error(str(exc))
        else:
            _done(f"Moved {label} to the trash.")


def _trash() -> None:
    trashed = list_trash(runs_root())
    if not trashed:
        return
    st.markdown(f"**Trash** ({len(trashed)}; in `{runs_root() / '.trash'}`, nothing is erased)")
    for entry in trashed[:20]:
        left, right = st.columns([4, 1])
        when = datetime.datetime.fromtimestamp(entry["trashed"] or 0).strftime("%Y-%m-%d %H:%M")
        left.caption(f"{run_label(entry['path'])} · deleted {when}")
        if right.button("Restore", key=f"runs_restore_{entry['id']}"):
            try:
                restore_run(runs_root(), entry["id"])
            except LiftError as exc:
                st.error(str(exc))
            else:
                _done(f"Restored {run_label(entry['path'])}.")
