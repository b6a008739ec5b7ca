"""The fine-tuning methods LIFT is compared against, set up by one harness.

Every method trains the same matrices (each linear layer inside the transformer blocks;
lm_head, embeddings, norms and biases stay frozen) with the same update rule (SparseAdamW:
masked groups for the sparse methods, dense groups for full fine-tuning and the LoRA-family
adapters), and the sparse methods and LoRA get the same budget per matrix,
k = min((m + n) * lora_rank, m * n): where (m + n) * lora_rank exceeds m * n a sparse method
trains the whole matrix and the adapters' rank is clipped to m * n // (m + n). So the
methods differ only in *which* numbers they train. What each method is (its mask strategy
or adapter settings) is read from :mod:`lift_core.train.registry`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from lift_core import checks
from lift_core.errors import LiftError
from lift_core.lowrank.masks import MASK_STRATEGIES, budget_is_clipped, lora_budget
from lift_core.models.loading import layer_parameter, list_linear_layers
# check_method and default_lr are re-exported: callers set methods up through this module.
from lift_core.train.registry import (  # noqa: F401
    METHOD_REGISTRY,
    AdapterSettings,
    check_method,
    default_lr,
    get_method,
    method_names,
)

log = logging.getLogger(__name__)

# Snapshots of the registry for callers that read them once; code that must see a method
# registered later (the CLI parser, the app's lists) calls method_names() instead.
METHODS = method_names()
SPARSE_METHODS = method_names("sparse")
DEFAULT_LRS = {name: method.default_lr for name, method in METHOD_REGISTRY.items()}

ADAM_BETAS = (0.9, 0.95)
ADAM_EPS = 1e-6


@dataclass
class MethodSetup:
    """What a method hands the training loop: the model to train and its optimizer."""

    model: nn.Module  # the model to call (peft-wrapped for the LoRA family)
    optimizer: torch.optim.Optimizer  # a SparseAdamW
    trainable_params: int  # numbers actually trained (masked entries, adapters, or all)
    layers: list[dict] = field(default_factory=list)  # per-matrix shape, budget k, clipping

    @property
    def clipped_layers(self) -> list[str]:
        """Matrices whose budget (m+n)*lora_rank exceeded m*n and was clipped (to m*n
        entries, or for the LoRA family to rank m*n // (m+n))."""
        return clipped_layer_names(self.layers)

    def trainable_tensors(self) -> list[torch.Tensor]:
        """The tensors the optimizer trains (whole weights for the sparse methods)."""
        return [p for group in self.optimizer.param_groups for p in group["params"]]


def clipped_layer_names(rows: list[dict]) -> list[str]:
    """Names of the budget rows (see :func:`budget_rows`) whose budget was clipped."""
    return [row["layer"] for row in rows if row["clipped"]]


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

    Adapter (LoRA-family) rows also carry the layer's ``lora_rank`` (after clipping); DoRA's
    k includes its magnitude vector. Works on a model on the meta device, so memory can be
    estimated before any weight is allocated.
    """
    spec = get_method(method)
    rows = []
    for layer in list_linear_layers(model, blocks_only=True):
        if spec.kind == "adapter" and layer.expert is not None:
            continue  # peft adapts modules, not one expert of a 3-D parameter
        row = {"layer": layer.name, "role": layer.role, "shape": list(layer.shape)}
        if spec.kind == "dense":
            k, clipped = layer.numel, False
        elif spec.kind == "adapter":
            row["lora_rank"] = lora_rank_within_budget(layer.shape, lora_rank)
            k = sum(layer.shape) * row["lora_rank"] + spec.adapter.extra_per_layer(layer.shape)
            clipped = row["lora_rank"] < lora_rank
        else:
            k = lora_budget(layer.shape, lora_rank)
            clipped = budget_is_clipped(layer.shape, lora_rank)
        rows.append({**row, "k": k, "density": k / layer.numel, "clipped": clipped})
    return rows


def _warn_if_clipped(rows: list[dict], method: str, lora_rank: int) -> None:
    clipped = clipped_layer_names(rows)
    if not clipped:
        return
    if get_method(method).kind == "adapter":
        ranks = sorted({row["lora_rank"] for row in rows if row["clipped"]})
        log.warning("LoRA rank %d exceeds m*n/(m+n) in %d of %d layers: %s's rank was "
                    "clipped there to %s, so no layer trains more numbers than it has",
                    lora_rank, len(clipped), len(rows), method, ", ".join(map(str, ranks)))
    else:
        log.warning("budget rank %d gives (m+n)*rank > m*n in %d of %d layers: %s trains "
                    "those whole matrices", lora_rank, len(clipped), len(rows), method)


def _warn_if_experts_left_out(model: nn.Module, method: str) -> None:
    experts = [l for l in list_linear_layers(model, blocks_only=True) if l.expert is not None]
    if experts:
        log.warning("%s does not adapt the %d expert matrices of this mixture-of-experts "
                    "model (adapters are placed on modules here, and the experts are one 3-D "
                    "parameter per block): it trains the other block linears only",
                    method, len(experts))


def check_filter_rank_fits(model: nn.Module, method: str, filter_rank: int) -> None:
    """Raise LiftError when a LIFT-style mask's filter rank exceeds some matrix's rank."""
    mask = get_method(method).mask
    if mask is None or not MASK_STRATEGIES[mask].uses_filter_rank:
        return
    layers = list_linear_layers(model, blocks_only=True)
    checks.check_filter_rank_fits({layer.name: layer.shape for layer in layers}, filter_rank)


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
    mask_progress: Callable[[int, int, str], None] | None = None,
    make_gatherer=None,
) -> MethodSetup:
    """Freeze ``model`` and make the chosen method's trainable set and optimizer.

    The model must already be on its training device: masks, moments and PiSSA's SVD are
    computed where the weights live.

    Args:
        model: a causal LM (not yet wrapped).
        method: a name of :data:`lift_core.train.registry.METHOD_REGISTRY`.
        lr: peak learning rate (the schedule scales it).
        lora_rank: LoRA rank, and the budget rank of the sparse methods.
        filter_rank: rank r of W_r for lift / lift_smallest.
        update_interval: optimizer steps between mask refreshes.
        svd: "exact" or "randomized" for the LIFT masks and PiSSA's initial SVD.
        seed: seeds the random mask (and the randomized SVD's sketch).
        mask_progress: called ``(done, total, layer)`` as a sparse method's first masks are
            computed (0 before the first; the layer is the matrix just done or next).
        make_gatherer: builds the sparse methods' GradientGatherer (a multi-process run
            exchanges gradients through it); None: the optimizer's own.

    Returns:
        MethodSetup with the (possibly peft-wrapped) model and its SparseAdamW.
    """
    from lift_core.optim import SparseAdamW

    spec = get_method(method)
    check_filter_rank_fits(model, method, filter_rank)
    rows = budget_rows(model, method, lora_rank)
    _warn_if_clipped(rows, method, lora_rank)
    model.requires_grad_(False)
    if spec.kind == "adapter":
        _warn_if_experts_left_out(model, method)
        ranks = {row["layer"]: row["lora_rank"] for row in rows}
        model, params = _wrap_adapter(model, spec.adapter, ranks, lora_rank, svd=svd)
        groups, trainable = [{"params": params}], sum(p.numel() for p in params)
    else:
        # One parameter per layer, except an experts parameter: one for all its experts.
        by_name = dict(layer_parameter(model, row["layer"]) for row in rows)
        names = list(by_name)
        weights = [p.requires_grad_(True) for p in by_name.values()]
        mask_settings = {"mask": spec.mask, "lora_rank": lora_rank, "filter_rank": filter_rank,
                         "update_interval": update_interval, "svd": svd, "seed": seed}
        groups = [{"params": weights}] if spec.kind == "dense" else [
            # One group per matrix, named, so refresh events can say which matrix churned.
            {"params": [w], "param_names": [name], **mask_settings}
            for w, name in zip(weights, names)
        ]
        trainable = sum(row["k"] for row in rows)
    # Sparse methods gather their masked gradients during backward and free the dense
    # ones: part of LIFT's memory saving. Dense methods need the full gradients anyway.
    sparse = spec.kind == "sparse"
    gatherer = make_gatherer() if sparse and make_gatherer is not None else None
    # Followed (a live view): the matrices join the optimizer one at a time, each computing
    # its first mask (an SVD for LIFT) as it joins, and each reported once done.
    follow = spec.kind == "sparse" and mask_progress is not None
    if follow:
        mask_progress(0, len(groups), groups[0]["param_names"][0])
    optimizer = SparseAdamW(groups[:1] if follow else groups, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS,
                            weight_decay=0.0,
                            free_dense_grads=sparse and gatherer is None,
                            grad_gatherer=gatherer)
    if follow:
        _add_groups_reporting(optimizer, groups, mask_progress)
    return MethodSetup(model, optimizer, trainable, rows)


def _add_groups_reporting(optimizer, groups: list[dict], report: Callable[[int, int, str], None]) -> None:
    """Report ``groups[0]`` (already in ``optimizer``) done, then add the others one by one.
    Same order as all at once, so the masks (seeded by position) are the same."""
    report(1, len(groups), groups[0]["param_names"][0])
    for done, group in enumerate(groups[1:], start=2):
        optimizer.add_param_group(group)
        report(done, len(groups), group["param_names"][0])


# PiSSA's fast variant: peft's randomized SVD with this many subspace iterations.
_PISSA_FAST_ITERATIONS = 4


def _wrap_adapter(model: nn.Module, adapter: AdapterSettings, ranks: dict[str, int],
                  lora_rank: int, *, svd: str):
    """A peft LoRA-family adapter on exactly the block linears (full names, so nothing else
    matches); LoRA, PiSSA and DoRA differ only in ``adapter``.

    ``ranks`` maps each layer to its rank; layers below ``lora_rank`` (clipped to the budget)
    get their own rank through peft's rank_pattern, and every layer keeps alpha = 2 * rank.
    GPT-2 style Conv1D layers store weights (in, out) and need peft's fan_in_fan_out.
    """
    from peft import LoraConfig, get_peft_model

    transposed = any(layer.transposed for layer in list_linear_layers(model, blocks_only=True))
    init = adapter.init
    if init == "pissa" and svd == "randomized":
        init = f"pissa_niter_{_PISSA_FAST_ITERATIONS}"
    # peft reads pattern keys as regular expressions: escape the dots of module names.
    clipped = {re.escape(name): rank for name, rank in ranks.items() if rank != lora_rank}
    config = LoraConfig(
        r=lora_rank, lora_alpha=2 * lora_rank, target_modules=list(ranks), lora_dropout=0.0,
        bias="none", fan_in_fan_out=transposed, rank_pattern=clipped,
        alpha_pattern={key: 2 * rank for key, rank in clipped.items()},
        init_lora_weights=init, use_dora=adapter.use_dora,
    )
    wrapped = get_peft_model(model, config)
    params = [p for n, p in wrapped.named_parameters() if p.requires_grad]
    # peft freezes the base model (PiSSA rewrites its weights to the residual but keeps
    # them frozen); only lora_A / lora_B (and DoRA's lora_magnitude_vector) may train.
    stray = [n for n, p in wrapped.named_parameters() if p.requires_grad and "lora_" not in n]
    if stray:  # pragma: no cover - a peft behaviour change would land here
        raise RuntimeError(f"peft left non-adapter parameters trainable: {stray[:3]}")
    return wrapped, params
