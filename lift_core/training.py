"""Fine-tune a causal LM with LIFT or a baseline, evaluating and recording as it goes.

:class:`FinetuneConfig` holds every setting of a run, each with a one-line docstring that
is also its ``--option`` help and its help in the app's form (:mod:`lift_core.config_options`).
:func:`finetune` is the one training loop the app, the CLI and the sample runs share: a
:class:`~lift_core.trainer.Trainer` loads the model and data; the loop measures source and
target accuracy before training, takes the trainer's steps, evaluates every ``eval_every``
steps and at the end, and writes a run record (:mod:`lift_core.records`). A run ends
"completed", "stopped" (stop_event set or Ctrl-C) or "failed" (NaN loss, out of memory).
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lift_core.errors import LiftError
from lift_core.method_registry import check_method, default_lr, method_names
from lift_core.preflight import check_output_dir
from lift_core.records import RunRecorder, library_versions
from lift_core.svd import SVD_MODES
from lift_core.trainer import NonFiniteLoss, Trainer, is_out_of_memory
from lift_core.trainer import linear_schedule  # noqa: F401  (part of this module's API)

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class FinetuneConfig:
    """Every setting of a fine-tuning run (the defaults suit the built-in model).

    The docstring under each field is its help on the command line and in the app.
    """

    model: str = "builtin"
    """Embedded alias (builtin), local Hugging Face directory or hub id of a causal LM."""
    method: str = "lift"
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
    """torch CPU threads; unset: torch's choice."""
    trust_remote_code: bool = False
    """Allow a hub model's own Python code to run (off by default)."""

    @staticmethod
    def choices() -> dict[str, tuple[str, ...]]:
        """The allowed values of the settings that name something (CLI and app lists)."""
        return {"method": method_names(), "svd": tuple(SVD_MODES), "device": DEVICES}

    def __post_init__(self):
        check_method(self.method)
        _check_int("steps", self.steps, 1)
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and 0 < self.lr < math.inf):
            raise LiftError(f"learning rate must be > 0 and finite, got {self.lr!r}")
        for name in ("lora_rank", "filter_rank", "update_interval", "batch_size",
                     "eval_every", "eval_batch_size", "train_examples",
                     "max_length"):
            _check_int(name, getattr(self, name), 1)
        for name in ("eval_limit", "threads", "max_new_tokens"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1)
        _check_int("seed", self.seed, 0)
        if self.svd not in SVD_MODES:
            raise LiftError(f"unknown svd {self.svd!r} (allowed: {', '.join(SVD_MODES)})")
        if not 0 <= self.warmup_ratio < 1:
            raise LiftError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if self.max_grad_norm < 0:
            raise LiftError(f"max_grad_norm must be >= 0, got {self.max_grad_norm!r}")
        _check_device(self.device)
        if self.out_dir is not None:  # a folder we cannot make fails now, not after loading
            check_output_dir(self.out_dir)
        for name in ("train_data", "target_eval", "source_eval"):
            path = getattr(self, name)
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


def finetune(config: FinetuneConfig, *, callbacks=None, stop_event: threading.Event | None = None,
             progress: bool | None = None) -> dict:
    """Run one fine-tuning job and return its summary (also written to summary.json).

    Args:
        config: the run's settings.
        callbacks: None, one callback or a list. A callback is a callable that receives each
            metrics row (dict) as it is recorded, or an object with ``on_metrics(row)``
            and/or ``on_end(summary)``. Callbacks run in the training thread.
        stop_event: set it (from any thread) to stop after the current step or evaluation
            batch; the run ends with status "stopped", its record intact and *no* final
            evaluation (the summary keeps the accuracies of the last complete evaluation,
            at step ``eval_step``).
        progress: show a tqdm bar on stderr; None shows it only when no callbacks are given
            (the CLI), so the app, which passes callbacks, gets none.

    Returns:
        The summary dict (see docs/training.md, "Run record").

    Raises:
        LiftError: for bad settings, data or models (before anything is trained).
    """
    run = _Run(config, callbacks=callbacks, stop_event=stop_event,
               progress=(callbacks is None) if progress is None else progress)
    return run.execute()


def config_record(config: FinetuneConfig) -> dict:
    """config.json's settings part: every field, plus the resolved learning rate."""
    record = asdict(config)
    record["lr_used"] = config.lr_used
    record["warmup_steps"] = config.warmup_steps
    record["pid"] = os.getpid()
    return record


def run_config_record(trainer: Trainer) -> dict:
    """config.json of a set-up run: the settings, device, versions, data sizes and budget."""
    rows = trainer.method_setup.layers
    block_entries = sum(r["shape"][0] * r["shape"][1] for r in rows)
    return {
        **config_record(trainer.config),
        "device_used": str(trainer.device),
        "mixed_precision": trainer.accelerator.mixed_precision,
        "versions": library_versions(),
        "model_params": trainer.model_params,
        "data": {**{k: len(v) for k, v in trainer.data.items()},
                 "train_dropped": trainer.batches.dropped},
        "budget": {
            "trainable_params": trainer.trainable_params,
            "block_linear_entries": block_entries,
            "trainable_fraction": trainer.trainable_params / block_entries,
            "clipped_layers": trainer.method_setup.clipped_layers,
            "layers": rows,
        },
    }


