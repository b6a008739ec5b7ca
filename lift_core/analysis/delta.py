"""What fine-tuning changed: ΔW = W_tuned - W_base for every block linear, measured.

The paper's analysis of *how* a method changes the weights, as one DataFrame row per layer:
how large ΔW is (relative Frobenius norm, largest entry), where its energy sits (on the
base's LIFT principal weights at the run's filter rank and budget, and on its magnitude
mask), how many directions it spans (stable and effective rank of ΔW, next to the LoRA
rank), and how far it turns the base's top-r singular subspaces (principal angles between
those of W and W + ΔW) and its spectral norm. Masks come from
:class:`lift_core.lowrank.scoring.PrincipalScorer`, ranks from :mod:`lift_core.lowrank.spectra`.
A run folder is resolved to its base (config.json's ``model``) and its saved model
(``RUN_DIR/model``, or its base with ``RUN_DIR/adapter`` merged in); :mod:`lift_core.analysis.generations` gives the before/after answers.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from lift_core.errors import LiftError
from lift_core.lowrank.masks import lora_budget, magnitude_mask
from lift_core.lowrank.scoring import PrincipalScorer
from lift_core.lowrank.spectra import effective_rank, energy_at_rank, singular_values, stable_rank
from lift_core.lowrank.svd import exact_factors
from lift_core.models.loading import layer_weight, list_linear_layers

SAVED_MODEL_DIR = "model"  # a run's fine-tuned model (``finetune --save``)
SAVED_ADAPTER_DIR = "adapter"  # a LoRA-family run's peft adapter (saved without --merge)
COMPARE_FILE = "compare.json"
# Columns of the per-layer table, in order (the CSV's header).
DELTA_COLUMNS = [
    "layer", "block", "role", "out", "in", "filter_rank", "lora_rank", "k",
    "rel_delta_fro", "max_abs_delta", "changed_fraction",
    "energy_on_lift_mask", "energy_on_magnitude_mask", "mask_share",
    "delta_stable_rank", "delta_effective_rank", "delta_energy_at_lora_rank",
    "left_angle_max_deg", "left_cos2_mean", "right_angle_max_deg", "right_cos2_mean",
    "spectral_norm_change",
]


@dataclass
class DeltaResult:
    """The per-layer table and, per layer, ΔW's singular values (descending, numpy)."""

    table: object  # pandas.DataFrame with DELTA_COLUMNS
    spectra: dict[str, object] = field(default_factory=dict)


def _energy_share(delta_sq: torch.Tensor, total: float, mask: torch.Tensor) -> float:
    return float(delta_sq[mask].sum()) / total if total > 0 else float("nan")


def _principal_angles(base_basis: torch.Tensor, tuned_basis: torch.Tensor) -> tuple[float, float]:
    """(largest angle in degrees, mean cos²) between two subspaces given orthonormal columns.

    The cosines of the principal angles are the singular values of base_basisᵀ tuned_basis.
    """
    cosines = singular_values(base_basis.T @ tuned_basis).clamp(max=1.0).double()
    largest = math.degrees(math.acos(float(cosines.min())))
    return largest, float((cosines**2).mean())


