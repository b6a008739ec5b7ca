"""The app's torch-free start: what every page does before its heavy imports.

A cold server takes seconds to import torch (and transformers, through lift_core). Pages
therefore draw their title first and import the rest inside :func:`heavy_imports`, so a
new visitor sees the page at once and a spinner says what the wait is (issue 14). This
module must stay importable without torch: app.py and every page import it first.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

import streamlit as st

FIRST_LOAD_TEXT = "Loading PyTorch (first visit after a server start only)…"


def configure_torch() -> None:
    """Use half the cores for torch (LIFT_TORCH_THREADS overrides), once torch is loaded.

    Does nothing before the first import: importing torch here would undo the point of
    this module. :func:`heavy_imports` calls it again right after a page's first import.
    On a shared or small machine, torch's default of one thread per core oversubscribes
    the CPU and a small SVD can run 20x slower (measured: whole-MiniLM analysis 2 s with
    one thread vs 42 s with two on a busy 2-core box).
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return
    wanted = os.environ.get("LIFT_TORCH_THREADS") or max(1, (os.cpu_count() or 2) // 2)
    try:
        threads = max(1, int(wanted))
    except ValueError:
        threads = 1
    # Always set it: the OpenMP thread count is per calling thread, and Streamlit runs each
    # script run in a new thread, where get_num_threads() may report 1 while the OpenMP
    # pool of that thread still starts one worker per core.
    torch.set_num_threads(threads)


@contextmanager
def heavy_imports() -> Iterator[None]:
    """Wrap a page's torch-importing imports, placed after its title and intro.

    On the first run of a fresh server a spinner stands under the title while they load;
    afterwards (modules cached) it is a no-op apart from setting torch's thread count.
    """
    if "torch" in sys.modules:
        yield
    else:
        with st.spinner(FIRST_LOAD_TEXT):
            yield
    configure_torch()


def require_app_navigation() -> None:
    """Make sure this run came through app.py's st.navigation, not the pages/ fallback.

    Streamlit still knows the old "pages/ directory" mode: on a fresh server, a first visit
    straight to /spectrum runs pages/spectrum.py on its own (no app.py, default page list)
    until some run calls st.navigation. Leave that mode and rerun, so app.py draws the page.
    Once per session: AppTest re-enters that mode on every run, and rerunning each time
    would swallow button clicks (the page still works when run on its own).
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory and not st.session_state.get("_lift_left_pages_dir"):
        st.session_state["_lift_left_pages_dir"] = True
        PagesManager.uses_pages_directory = False
        st.rerun()
