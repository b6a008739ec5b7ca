"""Checks made before anything slow is loaded: can the outputs be written, will training fit.

A run that fails only once the model is loaded, or an analysis that fails only when its
table is saved, wastes minutes and ends in a traceback. So output locations are tried
(a throw-away file or folder is created and removed where the output will go), and a
training run's memory is estimated from the model's config alone, on the meta device,
before any weight is allocated.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from lift_core.errors import LiftError

# Share of the available memory a run may plan to use: the rest is left for activations,
# the tokenizer, evaluation and the allocator's slack, which the estimate does not count.
MEMORY_HEADROOM = 0.8
_FP32 = 4  # bytes: weights load, and gradients and moments are kept, in fp32
_PROBE_PREFIX = ".lift-write-check-"


# --- output locations ------------------------------------------------------------------


def check_output_dir(path) -> None:
    """Raise LiftError unless ``path`` is, or can be created as, a folder we can write in.

    Nothing is left behind: a missing folder is tried by creating and removing a
    throw-away folder in its nearest existing parent.
    """
    target = _non_empty(path, "output folder")
    try:
        if target.exists():
            if not target.is_dir():
                raise LiftError(f"output path {target} is a file, not a folder")
            _check_access(target, f"output folder {target}")
            return
        parent = _nearest_existing_parent(target)
        if not parent.is_dir():
            raise LiftError(f"cannot create output folder {target}: {parent} is a file")
    except OSError as exc:
        raise LiftError(f"cannot create output folder {target}: {_reason(exc)}") from exc
    _try_creating_in(parent, f"cannot create output folder {target}", folder=True)


def check_output_file(path) -> None:
    """Raise LiftError unless a file can be written at ``path`` (its folder must exist)."""
    target = _non_empty(path, "output file")
    parent = target.resolve().parent
    try:
        if target.is_dir():
            raise LiftError(f"cannot write {target}: it is a folder")
        if not parent.is_dir():
            raise LiftError(f"cannot write {target}: folder {parent} does not exist")
        if target.exists():
            _check_access(target, f"file {target}")
            return
    except OSError as exc:
        raise LiftError(f"cannot write {target}: {_reason(exc)}") from exc
    _try_creating_in(parent, f"cannot write {target}", folder=False)


def _non_empty(path, what: str) -> Path:
    text = "" if path is None else str(path)
    if not text.strip():
        raise LiftError(f"the {what} is empty: give a path such as runs/demo")
    return Path(text).expanduser()


def _nearest_existing_parent(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path):
        path = path.parent
    return path


def _check_access(path: Path, what: str) -> None:
    read_only = hasattr(os, "statvfs") and bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    if read_only or not os.access(path, os.W_OK):
        raise LiftError(f"cannot write to {what}: "
                        + ("read-only file system" if read_only else "permission denied"))


def _try_creating_in(parent: Path, failure: str, *, folder: bool) -> None:
    """Create and remove a throw-away folder or file in ``parent``; LiftError if we cannot."""
    try:
        if folder:
            os.rmdir(tempfile.mkdtemp(prefix=_PROBE_PREFIX, dir=parent))
        else:
            handle, probe = tempfile.mkstemp(prefix=_PROBE_PREFIX, dir=parent)
            os.close(handle)
            os.unlink(probe)
    except OSError as exc:
        raise LiftError(f"{failure}: nothing can be created in {parent} ({_reason(exc)})") from exc


def _reason(exc: OSError) -> str:
    return (exc.strerror or type(exc).__name__).lower()


# --- memory ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training run holds on its device, by part (activations not counted)."""

    method: str
    trainable_params: int  # numbers trained (the same count setup_method reports)
    model_bytes: int  # every weight of the model, fp32
    trainable_bytes: int  # weights added for training (adapters: A, B, DoRA's magnitude)
    optimizer_bytes: int  # AdamW moments (and the sparse methods' indices)
    gradient_bytes: int  # gradients kept between backward and step
    transient_bytes: int  # masks, PiSSA's SVD, DoRA's norms: copies of the largest matrix

    @property
    def total_bytes(self) -> int:
        return (self.model_bytes + self.trainable_bytes + self.optimizer_bytes
                + self.gradient_bytes + self.transient_bytes)

    def describe(self) -> str:
        parts = [("model", self.model_bytes), ("adapters", self.trainable_bytes),
                 ("optimizer state", self.optimizer_bytes), ("gradients", self.gradient_bytes),
                 ("working copies of the largest matrix", self.transient_bytes)]
        return ", ".join(f"{name} {_gib(b)}" for name, b in parts if b)