# --- the run -----------------------------------------------------------------------------


class _StopRequested(Exception):
    """Raised inside the run when stop_event is set; ends it with status "stopped"."""


class _Run:
    """One call of :func:`finetune`: the trainer, the record, the status and the clock."""

    def __init__(self, config: FinetuneConfig, *, callbacks, stop_event, progress: bool):
        self.config, self.stop_event, self.progress = config, stop_event, progress
        self.recorder = RunRecorder(config.out_dir, overwrite=config.overwrite,
                                    callbacks=callbacks)
        self.trainer = Trainer(config)
        self.status, self.error = "running", None
        self.train_seconds, self.last_loss = 0.0, None
        self.acc: dict = {}
        self.before: dict = {}

    def execute(self) -> dict:
        cfg = self.config
        self.start = time.perf_counter()
        try:
            self.trainer.setup()
            self.recorder.start(run_config_record(self.trainer))
        except BaseException as exc:
            if is_out_of_memory(exc):  # nothing recorded yet: a one-line user error
                raise LiftError(f"out of memory while setting up {cfg.model} for {cfg.method}: "
                                "try a smaller model, --lora-rank or --device cpu") from exc
            raise
        try:
            self._evaluate(0, before=True)
            self._train()
            self.status = "completed"
        except NonFiniteLoss as exc:
            self.status, self.error = "failed", str(exc)
        except _StopRequested:
            self.status, self.error = "stopped", "stopped on request"
        except KeyboardInterrupt:
            self._finish("stopped", "interrupted by the user (Ctrl-C)")
            raise
        except BaseException as exc:
            if not is_out_of_memory(exc):  # a bug or a LiftError: record it, keep the traceback
                text = str(exc) if isinstance(exc, LiftError) else f"{type(exc).__name__}: {exc}"
                self._finish("failed", (text.strip().splitlines() or [text])[0])
                raise
            self.status = "failed"
            self.error = (f"out of memory on {self.trainer.device.type} at step "
                          f"{self.trainer.steps_done + 1}: "
                          "try a smaller --batch-size or --lora-rank, or a smaller model")
        return self._finish(self.status, self.error)

    def _train(self) -> None:
        from tqdm import tqdm

        cfg = self.config
        bar = tqdm(total=cfg.steps, disable=not self.progress, unit="step",
                   desc=f"{cfg.method}", dynamic_ncols=True)
        try:
            for step in range(1, cfg.steps + 1):
                self._check_stop()
                began = time.perf_counter()
                row = self.trainer.step()
                self.train_seconds += time.perf_counter() - began
                self.last_loss = row["loss"]
                row["elapsed"] = self._elapsed()
                try:
                    if step % cfg.eval_every == 0 or step == cfg.steps:
                        row.update(self._evaluate(step))
                finally:  # a stop during the evaluation still records the step
                    self.recorder.row(row)
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.3f}", refresh=False)
        finally:
            bar.close()

    def _check_stop(self) -> None:
        if self.stop_event is not None and self.stop_event.is_set():
            raise _StopRequested()

    def _evaluate(self, step: int, *, before: bool = False) -> dict:
        result = self.trainer.evaluate(between_batches=self._check_stop)
        self.acc = {**result, "eval_step": step}
        if before:
            self.before = dict(result)
            self.recorder.row({"step": 0, **result, "elapsed": self._elapsed()})
        return result

    def _elapsed(self) -> float:
        return round(time.perf_counter() - self.start, 3)

    def _finish(self, status: str, error: str | None) -> dict:
        self.status, self.error = status, error
        self.trainer.close()  # the caller may keep the model: no gradient hooks left on it
        summary = self._summary()
        self.recorder.end(summary)
        return summary

    def _summary(self) -> dict:
        cfg, before, trainer = self.config, self.before, self.trainer
        target, source = self.acc.get("target_acc"), self.acc.get("source_acc")
        source_before, steps_done = before.get("source_acc"), trainer.steps_done
        return {
            "method": cfg.method, "model": cfg.model, "seed": cfg.seed,
            "status": self.status, "error": self.error,
            "steps": cfg.steps, "steps_done": steps_done, "lr_used": cfg.lr_used,
            "target_acc": target, "source_acc": source,
            "target_acc_before": before.get("target_acc"), "source_acc_before": source_before,
            "forgetting": (source_before - source) if None not in (source, source_before) else None,
            "eval_step": self.acc.get("eval_step"), "final_loss": self.last_loss,
            "trainable_params": trainer.trainable_params,
            "budget_clipped_layers": len(trainer.method_setup.clipped_layers),
            "optimizer_state_bytes": int(trainer.optimizer.state_bytes()),
            "peak_memory_bytes": trainer.memory.result(),
            "peak_memory_measure": trainer.memory.how,
            "mask_refreshes": trainer.mask_refreshes, "device": str(trainer.device),
            "wall_seconds": round(time.perf_counter() - self.start, 3),
            "train_seconds": round(self.train_seconds, 3),
            "seconds_per_step": (self.train_seconds / steps_done) if steps_done else None,
        }
