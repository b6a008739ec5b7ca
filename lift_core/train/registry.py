"""Every fine-tuning method, written once: one :class:`Method` record per method.

The CLI's choices, the app's method lists, labels and colours, the default learning rates,
the figures and the memory estimate are all read from :data:`METHOD_REGISTRY`, so a new
method is one entry here (plus set-up code, in lift_core.train.methods, for a new adapter
family). A method trains masked entries (``mask``, a key of
:data:`lift_core.lowrank.masks.MASK_STRATEGIES`), a peft LoRA-family adapter (``adapter``), or,
with neither, every entry of the block linears. This module imports no torch, so the UI's
figure modules can read it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass

from lift_core.errors import LiftError

# Bytes SparseAdamW keeps per trained number: two fp32 moments, plus an int32 index of the
# entry for a masked (sparse) parameter.
_DENSE_STATE_BYTES = 8
_SPARSE_STATE_BYTES = 12
UNKNOWN_COLOR = "#444444"  # a method recorded by a run but not (or no longer) registered


@dataclass(frozen=True)
class AdapterSettings:
    """How a peft LoRA-family adapter is made (rank, alpha and layers are shared)."""

    init: str | bool = True
    """peft ``init_lora_weights``: True (A random, B = 0) or "pissa" (principal SVD
    factors in A and B, the residual W - BA left in the frozen base weight)."""
    use_dora: bool = False
    """DoRA: a trainable magnitude per output row on top of the LoRA direction."""

    def extra_per_layer(self, shape: tuple[int, int]) -> int:
        """Trainable numbers an (out, in) layer adds beyond LoRA's (m+n)*rank."""
        return shape[0] if self.use_dora else 0


@dataclass(frozen=True)
class Method:
    """One fine-tuning method: who it is, what it trains, how it is shown."""

    name: str
    """Identifier used by the CLI (--method), run records and folders."""
    label: str
    """Name on charts and in sentences."""
    color: str
    """Colour on every chart (hex)."""
    default_lr: float
    """Learning rate when none is given: the best target accuracy of the shared sweep."""
    description: str
    """One line: what the method trains (CLI help, the app's picker, the Overview page)."""
    mask: str | None = None
    """Mask strategy (a key of masks.MASK_STRATEGIES) for a sparse method, else None."""
    adapter: AdapterSettings | None = None
    """peft adapter settings for a LoRA-family method, else None."""
    compared_by_default: bool = False
    """Part of the default ``compare`` queue and the app's "Compare all" selection."""

    def __post_init__(self):
        if self.mask is not None and self.adapter is not None:
            raise ValueError(f"method {self.name!r} has both a mask and an adapter")

    @property
    def kind(self) -> str:
        """"sparse" (masked entries), "adapter" (peft) or "dense" (every entry)."""
        if self.mask is not None:
            return "sparse"
        return "adapter" if self.adapter is not None else "dense"

    @property
    def state_bytes_per_number(self) -> int:
        """Optimizer-state bytes SparseAdamW keeps per trained number."""
        return _SPARSE_STATE_BYTES if self.kind == "sparse" else _DENSE_STATE_BYTES


# The learning rates are the best target accuracy of one shared grid (3e-4 .. 3e-2,
# sample_runs/lr_sweep.sh, table in docs/training.md); lift_smallest was not swept and
# takes lift's. As in the paper, the sparse methods and the adapters want a higher rate
# than full fine-tuning, which moves every entry.
METHOD_REGISTRY: dict[str, Method] = {m.name: m for m in (
    Method("lift", "LIFT", "#e66101", 1e-2,
           "principal weights: the k largest entries of the rank-r approximation |W_r|",
           mask="lift", compared_by_default=True),
    Method("full", "full FT", "#0571b0", 1e-3,
           "full fine-tuning of every block linear (AdamW)", compared_by_default=True),
    Method("lora", "LoRA", "#4dac26", 1e-2,
           "LoRA adapters (peft) of rank lora_rank on every block linear",
           adapter=AdapterSettings(), compared_by_default=True),
    Method("magnitude", "magnitude", "#5e3c99", 1e-2,
           "the k largest |W| entries (plain magnitude)", mask="magnitude",
           compared_by_default=True),
    Method("random", "random", "#7f7f7f", 1e-2, "k uniformly random entries", mask="random",
           compared_by_default=True),
    Method("lift_smallest", "LIFT-smallest", "#1b9e77", 1e-2,
           "the k smallest |W_r| entries (the authors' released-code default)",
           mask="lift_smallest"),
    Method("pissa", "PiSSA", "#8c510a", 1e-2,
           "LoRA initialised from W's top singular vectors, the frozen W keeping the residual",
           adapter=AdapterSettings(init="pissa")),
    Method("dora", "DoRA", "#c51b7d", 1e-2,
           "LoRA on the direction of W plus a trainable magnitude per output row",
           adapter=AdapterSettings(use_dora=True)),
)}

# The method this studio is about: the findings compare the others against it.
PRINCIPAL_METHOD = "lift"


def method_names(kind: str | None = None) -> tuple[str, ...]:
    """Registered method names in registry order, optionally only one ``kind``."""
    return tuple(name for name, m in METHOD_REGISTRY.items() if kind in (None, m.kind))


def compared_by_default() -> tuple[str, ...]:
    """The methods of the default compare queue, in registry order."""
    return tuple(name for name, m in METHOD_REGISTRY.items() if m.compared_by_default)


def get_method(name: str) -> Method:
    """The record of ``name``; LiftError listing the allowed names for an unknown one."""
    method = METHOD_REGISTRY.get(name)
    if method is None:
        raise LiftError(f"unknown method {name!r} (allowed: {', '.join(METHOD_REGISTRY)})")
    return method


def check_method(name: str) -> str:
    """Return ``name`` or raise LiftError listing the allowed ones."""
    return get_method(name).name


def default_lr(name: str) -> float:
    """The learning rate a method uses when none is given."""
    return get_method(name).default_lr


def method_label(name: str) -> str:
    """A method's chart label (the name itself for an unregistered one)."""
    method = METHOD_REGISTRY.get(name)
    return method.label if method else str(name)


def method_color(name: str) -> str:
    """A method's colour on every chart (grey for an unregistered one)."""
    method = METHOD_REGISTRY.get(name)
    return method.color if method else UNKNOWN_COLOR


def methods_help(separator: str = "; ") -> str:
    """One clause per method, "name: description", for help texts."""
    return separator.join(f"{m.name}: {m.description}" for m in METHOD_REGISTRY.values())


def parse_methods(text: str) -> list[str]:
    """``"lift,full"`` -> ``["lift", "full"]``; raises LiftError on unknown or repeated names."""
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise LiftError("--methods is empty: give at least one of " + ", ".join(method_names()))
    unknown = [m for m in methods if m not in method_names()]
    if unknown:
        raise LiftError(f"unknown method(s) {', '.join(unknown)} (allowed: {', '.join(method_names())})")
    if len(set(methods)) != len(methods):
        raise LiftError(f"--methods names a method twice: {text}")
    return methods
