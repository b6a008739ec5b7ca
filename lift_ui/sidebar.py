"""The explorer's shared sidebar and the session state that survives page switches.

Pages call :func:`explorer_sidebar` and get a :class:`Selection` (model, layer, ranks,
budget, SVD mode) or None when no model could be loaded. Choices survive page switches:
each widget has a private key ``_w_<name>`` that is restored from, and copied back to, a
persisted key ``lift_<name>`` (Streamlit drops a widget's state when a page that does not
draw it runs). The models and per-layer results it reads are cached in :mod:`lift_ui.caches`.
The guard that sends a run through app.py and torch's thread count live in the torch-free
:mod:`lift_ui.navigation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import streamlit as st

from lift_core.errors import LiftError
from lift_core.lowrank import masks as lift_masks
from lift_core.models.loading import DEFAULT_EXPLORE_MODEL, EMBEDDED_MODELS, LinearLayer, allowed_model_roots
from lift_ui.caches import load_cached_model, model_facts, model_layers
from lift_ui.navigation import require_app_navigation

OTHER_MODEL = "other…"
BUDGET_MODES = ("LoRA rank", "density %")
SVD_LABELS = {"exact": "exact", "randomized": "fast (randomized)"}
DEFAULTS = {
    "model": DEFAULT_EXPLORE_MODEL, "model_text": "", "block": 0, "role": "q", "filter_rank": 8,
    "budget_mode": BUDGET_MODES[0], "lora_rank": 8, "density_pct": 5.0, "svd": "exact",
}


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
