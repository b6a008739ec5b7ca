"""Fine-tune a causal LM with LIFT or a baseline, evaluating and recording as it goes.

:func:`finetune` is the one training loop the app, the CLI and the sample runs share: it
loads the model, measures source and target accuracy before training, trains with the
method's optimizer under a linear schedule with warmup, evaluates every ``eval_every``
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
from lift_core.methods import check_method, default_lr
from lift_core.preflight import check_output_dir, check_training_fits
from lift_core.records import PeakMemory, RunRecorder, library_versions
from lift_core.svd import SVD_MODES
from lift_core.training_data import TrainBatches, load_run_data

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class FinetuneConfig:
    """Every setting of a fine-tuning run (the defaults suit the built-in model)."""

    model: str = "builtin"
    """Embedded alias, local Hugging Face directory or hub id of a causal LM."""
    method: str = "lift"
    """One of lift, full, lora, magnitude, random, lift_smallest."""
    steps: int = 300
    """Optimizer steps."""
    lr: float | None = None
    """Peak learning rate; None uses the method's default (methods.DEFAULT_LRS)."""
    lora_rank: int = 4
    """LoRA rank, and the budget of the sparse methods: k = min((m+n)*lora_rank, m*n)."""
    filter_rank: int = 4
    """Rank r of the approximation W_r that scores entries (lift, lift_smallest)."""
    update_interval: int = 100
    """Optimizer steps between mask refreshes of the sparse methods."""
    svd: str = "exact"
    """SVD for the LIFT masks: exact (fp32, the authors' choice) or randomized."""
    seed: int = 0
    """Seeds the training data, its order, LoRA initialisation and the random mask."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda."""
    batch_size: int = 16
    """Training examples per step."""
    warmup_ratio: float = 0.03
    """Fraction of the steps spent warming the learning rate up linearly from 0."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 turns clipping off)."""
    eval_every: int = 100
    """Evaluate source and target accuracy every this many steps (and at the end)."""
    max_new_tokens: int | None = None
    """Generation length when evaluating; None: the longest gold answer plus 8 tokens."""
    eval_batch_size: int = 64
    """Prompts generated at once when evaluating."""
    eval_limit: int | None = None
    """Use at most this many examples of each eval set, evenly spread (None: all)."""
    train_examples: int = 2000
    """Size of the built-in target training set (ignored with train_data)."""
    max_length: int = 512
    """Training sequences are cut to this many tokens."""
    train_data: str | None = None
    """Alpaca JSON/JSONL training file; None uses the built-in target task."""
    target_eval: str | None = None
    """Alpaca JSON/JSONL target eval file; None uses the built-in target eval set."""
    source_eval: str | None = None
    """Alpaca JSON/JSONL source eval file; None uses the built-in source eval set."""
    out_dir: str | None = None
    """Run directory for the record; None keeps nothing on disk."""
    overwrite: bool = False
    """Allow a non-empty out_dir (its record files are replaced)."""
    threads: int | None = None
    """torch CPU threads (None leaves torch's choice)."""
    trust_remote_code: bool = False
    """Allow a hub model's own Python code."""

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


def linear_schedule(warmup_steps: int, total_steps: int):
    """LR multiplier for LambdaLR: linear 0 -> 1 over warmup, then linear 1 -> 0 at the end."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


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
    run = _TrainingRun(config, callbacks=callbacks, stop_event=stop_event,
                      progress=(callbacks is None) if progress is None else progress)
    return run.execute()


def config_record(config: FinetuneConfig) -> dict:
    """config.json's settings part: every field, plus the resolved learning rate."""
    record = asdict(config)
    record["lr_used"] = config.lr_used
    record["warmup_steps"] = config.warmup_steps
    record["pid"] = os.getpid()
    return record



# --- the run -----------------------------------------------------------------------------


class _StopRequested(Exception):
    """Raised inside the run when stop_event is set; ends it with status "stopped"."""