def layer_delta(base: torch.Tensor, tuned: torch.Tensor, *, filter_rank: int,
                lora_rank: int) -> tuple[dict, torch.Tensor]:
    """The measures of one matrix's change; returns (row, ΔW's singular values).

    Args:
        base: the base model's weight (out, in).
        tuned: the tuned model's weight of the same shape.
        filter_rank: r of the LIFT mask and of the compared singular subspaces.
        lora_rank: the budget k = min((m+n)·R, m·n) of both masks, and the rank ΔW is set against.
    """
    if base.shape != tuned.shape:
        raise LiftError(f"shapes differ: base {tuple(base.shape)}, tuned {tuple(tuned.shape)}")
    w, w_tuned = base.detach().float(), tuned.detach().float()
    delta = w_tuned - w  # (out, in)
    shape = tuple(w.shape)
    k = lora_budget(shape, lora_rank)
    scorer = PrincipalScorer(w)
    lift = scorer.mask(filter_rank, k)
    magnitude = magnitude_mask(w, k=k)
    delta_sq = delta.double() ** 2
    total = float(delta_sq.sum())
    s_delta = singular_values(delta)
    s_base = scorer.singular_values()
    u, _, vh = scorer.factors()  # the SVD the LIFT mask was scored from: not computed again
    u2, s_tuned, vh2 = exact_factors(w_tuned)
    r = filter_rank
    left = _principal_angles(u[:, :r], u2[:, :r])
    right = _principal_angles(vh[:r].T, vh2[:r].T)
    row = {
        "filter_rank": r, "lora_rank": lora_rank, "k": k,
        "rel_delta_fro": math.sqrt(total) / max(float(w.norm()), 1e-30),
        "max_abs_delta": float(delta.abs().max()),
        "changed_fraction": float((delta != 0).float().mean()),
        "energy_on_lift_mask": _energy_share(delta_sq, total, lift),
        "energy_on_magnitude_mask": _energy_share(delta_sq, total, magnitude),
        "mask_share": k / delta.numel(),
        "delta_stable_rank": stable_rank(s_delta),
        "delta_effective_rank": effective_rank(s_delta),
        "delta_energy_at_lora_rank": (energy_at_rank(s_delta, min(lora_rank, len(s_delta)))
                                      if total > 0 else float("nan")),
        "left_angle_max_deg": left[0], "left_cos2_mean": left[1],
        "right_angle_max_deg": right[0], "right_cos2_mean": right[1],
        "spectral_norm_change": float(s_tuned[0] - s_base[0]) / max(float(s_base[0]), 1e-30),
    }
    return row, s_delta


def delta_table(base_model, tuned_model, *, filter_rank: int, lora_rank: int,
                blocks_only: bool = True,
                progress: Callable[[int, int, str], None] | None = None) -> DeltaResult:
    """One row per linear layer of ``base_model`` (block linears by default) against ``tuned_model``.

    Raises:
        LiftError: when the tuned model lacks a layer or a shape differs (not the same architecture).
    """
    import pandas as pd

    layers = list_linear_layers(base_model, blocks_only=blocks_only)
    if not layers:
        raise LiftError("the base model has no linear layers to compare")
    # Names from the same listing, so expert matrices ('<param>[e]') are matched too.
    tuned_layers = {layer.name for layer in list_linear_layers(tuned_model, blocks_only=blocks_only)}
    rows, spectra = [], {}
    for i, layer in enumerate(layers):
        if layer.name not in tuned_layers:
            raise LiftError(f"the tuned model has no layer {layer.name}: not the base's architecture")
        row, s_delta = layer_delta(layer_weight(base_model, layer), layer_weight(tuned_model, layer.name),
                                   filter_rank=filter_rank, lora_rank=lora_rank)
        rows.append({"layer": layer.name, "block": layer.block, "role": layer.role,
                     "out": layer.shape[0], "in": layer.shape[1], **row})
        spectra[layer.name] = s_delta.numpy()
        if progress is not None:
            progress(i + 1, len(layers), layer.name)
    return DeltaResult(pd.DataFrame(rows, columns=DELTA_COLUMNS), spectra)


@dataclass(frozen=True)
class ModelPair:
    """A base and a tuned model to compare, with the ranks to measure at."""

    label: str  # the run's folder name, or "tuned"
    method: str  # the run's method, or "" for two model directories
    base: str  # alias, directory or hub id
    tuned: str  # a model directory, or a peft adapter directory (merged into the base)
    filter_rank: int
    lora_rank: int
    run_dir: Path | None = None


def saved_model_dir(run_dir: str | os.PathLike) -> Path | None:
    """The run's saved model directory, else its adapter directory, else None (saved nothing)."""
    run_dir = Path(run_dir).expanduser()
    model, adapter = run_dir / SAVED_MODEL_DIR, run_dir / SAVED_ADAPTER_DIR
    if (model / "config.json").is_file():
        return model
    return adapter if (adapter / "adapter_config.json").is_file() else None


