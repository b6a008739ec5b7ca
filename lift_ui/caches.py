"""Every cached computation of the explorer pages, keyed on hashable arguments only.

Models are cached per process (``st.cache_resource``); per-layer results (spectra, |W|,
|W_r|, masks, overlap sweeps) on the model name, layer name, ranks, k and SVD mode, never on
tensors, so a layer switch is a cache lookup. The whole-model analysis is computed once per
setting and shared by every session (a lock keeps two sessions from computing it twice).
"""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np
import pandas as pd
import streamlit as st
import torch

from lift_core.analysis.layers import analyze_model
from lift_core.analysis.overlap import (
    baseline_masks,
    overlap_vs_budget,
    overlap_vs_filter_rank,
    pairwise_jaccard,
)
from lift_core.lowrank.spectra import cumulative_energy, summarize_spectrum
from lift_core.lowrank.svd import low_rank_approximation
from lift_core.models.loading import (
    LinearLayer,
    check_fits_in_memory,
    is_causal_lm,
    layer_weight,
    layers_table,
    list_linear_layers,
    load_config,
    load_model,
)

SEED = 0  # of the random mask and the shuffled spectrum: every page shows the same ones


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


# --- what changed (ΔW) -------------------------------------------------------------------


def _files_signature(dirs) -> tuple:
    # A model folder saved again under the same name must not be served from the cache.
    from pathlib import Path

    return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size)
                 for d in dirs for f in sorted(Path(d).glob("*.safetensors")))


@st.cache_data(max_entries=8, show_spinner=False)
def _delta(pairs: tuple, blocks_only: bool, signature: tuple):
    from lift_core.analysis.delta import pairs_delta_table

    result = pairs_delta_table(list(pairs), blocks_only=blocks_only)
    return result.table, result.spectra


def delta_tables(pairs: list, blocks_only: bool = True):
    """(long per-layer ΔW table, spectra) for ModelPairs, cached on the pairs and their files."""
    return _delta(tuple(pairs), blocks_only, _files_signature(p.tuned for p in pairs))


@st.cache_data(max_entries=8, show_spinner=False)
def _generations(pair, n: int, signature: tuple):
    from lift_core.analysis.delta import load_tuned
    from lift_core.analysis.generations import before_after, run_prompts
    from lift_core.jsonio import read_json_object
    from lift_core.models.loading import load_tokenizer

    config = (read_json_object(pair.run_dir / "config.json") or {}) if pair.run_dir else {}
    base = load_cached_model(pair.base)
    return before_after(base, load_tuned(pair.tuned, base), load_tokenizer(pair.base),
                        run_prompts(config, n))


def generations(pair, n: int):
    """The base's and the tuned model's answers to n target and n source prompts (cached)."""
    return _generations(pair, n, _files_signature([pair.tuned]))


# --- noise sensitivity (slow: computed on a button press with a progress bar) -----------


def cached_sensitivity(name: str, config):
    """The sensitivity result for this model and SensitivityConfig if already computed, else None."""
    return _analysis_store().get(("sensitivity", name, config))


def sensitivity(name: str, config, progress: Callable[[int, int, str], None] | None = None):
    """noise_sensitivity on a private copy of the model, memoized per model and config: the
    test writes noise into the weights, and the shared model serves every other page."""
    import copy

    from lift_core.analysis.sensitivity import noise_sensitivity
    from lift_core.models.loading import load_tokenizer

    key = ("sensitivity", name, config)
    store = _analysis_store()
    with _ANALYSIS_LOCK:
        if key not in store:
            model = copy.deepcopy(load_cached_model(name))
            store[key] = noise_sensitivity(model, load_tokenizer(name), config, progress=progress)
    return store[key]
