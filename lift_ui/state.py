"""The explorer's shared sidebar, its session state, and every cached computation.

Pages call :func:`explorer_sidebar` and get a :class:`Selection` (model, layer, ranks,
budget, SVD mode) or None when no model could be loaded. Choices survive page switches:
each widget has a private key ``_w_<name>`` that is restored from, and copied back to, a
persisted key ``lift_<name>`` (Streamlit drops a widget's state when a page that does not
draw it runs). Models are cached per process (st.cache_resource); per-layer results are
cached on hashable arguments only (model name, layer name, ranks, k, mode), never tensors.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import streamlit as st
import torch

from lift_core import masks as lift_masks
from lift_core.analysis import analyze_model
from lift_core.errors import LiftError
from lift_core.models import (
    DEFAULT_EXPLORE_MODEL, EMBEDDED_MODELS, LinearLayer, allowed_model_roots, check_fits_in_memory,
    is_causal_lm, layer_weight, layers_table, list_linear_layers, load_config, load_model,
)
from lift_core.overlap import baseline_masks, overlap_vs_budget, overlap_vs_filter_rank, pairwise_jaccard
from lift_core.spectra import cumulative_energy, summarize_spectrum
from lift_core.svd import low_rank_approximation

OTHER_MODEL = "other…"
BUDGET_MODES = ("LoRA rank", "density %")
SVD_LABELS = {"exact": "exact", "randomized": "fast (randomized)"}
DEFAULTS = {
    "model": DEFAULT_EXPLORE_MODEL, "model_text": "", "block": 0, "role": "q", "filter_rank": 8,
    "budget_mode": BUDGET_MODES[0], "lora_rank": 8, "density_pct": 5.0, "svd": "exact",
}
SEED = 0


@dataclass(frozen=True)
class Selection:
    """What the sidebar picked, with the budget already turned into k entries."""

    model_name: str  # alias, directory or hub id, as typed
    causal: bool  # decoder LM (can be fine-tuned) vs encoder-only (explore only)
    params: int  # parameter count from the config
    layer: LinearLayer
    filter_rank: int  # r of W_r
    lora_rank: int  # budget as LoRA-equivalent rank (used by the whole-model view)
    density: float | None  # budget as a fraction, when the sidebar is in density mode
    svd: str  # "exact" or "randomized"
    k: int  # entries each mask selects in this layer

    @property
    def budget_text(self) -> str:
        numel = self.layer.numel
        if self.density is None:
            how = f"LoRA rank {self.lora_rank}: (m+n)·{self.lora_rank}"
        else:
            how = f"{self.density:.1%} of the matrix"
        return f"k = {self.k:,} of {numel:,} entries ({self.k / numel:.2%}), {how}"


def configure_torch() -> None:
    """Use half the cores for torch (LIFT_TORCH_THREADS overrides), in every script run.

    On a shared or small machine, torch's default of one thread per core oversubscribes the
    CPU and a small SVD can run 20x slower (measured: whole-MiniLM analysis 2 s with one
    thread vs 42 s with two on a busy 2-core box).
    """
    wanted = os.environ.get("LIFT_TORCH_THREADS") or max(1, (os.cpu_count() or 2) // 2)
    try:
        threads = max(1, int(wanted))
    except ValueError:
        threads = 1
    # Always set it: the OpenMP thread count is per calling thread, and Streamlit runs each
    # script run in a new thread, where get_num_threads() may report 1 while the OpenMP
    # pool of that thread still starts one worker per core.
    torch.set_num_threads(threads)


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


# --- persisted widgets -----------------------------------------------------------------


def _persist(name: str) -> None:
    st.session_state[f"lift_{name}"] = st.session_state[f"_w_{name}"]


def _restore(name: str, valid: Callable[[object], object] = lambda v: v) -> dict:
    """Put the persisted value (made valid for the current options) into the widget's key."""
    value = st.session_state.get(f"lift_{name}", DEFAULTS.get(name))
    st.session_state[f"_w_{name}"] = valid(value)
    return {"key": f"_w_{name}", "on_change": _persist, "args": (name,)}


def _remember(name: str, value):
    st.session_state[f"lift_{name}"] = value
    return value


def _one_of(options: list) -> Callable[[object], object]:
    return lambda v: v if v in options else options[0]


def _clamped(low, high) -> Callable[[object], object]:
    return lambda v: type(low)(min(max(v, low), high))


# --- the sidebar -----------------------------------------------------------------------