def load_tuned(tuned: str | os.PathLike, base_model, loader=None):
    """The tuned model: a model directory loaded, or an adapter merged into a copy of the base."""
    import copy

    if not (Path(tuned) / "adapter_config.json").is_file():
        from lift_core.models.loading import load_model

        return (loader or (lambda name: load_model(name, kind="causal")))(str(tuned))
    from peft import PeftModel

    try:
        merged = PeftModel.from_pretrained(copy.deepcopy(base_model), str(tuned)).merge_and_unload()
    except Exception as exc:  # a corrupt or foreign adapter: say which folder, in one line
        raise LiftError(f"cannot load the adapter in {tuned}: {str(exc).splitlines()[0]}") from exc
    return merged.eval()


def run_pair(run_dir: str | os.PathLike, *, filter_rank: int | None = None,
             lora_rank: int | None = None) -> ModelPair:
    """The base and saved model of a run folder; ranks from its config unless given."""
    from lift_core.jsonio import read_json_object

    path = Path(run_dir).expanduser()
    config = read_json_object(path / "config.json")
    if not config or "model" not in config:
        raise LiftError(f"{path} is not a run folder (no config.json naming its base model)")
    tuned = saved_model_dir(path)
    if tuned is None:
        raise LiftError(f"{path} has no saved model ({SAVED_MODEL_DIR}/ or {SAVED_ADAPTER_DIR}/): "
                        "run finetune with --save")
    return ModelPair(label=path.name, method=str(config.get("method", "")), base=str(config["model"]),
                     tuned=str(tuned), filter_rank=int(filter_rank or config.get("filter_rank") or 4),
                     lora_rank=int(lora_rank or config.get("lora_rank") or 4), run_dir=path)


def expand_run_dirs(paths: list[str | os.PathLike]) -> list[Path]:
    """Run folders from a list of run folders and comparison folders (their runs with a saved model)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.is_dir():
            raise LiftError(f"{path} is not a folder")
        if (path / "config.json").is_file():
            found.append(path)
            continue
        inner = sorted(p for p in path.iterdir() if saved_model_dir(p) is not None)
        if not inner:
            raise LiftError(f"{path} is neither a run folder nor a folder of runs with saved models")
        found += inner
    return found


def pairs_delta_table(pairs: list[ModelPair], *, blocks_only: bool = True, loader=None,
                      progress: Callable[[str], None] | None = None) -> DeltaResult:
    """The per-layer tables of several pairs in one long table with ``run`` and ``method`` columns.

    Spectra are keyed ``"<run>/<layer>"``. ``loader(name) -> model`` defaults to
    :func:`lift_core.models.loading.load_model`; a base shared by several runs loads once.
    """
    import pandas as pd

    from lift_core.models.loading import load_model

    loader = loader or (lambda name: load_model(name, kind="causal"))
    bases: dict[str, object] = {}
    tables, spectra = [], {}
    for pair in pairs:
        if progress is not None:
            progress(pair.label)
        if pair.base not in bases:
            bases[pair.base] = loader(pair.base)
        tuned = load_tuned(pair.tuned, bases[pair.base], loader)
        result = delta_table(bases[pair.base], tuned, filter_rank=pair.filter_rank,
                             lora_rank=pair.lora_rank, blocks_only=blocks_only)
        tables.append(result.table.assign(run=pair.label, method=pair.method))
        spectra.update({f"{pair.label}/{name}": s for name, s in result.spectra.items()})
    table = pd.concat(tables, ignore_index=True)
    return DeltaResult(table[["run", "method", *DELTA_COLUMNS]], spectra)


def method_summary(table) -> object:
    """Per run: the medians over layers of the headline measures (what the CLI prints)."""
    columns = ["rel_delta_fro", "max_abs_delta", "delta_effective_rank", "delta_stable_rank",
               "energy_on_lift_mask", "energy_on_magnitude_mask", "left_angle_max_deg",
               "spectral_norm_change"]
    keys = [c for c in ("run", "method") if c in table]
    grouped = table.groupby(keys, sort=False) if keys else table.assign(run="tuned").groupby("run")
    return grouped[columns + ["lora_rank"]].median().reset_index()
