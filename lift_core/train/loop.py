"""Fine-tune a causal LM with LIFT or a baseline, evaluating and recording as it goes.

:func:`finetune` is the one training loop the app, the CLI and the sample runs share: a
:class:`~lift_core.train.trainer.Trainer` loads the model and data; the loop measures source
and target accuracy before training, takes the trainer's steps, evaluates every
``eval_every`` steps and at the end, and writes a run record (:mod:`lift_core.runs.records`).
A run ends "completed", "stopped" (stop_event set or Ctrl-C) or "failed" (NaN loss, out of
memory). The settings live in :mod:`lift_core.train.config`.
"""

from __future__ import annotations

import threading
import time

from lift_core.distributed.data_parallel import lost_process_message
from lift_core.distributed.launch import check_world_size, process_rank
from lift_core.errors import LiftError
from lift_core.runs.records import RunRecorder, library_versions
from lift_core.train.config import FinetuneConfig, config_record
from lift_core.train.run_files import (
    append_generations,
    evaluation_progress,
    mask_progress,
    truncate_metrics,
    write_progress,
)
from lift_core.train.trainer import EVAL_SETS, NonFiniteLoss, Trainer, is_out_of_memory

# Prompts per eval set whose answers each evaluation keeps (generations.jsonl), so the
# record shows what was learned and what was forgotten, not only how much.
GENERATIONS_KEPT = 3


