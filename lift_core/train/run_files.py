"""The files a run keeps beside its record while it runs: progress.json (the live bars),
generations.jsonl (answers kept at each evaluation), and metrics.jsonl cut back on resume.

Every writer here is optional: a full disk skips progress and generations (the record
itself, :mod:`lift_core.runs.writer`, is what must not be lost). They take the loop's run
object (``config``, ``recorder``, ``trainer``, ``progress``, ``_check_stop``, ``_elapsed``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from lift_core.errors import RecordWriteError
from lift_core.jsonio import to_json, write_json
from lift_core.runs.folder import GENERATIONS_FILE, PROGRESS_FILE
from lift_core.train.trainer import EVAL_SETS


def evaluation_progress(run, step: int, before: bool, limit: int | None = None):
    """between_batches of an evaluation (of at most ``limit`` examples per set): honour a
    stop request, then record the batches done/total in progress.json, so a live bar moves
    during the evaluation."""
    size = run.config.eval_batch_size
    total = sum(math.ceil(min(len(run.trainer.data[name]), limit or math.inf) / size)
                for name in EVAL_SETS)
    phase = "evaluating before training" if before else "evaluating"
    done = iter(range(total + 1))

    def between_batches() -> None:
        run._check_stop()
        write_progress(run, {"phase": phase, "step": step, "done": next(done, total),
                              "total": total, "elapsed": run._elapsed()})

    return between_batches


def mask_progress(run):
    """mask_progress of the trainer's set-up: the "computing masks" phase in progress.json
    (done/total matrices and the layer), and a tqdm bar of them when the run shows progress."""
    from tqdm import tqdm

    bar = None

    def report(done: int, total: int, layer: str) -> None:
        nonlocal bar
        write_progress(run, {"phase": "computing masks", "step": None, "done": done,
                              "total": total, "layer": layer, "elapsed": run._elapsed()})
        if run.progress:
            bar = bar or tqdm(total=total, desc="masks", unit="layer", dynamic_ncols=True)
            bar.update(done - bar.n)
            bar.set_postfix_str(layer, refresh=False)
            if done == total:
                bar.close()

    return report


def append_generations(run, step: int, kept: list[dict]) -> None:
    """One generations.jsonl line per evaluation (apart from metrics.jsonl, whose rows stay
    small); optional like progress.json: a failed write skips it."""
    if kept and run.config.out_dir and run.recorder.writer is not None:
        line = to_json({"step": step, "generations": kept}) + "\n"
        try:
            with open(Path(run.config.out_dir) / GENERATIONS_FILE, "a", encoding="utf-8") as fh:
                fh.write(line)
        except OSError:
            pass


def write_progress(run, progress: dict) -> None:
    """Replace the run folder's progress.json (optional: a full disk skips it) and hand it to
    the callbacks (their on_progress)."""
    if run.config.out_dir and run.recorder.writer is not None:
        try:
            write_json(Path(run.config.out_dir) / PROGRESS_FILE, progress, indent=None)
        except RecordWriteError:
            pass
    run.recorder.notify_progress(progress)


def truncate_metrics(run_dir, rows: int, *, cut: bool = True) -> list[dict]:
    """Cut ``run_dir``'s metrics.jsonl back to its first ``rows`` lines; return those rows
    (``cut=False``: only read them, as the processes that do not write the record do)."""
    path = Path(run_dir) / "metrics.jsonl"
    kept, size = [], 0
    with open(path, "rb") as fh:
        for line in fh:
            if len(kept) == rows or not line.endswith(b"\n"):
                break
            kept.append(json.loads(line))
            size += len(line)
    if cut:
        os.truncate(path, size)
    return kept
