"""Your own data on the Fine-tune page: upload or name a file, see its first examples.

Files are read with the loader the CLI uses (:func:`lift_core.train.tasks.load_examples`),
so a file the page accepts is one ``finetune --train-data`` accepts, and a bad one shows
the same one-line message. Uploads are kept in ``<runs>/.uploads/`` (the job reads them
from there) and put into the form's field with one click.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import streamlit as st

from lift_core.errors import LiftError
from lift_core.train.config import FinetuneConfig
from lift_core.train.tasks import load_examples
from lift_ui.train_form import runs_root

# form field -> what it holds (the same three files finetune reads)
DATA_FIELDS = {"train_data": "training data", "target_eval": "target evaluation set",
               "source_eval": "source evaluation set"}
PREVIEW_ROWS = 3


@st.cache_data(max_entries=16, show_spinner=False)
def _examples(path: str, mtime_ns: int) -> tuple[int, pd.DataFrame]:
    """(count, first examples) of a data file; raises the loader's LiftError."""
    examples = load_examples(path)
    head = pd.DataFrame([{"prompt": e.prompt, "answer": e.answer} for e in examples[:PREVIEW_ROWS]])
    return len(examples), head


def preview(path: str) -> tuple[int, pd.DataFrame]:
    """Count and first examples of ``path``, re-read when the file changes.

    Raises:
        LiftError: the loader's message (missing file, bad JSON, missing field, ...).
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise LiftError(f"data file {path} does not exist (or is a folder)")
    return _examples(str(file), file.stat().st_mtime_ns)


def save_upload(name: str, data: bytes) -> Path:
    """Keep an uploaded file in <runs>/.uploads/ under a safe name; return its path."""
    folder = runs_root() / ".uploads"
    folder.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name).lstrip(".") or "data.jsonl"
    path = folder / safe
    path.write_bytes(data)
    return path


def data_panel(settings: FinetuneConfig | None) -> None:
    """Upload a file for any of the three data fields, and preview the files the form names."""
    with st.expander("Your data files (JSON or JSONL, Alpaca fields: instruction, input, output)"):
        kind = st.selectbox("Use an uploaded file as", list(DATA_FIELDS), format_func=DATA_FIELDS.get,
                            key="ft_upload_kind")
        upload = st.file_uploader("Upload", type=["json", "jsonl"], key="ft_upload")
        if upload is not None:
            path = save_upload(upload.name, upload.getvalue())
            try:
                count, _ = preview(str(path))
            except LiftError as exc:
                st.error(str(exc))
            else:
                st.caption(f"{upload.name}: {count} examples, kept as `{path}`.")
                if st.button(f"Use it as the {DATA_FIELDS[kind]}", key="ft_upload_use"):
                    st.session_state[f"ft_{kind}"] = str(path)
                    st.rerun()
        named = {f: getattr(settings, f) for f in DATA_FIELDS if settings is not None and getattr(settings, f)}
        if not named:
            st.caption("The built-in tasks are used unless a file is set here or under More settings.")
        for field, path in named.items():
            try:
                count, head = preview(path)
            except LiftError as exc:
                st.error(str(exc))
                continue
            st.markdown(f"**{DATA_FIELDS[field].capitalize()}**: `{path}`, {count} examples; the first {len(head)}:")
            st.dataframe(head, hide_index=True)
