"""Whole-model principal-weight analysis: one DataFrame row per linear layer.

For every linear layer: its shape, the LoRA-matched budget k, spectral summaries (stable
and effective rank, energy kept at the filter rank, Marchenko–Pastur edge and how many
singular values stand above it) and how LIFT's mask overlaps the magnitude and random
masks at the same budget. The ``analyze`` CLI writes this table; the app plots it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd
import torch
from torch import nn

from lift_core.analysis.overlap import containment, jaccard
from lift_core.checks import as_float_matrix, check_filter_rank, check_filter_rank_fits, check_svd_mode
from lift_core.lowrank.masks import budget_is_clipped, lora_budget, magnitude_mask, random_mask
from lift_core.lowrank.scoring import PrincipalScorer
from lift_core.lowrank.spectra import effective_rank, energy_at_rank, mp_bulk_edge, stable_rank
from lift_core.models.loading import LinearLayer, layer_weight, list_linear_layers

Progress = Callable[[int, int, str], None]  # (layers done, layers total, current layer name)


@dataclass
class AnalysisResult:
    """The per-layer table, optionally the LIFT masks, and notes worth telling the user."""

    table: pd.DataFrame
    masks: dict[str, torch.Tensor] = field(default_factory=dict)  # layer name -> (out, in) bool
    notes: list[str] = field(default_factory=list)


def analyze_layer(
    weight: torch.Tensor, *, lora_rank: int, filter_rank: int, svd: str = "exact", seed: int = 0
) -> tuple[dict, torch.Tensor]:
    """Spectral and overlap numbers for one (out, in) matrix, and its LIFT mask.

    One :class:`PrincipalScorer` gives both the mask and the spectrum: in exact mode that
    is one SVD per layer.
    """
    w = as_float_matrix(weight)
    scorer = PrincipalScorer(w, svd=svd, generator=_seeded(w.device, seed))
    m, n = scorer.shape
    check_filter_rank((m, n), filter_rank)
    k = lora_budget((m, n), lora_rank)
    lift = scorer.mask(filter_rank, k)
    s = scorer.singular_values()
    magnitude = magnitude_mask(w, k=k)
    rand = random_mask(w, k=k, generator=_seeded(w.device, seed))
    edge = mp_bulk_edge((m, n), float(w.std()))
    row = {
        "k": k,
        "density": k / (m * n),
        "budget_clipped": budget_is_clipped((m, n), lora_rank),
        "filter_rank": filter_rank,
        "stable_rank": stable_rank(s),
        "effective_rank": effective_rank(s),
        "energy_at_r": energy_at_rank(s, filter_rank),
        "mp_edge": edge,
        "above_mp_edge": int((s > edge).sum()),
        "jaccard_lift_vs_magnitude": jaccard(lift, magnitude),
        "lift_in_magnitude": containment(lift, magnitude),
        "jaccard_lift_vs_random": jaccard(lift, rand),
    }
    return row, lift


def analyze_model(
    model: nn.Module,
    *,
    lora_rank: int,
    filter_rank: int,
    svd: str = "exact",
    blocks_only: bool = False,
    progress: Progress | None = None,
    keep_masks: bool = False,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> AnalysisResult:
    """Analyze every linear layer of ``model``.

    Args:
        model: a loaded torch model (see lift_core.models.loading.load_model).
        lora_rank: budget as a LoRA-equivalent rank: k = min((m+n)*lora_rank, m*n).
        filter_rank: r of the rank-r approximation that scores entries.
        svd: "exact" or "randomized".
        blocks_only: skip linears outside the transformer blocks (lm_head, pooler, ...).
        progress: called after each layer with (done, total, layer name).
        keep_masks: also return the LIFT masks (CPU bool tensors).
        seed: seeds the random baseline and the randomized SVD.
        device: where to compute (default: where the weights are).

    Returns:
        AnalysisResult with a DataFrame of one row per layer.
    """
    check_svd_mode(svd)
    layers = list_linear_layers(model, blocks_only=blocks_only)
    check_filter_rank_fits({layer.name: layer.shape for layer in layers}, filter_rank)
    result = AnalysisResult(table=pd.DataFrame())
    rows = []
    for done, layer in enumerate(layers, start=1):
        started = time.perf_counter()
        weight = layer_weight(model, layer)
        if device is not None:
            weight = weight.to(device)
        row, mask = analyze_layer(weight, lora_rank=lora_rank, filter_rank=filter_rank, svd=svd, seed=seed)
        rows.append(_describe(layer) | row | {"seconds": time.perf_counter() - started})
        if keep_masks:
            result.masks[layer.name] = mask.cpu()
        if progress is not None:
            progress(done, len(layers), layer.name)
    result.table = pd.DataFrame(rows).astype({"block": "Int64"})  # None outside blocks
    clipped = result.table.loc[result.table.budget_clipped, "layer"].tolist()
    if clipped:
        result.notes.append(
            f"budget rank {lora_rank} asks for more entries than {len(clipped)} layer(s) have; "
            f"k was clipped to the whole matrix there ({', '.join(clipped[:3])}"
            + (", ..." if len(clipped) > 3 else "") + ")"
        )
    return result


def _describe(layer: LinearLayer) -> dict:
    return {
        "layer": layer.name, "block": layer.block, "role": layer.role,
        "out": layer.shape[0], "in": layer.shape[1], "params": layer.numel,
    }


def _seeded(device: torch.device, seed: int) -> torch.Generator:
    # A fresh generator per use: the random baseline and the randomized sketch each start
    # from the seed, so either can change without moving the other.
    return torch.Generator(device=device).manual_seed(seed)


def save_masks(path: str, masks: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write masks to a safetensors file (bool tensors keyed by layer name)."""
    from safetensors.torch import save_file

    save_file({name: m.contiguous() for name, m in masks.items()}, path,
              metadata={k: str(v) for k, v in metadata.items()})