def estimate_training_memory(model: torch.nn.Module, method: str, lora_rank: int,
                             *, weight_bytes: int = _FP32) -> MemoryEstimate:
    """What training ``model`` (meta-device is fine) with ``method`` will hold.

    ``weight_bytes`` is the loaded weights' element size (2 for a bf16 checkpoint): the
    model, full fine-tuning's gradients and the one dense gradient of a sparse method are
    in that dtype; adapters, moments, gathered gradients and mask work stay fp32.

    Per trained number: full keeps a gradient and two AdamW moments (12 B); the adapters
    (LoRA, PiSSA, DoRA: A and B, and DoRA's magnitude vector) also hold the adapter weight
    itself (16 B); the sparse methods keep an index, two moments and a gathered gradient
    (16 B) and free each dense gradient during backward. Copies of the largest matrix come
    on top: the sparse methods build each mask from dense copies of one matrix at a time,
    PiSSA takes each matrix's SVD, DoRA forms W + BA to take its row norms.
    """
    from lift_core.train.registry import get_method
    from lift_core.train.methods import budget_rows

    spec = get_method(method)
    rows = budget_rows(model, method, lora_rank)
    trainable = sum(row["k"] for row in rows)
    largest = max(row["shape"][0] * row["shape"][1] for row in rows)
    sparse = spec.kind == "sparse"
    trained_gradient = weight_bytes if spec.kind == "dense" else _FP32
    return MemoryEstimate(
        method=method, trainable_params=trainable,
        model_bytes=weight_bytes * sum(p.numel() for p in model.parameters()),
        trainable_bytes=_FP32 * trainable if spec.kind == "adapter" else 0,
        optimizer_bytes=spec.state_bytes_per_number * trainable,
        gradient_bytes=trained_gradient * trainable + (weight_bytes * largest if sparse else 0),
        transient_bytes=_dense_copies(spec) * _FP32 * largest,
    )


def _dense_copies(spec) -> int:
    """fp32 copies of the largest matrix a method's set-up or step makes at once."""
    if spec.kind == "sparse":
        return 3  # |W_r| or |W|, its top-k selection, the matrix in fp32
    if spec.adapter is not None and spec.adapter.init == "pissa":
        return 3  # PiSSA: the matrix in fp32 and its SVD factors
    if spec.adapter is not None and spec.adapter.use_dora:
        return 2  # DoRA: W + scale * BA, and its row norms' working copy
    return 0


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device``: the GPU's free memory, or the OS's MemAvailable."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    from lift_core.models.loading import available_memory_bytes

    return available_memory_bytes()


def check_training_fits(config, device: torch.device) -> MemoryEstimate | None:
    """Estimate a run's memory from its model's config and refuse it when it cannot fit.

    Args:
        config: the run's FinetuneConfig (model, method, lora_rank, filter_rank,
            trust_remote_code are read).
        device: where it will train.

    Returns:
        The estimate, or None for a model that is not a causal LM (loading it refuses it).

    Raises:
        LiftError: the model cannot be found, its filter rank does not fit, or the run
            needs more than MEMORY_HEADROOM of the memory available on ``device``.
    """
    from lift_core.train.methods import check_filter_rank_fits
    from lift_core.models.loading import is_causal_lm, load_config, meta_model, resolved_dtype

    model_config = load_config(config.model, trust_remote_code=config.trust_remote_code)
    if not is_causal_lm(model_config):
        return None
    model = meta_model(model_config, trust_remote_code=config.trust_remote_code)
    check_filter_rank_fits(model, config.method, config.filter_rank)
    weight_bytes = resolved_dtype(getattr(config, "dtype", "float32"), model_config).itemsize
    estimate = estimate_training_memory(model, config.method, config.lora_rank,
                                        weight_bytes=weight_bytes)
    have = available_bytes(device)
    if estimate.total_bytes > MEMORY_HEADROOM * have:
        raise LiftError(
            f"{config.method} on {config.model} needs about {_gib(estimate.total_bytes)} "
            f"({estimate.describe()}) but {_gib(have)} is free on {device.type}; try "
            "--method lift or lora, a smaller --lora-rank or a smaller model"
        )
    return estimate


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**26 else f"{n / 2**20:.1f} MiB"
