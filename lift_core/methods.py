"""The fine-tuning methods LIFT is compared against, set up by one harness.

Every method trains the same matrices (each linear layer inside the transformer blocks;
lm_head, embeddings, norms and biases stay frozen) with the same update rule (SparseAdamW:
masked groups for the sparse methods, dense groups for full fine-tuning and LoRA), and the
sparse methods and LoRA get the same budget per matrix, k = min((m + n) * lora_rank, m * n):
where (m + n) * lora_rank exceeds m * n a sparse method trains the whole matrix and LoRA's
rank is clipped to m * n // (m + n). So the methods differ only in *which* numbers they train.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import torch
from torch import nn

from lift_core.errors import LiftError
from lift_core.masks import budget_is_clipped, lora_budget
from lift_core.models import list_linear_layers

log = logging.getLogger(__name__)

SPARSE_METHODS = ("lift", "magnitude", "random", "lift_smallest")
METHODS = ("lift", "full", "lora", "magnitude", "random", "lift_smallest")

# Per-method learning rates for the built-in model: each the best target accuracy of one
# shared grid (3e-4 .. 3e-2, sample_runs/lr_sweep.sh, table in docs/training.md).
# lift_smallest was not swept and takes lift's. As in the paper, the sparse methods and
# LoRA want a higher rate than full fine-tuning, which moves every entry (here 10x).
DEFAULT_LRS = {
    "lift": 1e-2,
    "magnitude": 1e-2,
    "random": 1e-2,
    "lift_smallest": 1e-2,
    "lora": 1e-2,
    "full": 1e-3,
}

METHOD_DESCRIPTIONS = {
    "lift": "principal weights: the k largest entries of the rank-r approximation |W_r|",
    "full": "full fine-tuning of every block linear (AdamW)",
    "lora": "LoRA adapters (peft) of rank lora_rank on every block linear",
    "magnitude": "the k largest |W| entries (plain magnitude)",
    "random": "k uniformly random entries",
    "lift_smallest": "the k smallest |W_r| entries (the authors' released-code default)",
}

ADAM_BETAS = (0.9, 0.95)
ADAM_EPS = 1e-6


@dataclass
class MethodSetup:
    """What a method hands the training loop: the model to train and its optimizer."""

    model: nn.Module  # the model to call (peft-wrapped for LoRA)
    optimizer: torch.optim.Optimizer  # a SparseAdamW
    trainable_params: int  # numbers actually trained (masked entries, LoRA A+B, or all)
    layers: list[dict] = field(default_factory=list)  # per-matrix shape, budget k, clipping

    @property
    def clipped_layers(self) -> list[str]:
        """Matrices whose budget (m+n)*lora_rank exceeded m*n and was clipped (to m*n
        entries, or for LoRA to rank m*n // (m+n))."""
        return clipped_layer_names(self.layers)


def clipped_layer_names(rows: list[dict]) -> list[str]:
    """Names of the budget rows (see :func:`budget_rows`) whose budget was clipped."""
    return [row["layer"] for row in rows if row["clipped"]]


def check_method(method: str) -> str:
    """Return ``method`` or raise LiftError listing the allowed ones."""
    if method not in METHODS:
        raise LiftError(f"unknown method {method!r} (allowed: {', '.join(METHODS)})")
    return method


def default_lr(method: str) -> float:
    """The learning rate a method uses when none is given."""
    return DEFAULT_LRS[check_method(method)]


def block_linear_names(model: nn.Module) -> list[str]:
    """Module names of every linear layer inside the transformer blocks."""
    return [layer.name for layer in list_linear_layers(model, blocks_only=True)]


def lora_rank_within_budget(shape: tuple[int, int], lora_rank: int) -> int:
    """The LoRA rank an (m, n) matrix gets: lora_rank, clipped so (m+n)*rank <= m*n.

    LoRA trains (m+n)*rank numbers; past m*n // (m+n) it would train more numbers than the
    matrix has, which no budget-matched comparison (or memory) allows.
    """
    m, n = shape
    return max(1, min(lora_rank, m * n // (m + n)))


def budget_rows(model: nn.Module, method: str, lora_rank: int) -> list[dict]:
    """One row per block linear: layer, role, shape, k trained numbers, density, clipped.

    LoRA rows also carry the layer's ``lora_rank`` (after clipping). Works on a model on
    the meta device, so memory can be estimated before any weight is allocated.
    """
    rows = []
    for layer in list_linear_layers(model, blocks_only=True):
        row = {"layer": layer.name, "role": layer.role, "shape": list(layer.shape)}
        if method == "full":
            k, clipped = layer.numel, False
        elif method == "lora":
            row["lora_rank"] = lora_rank_within_budget(layer.shape, lora_rank)
            k, clipped = sum(layer.shape) * row["lora_rank"], row["lora_rank"] < lora_rank
        else:
            k = lora_budget(layer.shape, lora_rank)
            clipped = budget_is_clipped(layer.shape, lora_rank)
        rows.append({**row, "k": k, "density": k / layer.numel, "clipped": clipped})
    return rows


def _warn_if_clipped(rows: list[dict], method: str, lora_rank: int) -> None:
    clipped = clipped_layer_names(rows)
    if not clipped:
        return
    if method == "lora":
        ranks = sorted({row["lora_rank"] for row in rows if row["clipped"]})
        log.warning("LoRA rank %d exceeds m*n/(m+n) in %d of %d layers: their rank was "
                    "clipped to %s, so no layer trains more numbers than it has",
                    lora_rank, len(clipped), len(rows), ", ".join(map(str, ranks)))
    else:
        log.warning("budget rank %d gives (m+n)*rank > m*n in %d of %d layers: %s trains "
                    "those whole matrices", lora_rank, len(clipped), len(rows), method)


def check_filter_rank_fits(model: nn.Module, method: str, filter_rank: int) -> None:
    """Raise LiftError when a LIFT-style mask's filter rank exceeds some matrix's rank."""
    if method not in ("lift", "lift_smallest"):
        return
    for layer in list_linear_layers(model, blocks_only=True):
        if filter_rank > min(layer.shape):
            raise LiftError(
                f"filter rank {filter_rank} exceeds the rank of {layer.name} "
                f"({layer.shape[0]}x{layer.shape[1]}); use at most {min(layer.shape)}"
            )


def setup_method(
    model: nn.Module,
    method: str,
    *,
    lr: float,
    lora_rank: int,
    filter_rank: int,
    update_interval: int,
    svd: str = "exact",
    seed: int = 0,
) -> MethodSetup:
    """Freeze ``model`` and make the chosen method's trainable set and optimizer.

    The model must already be on its training device: masks and moments are created where
    the weights live.

    Args:
        model: a causal LM (not yet wrapped).
        method: one of :data:`METHODS`.
        lr: peak learning rate (the schedule scales it).
        lora_rank: LoRA rank, and the budget rank of the sparse methods.
        filter_rank: rank r of W_r for lift / lift_smallest.
        update_interval: optimizer steps between mask refreshes.
        svd: "exact" or "randomized" for the LIFT masks.
        seed: seeds the random mask (and the randomized SVD's sketch).

    Returns:
        MethodSetup with the (possibly peft-wrapped) model and its SparseAdamW.
    """
    from lift_core.optim import SparseAdamW

    check_method(method)
    check_filter_rank_fits(model, method, filter_rank)
    rows = budget_rows(model, method, lora_rank)
    _warn_if_clipped(rows, method, lora_rank)
    names = [row["layer"] for row in rows]
    model.requires_grad_(False)
    if method == "lora":
        transposed = any(layer.transposed for layer in list_linear_layers(model, blocks_only=True))
        ranks = {row["layer"]: row["lora_rank"] for row in rows}
        model, params = _wrap_lora(model, ranks, lora_rank, fan_in_fan_out=transposed)
        groups, trainable = [{"params": params}], sum(p.numel() for p in params)
    else:
        weights = [model.get_submodule(name).weight.requires_grad_(True) for name in names]
        mask_settings = {"mask": method, "lora_rank": lora_rank, "filter_rank": filter_rank,
                         "update_interval": update_interval, "svd": svd, "seed": seed}
        groups = [{"params": weights}] if method == "full" else [
            # One group per matrix, named, so refresh events can say which matrix churned.
            {"params": [w], "param_names": [name], **mask_settings}
            for w, name in zip(weights, names)
        ]
        trainable = sum(row["k"] for row in rows)
    # Sparse methods gather their masked gradients during backward and free the dense
    # ones: part of LIFT's memory saving. Dense methods need the full gradients anyway.
    optimizer = SparseAdamW(groups, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=0.0,
                            free_dense_grads=method in SPARSE_METHODS)
    return MethodSetup(model, optimizer, trainable, rows)


def _wrap_lora(model: nn.Module, ranks: dict[str, int], lora_rank: int, *, fan_in_fan_out: bool):
    """peft LoRA on exactly the block linears (full names, so nothing outside matches).

    ``ranks`` maps each layer to its rank; layers below ``lora_rank`` (clipped to the budget)
    get their own rank through peft's rank_pattern, and every layer keeps alpha = 2 * rank.
    ``fan_in_fan_out`` is True for GPT-2 style Conv1D layers, which store weights (in, out).
    """
    from peft import LoraConfig, get_peft_model

    # peft reads pattern keys as regular expressions: escape the dots of module names.
    clipped = {re.escape(name): rank for name, rank in ranks.items() if rank != lora_rank}
    config = LoraConfig(
        r=lora_rank, lora_alpha=2 * lora_rank, target_modules=list(ranks), lora_dropout=0.0,
        bias="none", fan_in_fan_out=fan_in_fan_out, rank_pattern=clipped,
        alpha_pattern={key: 2 * rank for key, rank in clipped.items()},
    )
    wrapped = get_peft_model(model, config)
    params = [p for n, p in wrapped.named_parameters() if p.requires_grad]
    # peft freezes the base model; only lora_A / lora_B may remain trainable.
    stray = [n for n, p in wrapped.named_parameters() if p.requires_grad and "lora_" not in n]
    if stray:  # pragma: no cover - a peft behaviour change would land here
        raise RuntimeError(f"peft left non-LoRA parameters trainable: {stray[:3]}")
    return wrapped, params