def finetune(config: FinetuneConfig, *, callbacks=None, stop_event: threading.Event | None = None,
             progress: bool | None = None, resume: bool = False) -> dict:
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
        resume: continue the run in ``config.out_dir`` from its checkpoint (written with
            ``checkpoint_every``): its metrics after the checkpoint are cut off, the rest kept.

    Returns:
        The summary dict (see docs/training.md, "Run record").

    Raises:
        LiftError: for bad settings, data or models (before anything is trained).
    """
    run = _Run(config, callbacks=callbacks, stop_event=stop_event, resume=resume,
               progress=(callbacks is None) if progress is None else progress)
    return run.execute()


def run_config_record(trainer: Trainer) -> dict:
    """config.json of a set-up run: the settings, device, versions, data sizes and budget."""
    rows = trainer.method_setup.layers
    block_entries = sum(r["shape"][0] * r["shape"][1] for r in rows)
    return {
        **config_record(trainer.config),
        "device_used": str(trainer.device),
        "processes_used": trainer.parallel.world_size,
        "mixed_precision": trainer.accelerator.mixed_precision,
        "dtype_used": str(next(trainer.unwrapped_model.parameters()).dtype).replace("torch.", ""),
        "versions": library_versions(),
        "model_params": trainer.model_params,
        "setup": {k: round(v, 3) for k, v in trainer.setup_seconds.items()},  # load, masks
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


def setup_times(setup: float | None, phases: dict, first_eval: float | None) -> dict:
    """The summary's set-up fields (seconds, None when not reached): ``setup_seconds`` (the
    whole set-up), its ``load_seconds`` and ``mask_seconds``, and ``first_eval_seconds`` (the
    evaluation before training); ``seconds_per_step`` counts none of them."""
    def rounded(value):
        return None if value is None else round(value, 3)

    return {"setup_seconds": rounded(setup), "load_seconds": rounded(phases.get("load_seconds")),
            "mask_seconds": rounded(phases.get("mask_seconds")),
            "first_eval_seconds": rounded(first_eval)}


# --- the run -----------------------------------------------------------------------------


class _StopRequested(Exception):
    """Raised inside the run when stop_event is set; ends it with status "stopped"."""


class _Run:
    """One call of :func:`finetune`: the trainer, the record, the status and the clock."""

    def __init__(self, config: FinetuneConfig, *, callbacks, stop_event, progress: bool,
                 resume: bool = False):
        if resume and not config.out_dir:
            raise LiftError("resume needs the run folder (out_dir) of the run to continue")
        self.config, self.stop_event = config, stop_event
        self.progress = progress and process_rank() == 0
        self.resume, self.rows, self.checkpoint_step = resume, 0, 0
        check_world_size(config.processes)
        # Several processes: the main one alone writes the record, prints and evaluates.
        self.is_main = process_rank() == 0
        self.recorder = RunRecorder(config.out_dir if self.is_main else None,
                                    overwrite=config.overwrite, callbacks=callbacks,
                                    resume=resume)
        self.trainer = Trainer(config)
        self.status, self.error = "running", None
        self.train_seconds, self.last_loss = 0.0, None
        self.setup_seconds = self.first_eval_seconds = None  # set-up, outside seconds_per_step
        self.acc: dict = {}
        self.before: dict = {}

    def execute(self) -> dict:
        cfg = self.config
        self.start = time.perf_counter()
        self.recorder.claim()  # before the set-up, so progress.json can show its phases
        self.trainer.mask_progress = mask_progress(self)
        try:
            write_progress(self, {"phase": "loading model", "step": None})
            self.trainer.setup()
            self.setup_seconds = time.perf_counter() - self.start
            self.recorder.start(run_config_record(self.trainer))
            _continue_or_begin(self)
        except BaseException as exc:
            self.recorder.abandon()  # a failed set-up leaves no trace (a started record stays)
            parallel = self.trainer.parallel
            if parallel is not None and parallel.active and lost_process_message(exc, 0):
                raise LiftError("another process of this run ended during the set-up; "
                                "see its messages above") from None
            if is_out_of_memory(exc):  # nothing recorded yet: a one-line user error
                raise LiftError(f"out of memory while setting up {cfg.model} for {cfg.method}: "
                                "try a smaller model, --lora-rank or --device cpu") from exc
            raise
        try:
            if not self.resume:
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
            lost = self.trainer.parallel.active and lost_process_message(
                exc, self.trainer.steps_done + 1)
            if lost:  # another rank died: a clear failure, not this rank's traceback
                self.status, self.error = "failed", lost
                return self._finish(self.status, self.error)
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
            bar.update(self.trainer.steps_done)
            for step in range(self.trainer.steps_done + 1, cfg.steps + 1):
                self._agree_to_stop()
                began = time.perf_counter()
                row = self.trainer.step()
                self.train_seconds += time.perf_counter() - began
                self.last_loss = row["loss"]
                row["elapsed"] = self._elapsed()
                row["memory"] = self.trainer.memory.result()  # peak bytes so far (the memory chart)
                try:
                    if step % cfg.eval_every == 0 or step == cfg.steps:
                        row.update(self._evaluate(step))
                finally:  # a stop during the evaluation still records the step
                    self.recorder.row(row)
                    self.rows += 1
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                    self._checkpoint()
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.3f}", refresh=False)
            # Resumed after a stop in the last evaluation: evaluate the final step now.
            if self.acc.get("eval_step") != cfg.steps:
                self.recorder.row({"step": cfg.steps, **self._evaluate(cfg.steps),
                                   "elapsed": self._elapsed()})
                self.rows += 1
        finally:
            bar.close()

    def _check_stop(self) -> None:
        if self.stop_event is not None and self.stop_event.is_set():
            raise _StopRequested()

    def _agree_to_stop(self, stopped: bool = False) -> None:
        """Every process stops at the same point, whichever was asked (SIGTERM reaches each
        rank at its own moment); one process: the plain stop check."""
        stopped = stopped or (self.stop_event is not None and self.stop_event.is_set())
        if self.trainer.parallel.any_rank(stopped):
            raise _StopRequested()

    def _evaluate(self, step: int, *, before: bool = False) -> dict:
        began = time.perf_counter()
        self.trainer.generations_kept = GENERATIONS_KEPT
        # eval_subset: intermediate evaluations only; before training and the last step see all.
        limit = self.config.eval_subset if 0 < step < self.config.steps else None
        scores, stopped = {}, False
        if self.is_main:  # several processes: the others wait for it at _agree_to_stop
            try:
                scores = self.trainer.evaluate(
                    between_batches=evaluation_progress(self, step, before, limit), limit=limit)
            except _StopRequested:
                if not self.trainer.parallel.active:
                    raise
                stopped = True
        if self.trainer.parallel.active:
            self._agree_to_stop(stopped)
        if limit is not None and limit < max(len(self.trainer.data[n]) for n in EVAL_SETS):
            scores["eval_examples"] = limit  # readers tell subset evaluations apart by it
        write_progress(self, {"phase": "training", "step": step})
        append_generations(self, step, self.trainer.generations)
        self.acc = {**scores, "eval_step": step}
        if before:
            self.first_eval_seconds = time.perf_counter() - began
            self.before = dict(scores)
            self.recorder.row({"step": 0, **scores, "elapsed": self._elapsed()})
            self.rows += 1
        return scores

    def _elapsed(self) -> float:
        return round(time.perf_counter() - self.start, 3)

    def _checkpoint(self) -> None:
        from lift_core.train.checkpoint import save_checkpoint

        if self.config.out_dir and self.is_main and self.trainer.steps_done > self.checkpoint_step:
            save_checkpoint(self.trainer, self.config.out_dir, metrics_rows=self.rows,
                            extra={"train_seconds": self.train_seconds,
                                   "elapsed": self._elapsed()})
            self.checkpoint_step = self.trainer.steps_done

    def _finish(self, status: str, error: str | None) -> dict:
        self.status, self.error = status, error
        saved = _keep_results(self)
        self.trainer.close()  # the caller may keep the model: no gradient hooks left on it
        summary = {**_run_summary(self), **saved}
        self.recorder.end(summary)
        return summary


def _continue_or_begin(run: _Run) -> None:
    """Resume: load the checkpoint, cut the metrics back to it, recall the evaluations.
    A new run that saves a PiSSA adapter keeps its initial adapter for the conversion."""
    from lift_core.train import checkpoint, export

    out = run.config.out_dir
    if not run.resume:
        if out and run.config.save and run.is_main:
            export.keep_pissa_initial(run.trainer, out)
        return
    state = checkpoint.load_checkpoint(run.trainer, out)
    run.rows, run.checkpoint_step = state["metrics_rows"], state["steps_done"]
    run.train_seconds = state["extra"].get("train_seconds", 0.0)
    run.start -= state["extra"].get("elapsed", 0.0)  # elapsed keeps counting up
    for row in truncate_metrics(out, run.rows, cut=run.is_main):
        if row.get("step") == 0 and "target_acc" in row:
            run.before = {k: row[k] for k in ("target_acc", "source_acc")}
        if "target_acc" in row:
            run.acc = {"target_acc": row["target_acc"], "source_acc": row["source_acc"],
                       "eval_step": row["step"]}
        run.last_loss = row.get("loss", run.last_loss)


def _keep_results(run: _Run) -> dict:
    """A completed run: save its model (``save``) and drop its checkpoint; a stopped one
    with checkpoints gets one at the step it stopped at."""
    from lift_core.train import checkpoint, export

    out, cfg = run.config.out_dir, run.config
    if not out or not run.is_main:  # several processes: the main one keeps what there is
        return {}
    if run.status == "stopped" and cfg.checkpoint_every:
        run._checkpoint()
    if run.status != "completed":
        return {}
    try:
        saved = export.save_run_outputs(run.trainer, out) if cfg.save else {}
    except OSError as exc:  # a full disk: the training is done, say what was not kept
        run.status, run.error = "failed", f"could not save the model: {exc.strerror or exc}"
        return {}
    checkpoint.remove_checkpoint(out)
    return saved


def _run_summary(run: _Run) -> dict:
    """summary.json's fields for ``run`` as it stands (see docs/training.md)."""
    cfg, before, trainer = run.config, run.before, run.trainer
    target, source = run.acc.get("target_acc"), run.acc.get("source_acc")
    source_before, steps_done = before.get("source_acc"), trainer.steps_done
    return {
        "method": cfg.method, "model": cfg.model, "seed": cfg.seed,
        "status": run.status, "error": run.error,
        "steps": cfg.steps, "steps_done": steps_done, "lr_used": cfg.lr_used,
        "target_acc": target, "source_acc": source,
        "target_acc_before": before.get("target_acc"), "source_acc_before": source_before,
        "forgetting": (source_before - source) if None not in (source, source_before) else None,
        "eval_step": run.acc.get("eval_step"), "final_loss": run.last_loss,
        "trainable_params": trainer.trainable_params,
        "budget_clipped_layers": len(trainer.method_setup.clipped_layers),
        "optimizer_state_bytes": int(trainer.optimizer.state_bytes()),
        "peak_memory_bytes": trainer.memory.result(),
        "peak_memory_measure": trainer.memory.how,
        "mask_refreshes": trainer.mask_refreshes, "device": str(trainer.device),
        "processes": trainer.parallel.world_size,
        "exchange_bytes_per_step": trainer.parallel.median_step_bytes(),
        "wall_seconds": round(time.perf_counter() - run.start, 3),
        "train_seconds": round(run.train_seconds, 3),
        "seconds_per_step": (run.train_seconds / steps_done) if steps_done else None,
        **setup_times(run.setup_seconds, trainer.setup_seconds, run.first_eval_seconds),
        "resumed": run.resume,
    }
