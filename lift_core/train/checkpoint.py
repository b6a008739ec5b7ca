"""Checkpoints: everything a run needs to continue where it stopped, written atomically.

A checkpoint is the folder ``RUN_DIR/checkpoint/``: ``trainable.safetensors`` (every
parameter the method trains: the block linears of the sparse and full methods, the adapter
of the LoRA family; the frozen rest, and PiSSA's residual, are rebuilt by set-up from the
same base and seed) and ``state.pt`` (optimizer state with masks and moments, scheduler,
data position, RNG states, steps done, the number of metrics lines written). It is written
under a temporary name and renamed into place, so a kill leaves the previous checkpoint or
the new one, never half of one. :func:`load_checkpoint` puts a freshly set-up
:class:`~lift_core.train.trainer.Trainer` back into the saved state.
"""

from __future__ import annotations

import os
import random
import shutil
import uuid
from pathlib import Path

import torch

from lift_core.errors import LiftError

CHECKPOINT_DIR = "checkpoint"
_WEIGHTS_FILE = "trainable.safetensors"
_STATE_FILE = "state.pt"
# The checkpoint being replaced, kept under this name until its successor is in place.
_PREVIOUS = ".lift-checkpoint-previous"


def trainable_tensors(trainer) -> dict[str, torch.Tensor]:
    """The parameters the method trains, by name, as contiguous CPU tensors."""
    return {name: p.detach().to("cpu").contiguous()
            for name, p in trainer.unwrapped_model.named_parameters() if p.requires_grad}


def save_checkpoint(trainer, run_dir: str | os.PathLike, *, metrics_rows: int,
                    extra: dict | None = None) -> Path:
    """Write ``run_dir/checkpoint/`` for ``trainer``'s current step, atomically.

    Args:
        trainer: a set-up Trainer.
        run_dir: the run folder.
        metrics_rows: lines of metrics.jsonl written so far (a resume cuts later ones off).
        extra: more picklable state the loop keeps (e.g. its training seconds).

    Returns:
        The checkpoint folder.
    """
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    final, previous = run_dir / CHECKPOINT_DIR, run_dir / _PREVIOUS
    tmp = run_dir / f".lift-checkpoint.{uuid.uuid4().hex[:12]}.tmp"
    tmp.mkdir()
    try:
        save_file(trainable_tensors(trainer), str(tmp / _WEIGHTS_FILE))
        torch.save(_state(trainer, metrics_rows, extra or {}), tmp / _STATE_FILE)
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(previous, ignore_errors=True)
            os.rename(final, previous)  # a kill now leaves it here: load_checkpoint finds it
        os.rename(tmp, final)
        _fsync_dir(run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(previous, ignore_errors=True)
    return final


def _state(trainer, metrics_rows: int, extra: dict) -> dict:
    rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
    try:
        import numpy

        rng["numpy"] = numpy.random.get_state()
    except ImportError:  # pragma: no cover - numpy comes with pandas
        pass
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {"optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(),
            "batches": trainer.batches.state_dict() if trainer.batches is not None else None,
            "rng": rng, "steps_done": trainer.steps_done,
            "mask_refreshes": trainer.mask_refreshes, "metrics_rows": metrics_rows,
            "extra": extra}


def _fsync_dir(path: Path) -> None:
    for entry in [*path.iterdir(), path] if path.name.endswith(".tmp") else [path]:
        fd = os.open(entry, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def checkpoint_path(run_dir: str | os.PathLike) -> Path | None:
    """The run's latest complete checkpoint folder, None without one."""
    for name in (CHECKPOINT_DIR, _PREVIOUS):
        path = Path(run_dir) / name
        if (path / _STATE_FILE).is_file() and (path / _WEIGHTS_FILE).is_file():
            return path
    return None


def load_checkpoint(trainer, run_dir: str | os.PathLike) -> dict:
    """Put a set-up ``trainer`` (same config) back into the state of the run's checkpoint.

    Returns:
        The saved state's ``{"steps_done", "metrics_rows", "extra", ...}``.

    Raises:
        LiftError: no checkpoint, or one that does not fit this run's trainable set.
    """
    from safetensors.torch import load_file

    path = checkpoint_path(run_dir)
    if path is None:
        raise LiftError(f"run folder {run_dir} has no complete checkpoint to resume from")
    weights = load_file(str(path / _WEIGHTS_FILE))
    params = dict(trainer.unwrapped_model.named_parameters())
    if set(weights) != {n for n, p in params.items() if p.requires_grad}:
        raise LiftError(f"the checkpoint in {path} does not match this run's trainable "
                        "parameters (was config.json edited?)")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    state = torch.load(path / _STATE_FILE, weights_only=False)
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    if state["batches"] is not None and trainer.batches is not None:
        trainer.batches.load_state_dict(state["batches"])
    _restore_rng(state["rng"])
    trainer.steps_done = state["steps_done"]
    trainer.mask_refreshes = state["mask_refreshes"]
    return state


def _restore_rng(rng: dict) -> None:
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    if "numpy" in rng:
        import numpy

        numpy.random.set_state(rng["numpy"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def remove_checkpoint(run_dir: str | os.PathLike) -> None:
    """Delete the run's checkpoint (a completed run needs none; it holds the optimizer)."""
    for name in (CHECKPOINT_DIR, _PREVIOUS):
        shutil.rmtree(Path(run_dir) / name, ignore_errors=True)