def explorer_sidebar() -> Selection | None:
    """Draw the shared explorer sidebar; return the selection, or None if no model loaded."""
    require_app_navigation()
    bar = st.sidebar
    bar.header("Explore a model")
    name = _model_picker(bar)
    if name is None:
        return None
    note = " (rebuilt first if its shipped weights are unusable: a few minutes)" if name == "builtin" else ""
    try:
        with st.spinner(f"Loading {name}{note}…"):
            facts = model_facts(name)
            load_cached_model(name)
    except LiftError as exc:
        bar.error(str(exc))
        return None
    except (ImportError, OSError, RuntimeError) as exc:  # e.g. built-in weights not there
        bar.error(f"could not load {name}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        return None
    bar.caption(f"{facts['arch']} · {facts['params'] / 1e6:.1f}M parameters")
    if not facts["causal"]:
        bar.info("Encoder-only model: it can be explored here but not fine-tuned.")
    layer = _layer_picker(bar, name)
    return _rank_pickers(bar, name, facts, layer)


def _model_picker(bar) -> str | None:
    options = [*EMBEDDED_MODELS, OTHER_MODEL]
    choice = bar.selectbox("Model", options, format_func=lambda o: "other: hub id or directory" if o == OTHER_MODEL else o,
                           **_restore("model", _one_of(options)))
    _remember("model", choice)
    if choice != OTHER_MODEL:
        bar.caption(EMBEDDED_MODELS[choice][1])
        return choice
    text = bar.text_input("Hub id or local directory", placeholder="e.g. gpt2 or ./my-model",
                          **_restore("model_text"))
    _remember("model_text", text)
    roots = allowed_model_roots()
    if roots:  # set by the operator (LIFT_MODEL_ROOTS); the core refuses every other path
        bar.caption("Local models only under: " + ", ".join(f"`{r}`" for r in roots))
    if not text.strip():
        bar.info("Type a Hugging Face hub id or the path of a model directory, then press Enter.")
        return None
    return text.strip()


def _layer_picker(bar, name: str) -> LinearLayer:
    layers = model_layers(name)
    groups: dict[object, list[LinearLayer]] = {}
    for layer in layers:
        groups.setdefault("outside" if layer.block is None else layer.block, []).append(layer)
    blocks = list(groups)
    block = bar.selectbox("Block", blocks, format_func=lambda b: "outside blocks" if b == "outside" else f"block {b}",
                          **_restore("block", _one_of(blocks)))
    _remember("block", block)
    by_name = {l.name: l for l in groups[block]}
    if st.session_state.get("lift_layer") not in by_name:  # new block or model: keep the role
        wanted = st.session_state.get("lift_role", DEFAULTS["role"])
        match = next((l.name for l in groups[block] if l.role == wanted), groups[block][0].name)
        st.session_state["lift_layer"] = match
    chosen = bar.selectbox("Layer (role · out x in)", list(by_name),
                           format_func=lambda n: f"{by_name[n].role} · {by_name[n].shape[0]}x{by_name[n].shape[1]}",
                           **_restore("layer"))
    layer = by_name[chosen]
    _remember("role", layer.role)
    bar.caption(f"`{layer.name}`")
    return layer


def _rank_pickers(bar, name: str, facts: dict, layer: LinearLayer) -> Selection:
    top = min(layer.shape)
    r = bar.slider("Filter rank r (of W_r)", 1, top, **_restore("filter_rank", _clamped(1, top)))
    _remember("filter_rank", r)
    mode = bar.radio("Budget as", BUDGET_MODES, horizontal=True, **_restore("budget_mode", _one_of(list(BUDGET_MODES))))
    _remember("budget_mode", mode)
    lora_rank = st.session_state.get("lift_lora_rank", DEFAULTS["lora_rank"])
    density = None
    if mode == BUDGET_MODES[0]:
        lora_rank = bar.slider("Budget: LoRA-equivalent rank", 1, top, **_restore("lora_rank", _clamped(1, top)))
        _remember("lora_rank", lora_rank)
        k = lift_masks.lora_budget(layer.shape, lora_rank)
    else:
        pct = bar.slider("Budget: density (%)", 0.1, 50.0, step=0.1, **_restore("density_pct", _clamped(0.1, 50.0)))
        _remember("density_pct", pct)
        density = pct / 100
        k = lift_masks.density_budget(layer.shape, density)
    svd = bar.radio("SVD", list(SVD_LABELS), format_func=SVD_LABELS.get, horizontal=True,
                    help="How W_r is computed for the masks. The randomized SVD checks its own "
                    "accuracy and pays off on large matrices; on small ones (MiniLM's 384-wide "
                    "layers) the exact SVD is as fast or faster.",
                    **_restore("svd", _one_of(list(SVD_LABELS))))
    _remember("svd", svd)
    sel = Selection(name, facts["causal"], facts["params"], layer, r, min(lora_rank, top), density, svd, k)
    bar.caption(sel.budget_text)
    if density is None and lift_masks.budget_is_clipped(layer.shape, lora_rank):
        bar.warning("(m+n)·rank exceeds m·n here: the budget is clipped to the whole matrix.")
    return sel


# --- cached model and per-layer results ------------------------------------------------


@st.cache_data(max_entries=16, show_spinner=False)
def model_facts(name: str) -> dict:
    """Architecture, size and kind from the config alone; raises LiftError if too large."""
    config = load_config(name)
    params = check_fits_in_memory(config)
    arch = (getattr(config, "architectures", None) or [type(config).__name__])[0]
    return {"arch": arch, "params": params, "causal": is_causal_lm(config)}


@st.cache_resource(max_entries=3, show_spinner=False)
def load_cached_model(name: str) -> torch.nn.Module:
    """The model itself, shared by every session of this server process."""
    return load_model(name, check_memory=False)


@st.cache_data(max_entries=16, show_spinner=False)
def model_layers(name: str) -> list[LinearLayer]:
    return list_linear_layers(load_cached_model(name))


@st.cache_data(max_entries=16, show_spinner=False)
def model_layers_table(name: str) -> pd.DataFrame:
    return layers_table(load_cached_model(name))


def _weight(name: str, layer: str) -> torch.Tensor:
    return layer_weight(load_cached_model(name), layer).to(torch.float32)


@st.cache_data(max_entries=64, show_spinner=False)
def spectrum(name: str, layer: str) -> dict:
    """Singular values, shuffled-copy spectrum, cumulative energy and the rank summaries."""
    summary = summarize_spectrum(_weight(name, layer), 1, generator=torch.Generator().manual_seed(SEED))
    return {
        "singular_values": summary.singular_values.numpy(),
        "shuffled": summary.shuffled_singular_values.numpy(),
        "energy": cumulative_energy(summary.singular_values).numpy(),
        "mp_edge": summary.mp_edge, "stable_rank": summary.stable_rank,
        "effective_rank": summary.effective_rank, "above_mp_edge": summary.above_mp_edge,
    }


@st.cache_data(max_entries=32, show_spinner=False)
def weight_abs(name: str, layer: str) -> np.ndarray:
    return _weight(name, layer).abs().numpy()


@st.cache_data(max_entries=32, show_spinner=False)
def low_rank_abs(name: str, layer: str, filter_rank: int, svd: str) -> np.ndarray:
    """|W_r| with the same SVD mode as the masks."""
    w_r = low_rank_approximation(_weight(name, layer), filter_rank, svd=svd,
                                 generator=torch.Generator().manual_seed(SEED))
    return w_r.abs().numpy()


@st.cache_data(max_entries=32, show_spinner=False)
def layer_masks(name: str, layer: str, k: int, filter_rank: int, svd: str) -> dict[str, np.ndarray]:
    """LIFT, magnitude, random and LIFT-smallest masks (numpy bool) at one budget."""
    found = baseline_masks(_weight(name, layer), k=k, filter_rank=filter_rank, svd=svd, seed=SEED)
    return {key: m.numpy() for key, m in found.items()}


def pairwise(masks: dict[str, np.ndarray]) -> pd.DataFrame:
    return pairwise_jaccard({key: torch.from_numpy(m) for key, m in masks.items()})


def _powers_of_two(top: int) -> list[int]:
    values = [2**i for i in range(top.bit_length()) if 2**i <= top]
    return values if values[-1] == top else values + [top]


@st.cache_data(max_entries=32, show_spinner=False)
def sweep_filter_rank(name: str, layer: str, k: int, svd: str) -> pd.DataFrame:
    w = _weight(name, layer)
    return overlap_vs_filter_rank(w, k=k, filter_ranks=_powers_of_two(min(w.shape)), svd=svd, seed=SEED)


@st.cache_data(max_entries=32, show_spinner=False)
def sweep_budget(name: str, layer: str, filter_rank: int, svd: str) -> pd.DataFrame:
    w = _weight(name, layer)
    return overlap_vs_budget(w, filter_rank=filter_rank, lora_ranks=_powers_of_two(min(w.shape)), svd=svd, seed=SEED)


# --- whole-model analysis (slow: computed with a progress bar, then memoized) ------------

_ANALYSIS_LOCK = threading.Lock()


@st.cache_resource(show_spinner=False)
def _analysis_store() -> dict:
    # st.cache_data cannot drive a progress bar created outside the cached function, so the
    # whole-model tables live in this process-wide dict keyed on hashable arguments.
    return {}


def cached_model_analysis(name: str, lora_rank: int, filter_rank: int, svd: str):
    """The analysis for these settings if it was already computed, else None."""
    return _analysis_store().get((name, lora_rank, filter_rank, svd))


def model_analysis(name: str, lora_rank: int, filter_rank: int, svd: str,
                   progress: Callable[[int, int, str], None] | None = None):
    """analyze_model over the transformer blocks' linear layers, memoized per settings."""
    key = (name, lora_rank, filter_rank, svd)
    store = _analysis_store()
    with _ANALYSIS_LOCK:
        if key not in store:
            result = analyze_model(load_cached_model(name), lora_rank=lora_rank, filter_rank=filter_rank,
                                   svd=svd, blocks_only=True, progress=progress, seed=SEED)
            store[key] = (result.table, list(result.notes))
    return store[key]


def torch_mask(mask: np.ndarray) -> torch.Tensor:
    """A cached numpy mask as a torch bool tensor, for lift_core's overlap functions."""
    return torch.from_numpy(np.ascontiguousarray(mask))
