"""The settings of a fine-tuning run: :class:`FinetuneConfig`, each field checked once.

Every setting has a one-line docstring under its field that is also its ``--option`` help
and its help in the app's form (:mod:`lift_core.train.options`). ``__post_init__`` checks
every value with a one-line :class:`~lift_core.errors.LiftError`, so the CLI, the app and
the tests reject the same settings in the same words.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lift_core.checks import SVD_MODES, check_svd_mode
from lift_core.allowed_paths import DATA_ROOTS_ENV, confine
from lift_core.distributed.exchange import GRAD_EXCHANGES
from lift_core.errors import LiftError
from lift_core.models.loading import WEIGHT_DTYPES, check_weight_dtype
from lift_core.models.preflight import check_output_dir
from lift_core.train.registry import PRINCIPAL_METHOD, check_method, default_lr, method_names

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class FinetuneConfig:
    """Every setting of a fine-tuning run (the defaults suit the built-in model).

    The docstring under each field is its help on the command line and in the app.
    """

    model: str = "builtin"
    """Embedded alias (builtin), local Hugging Face directory or hub id of a causal LM."""
    method: str = PRINCIPAL_METHOD
    """What to train: LIFT, or a baseline with the same budget (docs/training.md)."""
    steps: int = 300
    """Optimizer steps."""
    lr: float | None = None
    """Peak learning rate; unset: the method's default (docs/training.md)."""
    lora_rank: int = 4
    """LoRA rank, and the budget of the sparse methods: k = min((m+n)*lora_rank, m*n) per
    matrix (LoRA's rank is clipped to m*n/(m+n) where lora_rank is larger)."""
    filter_rank: int = 4
    """Rank r of the approximation W_r that scores entries (lift, lift_smallest)."""
    update_interval: int = 100
    """Optimizer steps between mask refreshes of the sparse methods."""
    svd: str = "exact"
    """SVD for the LIFT masks: exact (fp32, the authors' choice) or randomized."""
    seed: int = 0
    """Seeds the training data, its order, LoRA initialisation and the random mask."""
    device: str = "auto"
    """auto (CUDA with bf16 when a GPU is present, else CPU), cpu or cuda."""
    dtype: str = "auto"
    """Weight dtype: auto (the checkpoint's own), float32, bfloat16 or float16; masks' SVD
    and optimizer moments stay float32 (docs/training.md)."""
    batch_size: int = 16
    """Training examples per step."""
    warmup_ratio: float = 0.03
    """Fraction of the steps spent warming the learning rate up linearly from 0."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 turns clipping off)."""
    eval_every: int = 100
    """Evaluate source and target accuracy every this many steps (and at the end)."""
    max_new_tokens: int | None = None
    """Generation length when evaluating; unset: the longest gold answer plus 8 tokens."""
    eval_batch_size: int = 64
    """Prompts generated at once when evaluating."""
    eval_limit: int | None = None
    """Evaluate on at most this many examples of each eval set, evenly spread; unset: all."""
    eval_subset: int | None = None
    """Intermediate evaluations use only this many examples of each eval set, evenly spread
    (faster, denser curves); the evaluation before training and the final one use the whole
    sets; unset: every evaluation uses the whole sets."""
    train_examples: int = 2000
    """Size of the built-in target training set (not used with a training file)."""
    max_length: int = 512
    """Tokens kept of each training sequence and evaluation prompt (longer ones are cut)."""
    train_data: str | None = None
    """Alpaca JSON/JSONL training file; unset: the built-in target task."""
    target_eval: str | None = None
    """Alpaca JSON/JSONL target eval file; unset: the built-in target eval set."""
    source_eval: str | None = None
    """Alpaca JSON/JSONL source eval file, to measure forgetting; unset: the built-in one."""
    out_dir: str | None = None
    """Run folder for the record (config.json, metrics.jsonl, summary.json), new or empty
    unless overwrite; without one (library use) nothing is kept on disk."""
    overwrite: bool = False
    """Replace the run record in a non-empty run folder (never a live run's, never other files)."""
    threads: int | None = None
    """torch CPU threads (per process); unset: torch's choice."""
    processes: int = 1
    """Data-parallel processes (one per GPU, or CPU processes): the global batch is split
    between them and the run is the same run, only faster (docs/distributed.md)."""
    grad_exchange: str = "dense"
    """With several processes, what the sparse methods exchange: dense (every gradient
    entry; exactly the one-process run) or sparse (only the trained entries; clipping then
    uses their norm, the same run whenever clipping does not bind)."""
    trust_remote_code: bool = False
    """Allow a hub model's own Python code to run (off by default)."""
    save: bool = True
    """Keep the fine-tuned model of a completed run in its folder (on by default): model/
    (sparse methods also delta.safetensors, shira/) or the LoRA-family adapter in adapter/."""
    merge: bool = False
    """LoRA family: also write the adapter merged into full weights to model/."""
    checkpoint_every: int | None = None
    """Write a checkpoint (checkpoint/ in the run folder) every this many steps, so that
    finetune --resume can continue a stopped or killed run; unset: none."""

    @staticmethod
    def choices() -> dict[str, tuple[str, ...]]:
        """The allowed values of the settings that name something (CLI and app lists)."""
        return {"method": method_names(), "svd": tuple(SVD_MODES), "device": DEVICES,
                "dtype": WEIGHT_DTYPES, "grad_exchange": GRAD_EXCHANGES}

    def __post_init__(self):
        check_method(self.method)
        _check_int("steps", self.steps, 1)
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and 0 < self.lr < math.inf):
            raise LiftError(f"learning rate must be > 0 and finite, got {self.lr!r}")
        for name in ("lora_rank", "filter_rank", "update_interval", "batch_size",
                     "eval_every", "eval_batch_size", "train_examples",
                     "max_length", "processes"):
            _check_int(name, getattr(self, name), 1)
        for name in ("eval_limit", "eval_subset", "threads", "max_new_tokens", "checkpoint_every"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1)
        _check_int("seed", self.seed, 0)
        check_svd_mode(self.svd)
        if not 0 <= self.warmup_ratio < 1:
            raise LiftError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if self.max_grad_norm < 0:
            raise LiftError(f"max_grad_norm must be >= 0, got {self.max_grad_norm!r}")
        _check_device(self.device)
        if self.grad_exchange not in GRAD_EXCHANGES:
            raise LiftError(f"grad_exchange must be one of {', '.join(GRAD_EXCHANGES)}, "
                            f"got {self.grad_exchange!r}")
        if self.processes > self.batch_size:
            raise LiftError(f"{self.processes} processes need batch_size >= {self.processes} "
                            f"(each takes a slice of the {self.batch_size}-example batch)")
        check_weight_dtype(self.dtype)
        if self.out_dir is not None:  # a folder we cannot make fails now, not after loading
            check_output_dir(self.out_dir)
        for name in ("train_data", "target_eval", "source_eval"):
            path = getattr(self, name)
            if path is not None:  # confined first: a shared server reveals no other file
                path = confine(path, DATA_ROOTS_ENV, "data file", "data folders",
                               "put the file in one of them")
            if path is not None and not Path(path).expanduser().is_file():
                what = ("is a folder, not a file" if Path(path).expanduser().is_dir()
                        else "does not exist")
                raise LiftError(f"{name.replace('_', '-')} file {path} {what}")

    @property
    def lr_used(self) -> float:
        """The learning rate this run trains with."""
        return float(self.lr) if self.lr is not None else default_lr(self.method)

    @property
    def warmup_steps(self) -> int:
        """Warmup length in steps (at least one, so step 1 does not train at lr 0)."""
        return max(1, round(self.warmup_ratio * self.steps))


def _check_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise LiftError(f"{name} must be a whole number >= {minimum}, got {value!r}")


def _check_device(device: str) -> None:
    if device not in DEVICES:
        raise LiftError(f"unknown device {device!r} (allowed: {', '.join(DEVICES)})")
    if device == "cuda" and not torch.cuda.is_available():
        raise LiftError(
            "device cuda was requested but no CUDA GPU is available (torch "
            f"{torch.__version__}, built {'with' if torch.version.cuda else 'without'} CUDA); "
            "use --device cpu or auto"
        )


def config_record(config: FinetuneConfig) -> dict:
    """config.json's settings part: every field, plus the resolved learning rate."""
    record = asdict(config)
    record["lr_used"] = config.lr_used
    record["warmup_steps"] = config.warmup_steps
    record["pid"] = os.getpid()
    return record