def _is_oom(exc: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(exc, (oom, MemoryError)) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def _make_accelerator(config: FinetuneConfig):
    """CUDA + bf16 autocast when there is a GPU (and device allows), else fp32 on CPU."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    cuda = config.device != "cpu" and torch.cuda.is_available()
    kwargs = {"cpu": not cuda, "mixed_precision": "bf16" if cuda else "no"}
    try:
        return Accelerator(**kwargs)
    except ValueError:
        # accelerate keeps one process-wide state; an earlier run in this process (the app)
        # may have used another device or precision. Runs are sequential, so reset it.
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(**kwargs)


class _TrainingRun:
    """One call of :func:`finetune`: state shared by set-up, the loop and the summary."""

    def __init__(self, config: FinetuneConfig, *, callbacks, stop_event, progress: bool):
        self.config, self.stop_event, self.progress = config, stop_event, progress
        self.recorder = RunRecorder(config.out_dir, overwrite=config.overwrite,
                                    callbacks=callbacks)
        self.status, self.error = "running", None
        self.steps_done, self.train_seconds, self.last_loss = 0, 0.0, None
        self.acc: dict = {}
        self.before: dict = {}
        self.refreshes = 0

    def execute(self) -> dict:
        cfg = self.config
        self.start = time.perf_counter()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        try:
            self._set_up()
        except BaseException as exc:
            if _is_oom(exc):  # nothing recorded yet: a one-line user error
                raise LiftError(f"out of memory while setting up {cfg.model} for {cfg.method}: "
                                "try a smaller model, --lora-rank or --device cpu") from exc
            raise
        try:
            self._evaluate(0, before=True)
            self._train()
            self.status = "completed" if self.status == "running" else self.status
        except _StopRequested:
            self.status, self.error = "stopped", "stopped on request"
        except KeyboardInterrupt:
            self._finish("stopped", "interrupted by the user (Ctrl-C)")
            raise
        except BaseException as exc:
            if not _is_oom(exc):  # a bug or a LiftError: record it, keep the traceback
                text = str(exc) if isinstance(exc, LiftError) else f"{type(exc).__name__}: {exc}"
                self._finish("failed", (text.strip().splitlines() or [text])[0])
                raise
            self.status = "failed"
            self.error = (f"out of memory on {self.device.type} at step {self.steps_done + 1}: "
                          "try a smaller --batch-size or --lora-rank, or a smaller model")
        return self._finish(self.status, self.error)

    # set-up ------------------------------------------------------------------------------

    def _set_up(self) -> None:
        from lift_core.methods import setup_method
        from lift_core.models import load_model, load_tokenizer

        cfg = self.config
        self.accelerator = _make_accelerator(cfg)
        self.device = self.accelerator.device
        check_training_fits(cfg, self.device)  # from the config alone: refuse before allocating
        self.memory = PeakMemory(self.device)
        self.data = load_run_data(cfg)
        model = load_model(cfg.model, kind="causal", trust_remote_code=cfg.trust_remote_code)
        self.tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
        self.model_params = sum(p.numel() for p in model.parameters())
        model.to(self.device)
        self.setup = setup_method(
            model, cfg.method, lr=cfg.lr_used, lora_rank=cfg.lora_rank,
            filter_rank=cfg.filter_rank, update_interval=cfg.update_interval, svd=cfg.svd,
            seed=cfg.seed,
        )
        # prepare_model adds bf16 autocast to forward on CUDA (and generate goes through it).
        self.model = self.accelerator.prepare_model(self.setup.model)
        self.model.train()
        self.optimizer = self.setup.optimizer
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, linear_schedule(cfg.warmup_steps, cfg.steps))
        self.batches = TrainBatches(self.data["train"], self.tokenizer, batch_size=cfg.batch_size,
                                    seed=cfg.seed, max_length=cfg.max_length, device=self.device)
        self.recorder.start(self._config_record())

    def _config_record(self) -> dict:
        rows = self.setup.layers
        block_entries = sum(r["shape"][0] * r["shape"][1] for r in rows)
        return {
            **config_record(self.config),
            "device_used": str(self.device),
            "mixed_precision": self.accelerator.mixed_precision,
            "versions": library_versions(),
            "model_params": self.model_params,
            "data": {**{k: len(v) for k, v in self.data.items()},
                     "train_dropped": self.batches.dropped},
            "budget": {
                "trainable_params": self.setup.trainable_params,
                "block_linear_entries": block_entries,
                "trainable_fraction": self.setup.trainable_params / block_entries,
                "clipped_layers": self.setup.clipped_layers,
                "layers": rows,
            },
        }

    # the loop ----------------------------------------------------------------------------

    def _train(self) -> None:
        from tqdm import tqdm

        cfg = self.config
        bar = tqdm(total=cfg.steps, disable=not self.progress, unit="step",
                   desc=f"{cfg.method}", dynamic_ncols=True)
        try:
            for step in range(1, cfg.steps + 1):
                self._check_stop()
                row = self._train_step(step)
                if self.status == "failed":
                    return
                try:
                    if step % cfg.eval_every == 0 or step == cfg.steps:
                        row.update(self._evaluate(step))
                finally:  # a stop during the evaluation still records the step
                    self._record(row)
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.3f}", refresh=False)
        finally:
            bar.close()

    def _check_stop(self) -> None:
        if self.stop_event is not None and self.stop_event.is_set():
            raise _StopRequested()

    def _train_step(self, step: int) -> dict:
        began = time.perf_counter()
        lr = self.scheduler.get_last_lr()[0]
        batch = self.batches.next()
        with self.accelerator.autocast():
            loss = self.model(**batch).loss
        self.memory.sample()
        value = loss.item()
        if not math.isfinite(value):
            self.status = "failed"
            self.error = (f"the loss became {value} at step {step}; training stopped "
                          f"(try a lower learning rate than {self.config.lr_used:g})")
            return {}
        self.accelerator.backward(loss)
        self.memory.sample()
        if self.config.max_grad_norm:
            self.optimizer.clip_grad_norm_(self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.memory.sample()
        self.train_seconds += time.perf_counter() - began
        self.steps_done, self.last_loss = step, value
        row = {"step": step, "loss": value, "lr": lr, "elapsed": self._elapsed()}
        churn = self._mask_churn()
        if churn is not None:
            row["mask_churn"] = churn
        return row

    def _mask_churn(self) -> float | None:
        """Fraction of mask entries that changed at this step's refresh (k-weighted)."""
        pop = getattr(self.optimizer, "pop_refresh_events", None)
        events = [e for e in (pop() if pop else []) if e.get("step", 1) > 0]
        if not events:
            return None
        self.refreshes += 1
        weights = [e.get("entries", 1) for e in events]
        return sum(w * e["changed_fraction"] for w, e in zip(weights, events)) / sum(weights)

    def _evaluate(self, step: int, *, before: bool = False) -> dict:
        result = {f"{name}_acc": self._accuracy(name) for name in ("target", "source")}
        self.acc = {**result, "eval_step": step}
        if before:
            self.before = dict(result)
            self._record({"step": 0, **result, "elapsed": self._elapsed()})
        return result

    def _accuracy(self, name: str) -> float:
        """Accuracy on one eval set, batch by batch so a stop request is seen quickly."""
        from lift_core.evaluation import accuracy, answer_length

        examples, size = self.data[name], self.config.eval_batch_size
        # Prompts keep their last max_length tokens and answers count up to max_length, so a
        # giant eval record costs no more than a max_length one.
        limit = self.config.max_length
        max_new = self.config.max_new_tokens or answer_length(self.tokenizer, examples,
                                                              max_tokens=limit)
        hits = 0.0
        for start in range(0, len(examples), size):
            self._check_stop()
            chunk = examples[start: start + size]
            hits += len(chunk) * accuracy(self.model, self.tokenizer, chunk, max_new_tokens=max_new,
                                          batch_size=size, max_prompt_tokens=limit)
        return hits / len(examples)

    def _elapsed(self) -> float:
        return round(time.perf_counter() - self.start, 3)

    def _record(self, row: dict) -> None:
        self.recorder.row(row)

    # the end -----------------------------------------------------------------------------

    def _finish(self, status: str, error: str | None) -> dict:
        self.status, self.error = status, error
        # The sparse optimizer's gradient hooks live on the parameters; drop them so the
        # model (which the caller may keep) back-propagates normally afterwards.
        remove_hooks = getattr(self.optimizer, "remove_grad_hooks", None)
        if remove_hooks is not None:
            remove_hooks()
        summary = self._summary()
        self.recorder.end(summary)
        return summary

    def _summary(self) -> dict:
        cfg, before = self.config, self.before
        target, source = self.acc.get("target_acc"), self.acc.get("source_acc")
        source_before = before.get("source_acc")
        state_bytes = getattr(self.optimizer, "state_bytes", None)
        return {
            "method": cfg.method, "model": cfg.model, "seed": cfg.seed,
            "status": self.status, "error": self.error,
            "steps": cfg.steps, "steps_done": self.steps_done, "lr_used": cfg.lr_used,
            "target_acc": target, "source_acc": source,
            "target_acc_before": before.get("target_acc"), "source_acc_before": source_before,
            "forgetting": (source_before - source) if None not in (source, source_before) else None,
            "eval_step": self.acc.get("eval_step"), "final_loss": self.last_loss,
            "trainable_params": self.setup.trainable_params,
            "budget_clipped_layers": len(self.setup.clipped_layers),
            "optimizer_state_bytes": int(state_bytes()) if state_bytes else None,
            "peak_memory_bytes": self.memory.result(), "peak_memory_measure": self.memory.how,
            "mask_refreshes": self.refreshes, "device": str(self.device),
            "wall_seconds": round(time.perf_counter() - self.start, 3),
            "train_seconds": round(self.train_seconds, 3),
            "seconds_per_step": (self.train_seconds / self.steps_done) if self.steps_done else None,
        }
