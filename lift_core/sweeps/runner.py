"""Run a sweep's grid as one resumable job: one ordinary run after another, in this process.

Each run is :func:`lift_core.train.loop.finetune` into ``DIR/<run name>/`` (a normal run
record, so every reader of runs works on a sweep). ``DIR/sweep.json``, the index, is
rewritten atomically after every change: each run's status and seconds, ``done``/``total``
and an ETA from the mean seconds of the runs that ended in this invocation. Running the
same sweep again skips the runs whose record is completed with the same settings, resumes
a stopped or killed run from its checkpoint when it has one, and re-runs the others from
scratch. A run that fails (a NaN loss at a too-high learning rate is an expected result of
an LR sweep) is recorded "failed" and the sweep goes on; a set stop event ends the current
run "stopped" and the sweep "stopped". The sweep folder is claimed like a run folder
(:class:`lift_core.runs.folder.RunClaim`), so two sweeps never write into one folder.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Callable

from lift_core.errors import LiftError
from lift_core.jsonio import read_json_object, write_json
from lift_core.runs.folder import CLAIM_FILE, RunClaim, describe_owner, read_claim
from lift_core.runs.records import is_run_dir, read_run
from lift_core.sweeps.plan import PlannedRun, SweepGrid
from lift_core.train.config import FinetuneConfig

SWEEP_FILE = "sweep.json"
SWEEP_KIND = "lift-sweep"
SWEEP_VERSION = 1
# Settings that do not change what a run computes: a completed run is kept when only these differ.
_NOT_COMPARED = ("out_dir", "overwrite", "threads", "processes", "checkpoint_every", "save", "merge",
                 "trust_remote_code", "eval_batch_size")


def read_index(out: str | os.PathLike) -> dict | None:
    """``out/sweep.json``, or None when the folder holds none."""
    return read_json_object(Path(out).expanduser() / SWEEP_FILE)


def sweep_status(out: str | os.PathLike) -> str | None:
    """The sweep's status, with "interrupted" for one whose index says running but whose
    process is gone (killed); None without an index."""
    from lift_core.runs.folder import owner_state

    index = read_index(out)
    if index is None:
        return None
    claim = read_claim(Path(out).expanduser())
    if index.get("status") == "running" and (not claim or owner_state(claim) == "dead"):
        return "interrupted"
    return index.get("status")


def run_sweep(runs: list[PlannedRun], grid: SweepGrid, out: str | os.PathLike, *,
              argv: list[str] | None = None, stop_event: threading.Event | None = None,
              rerun_completed: bool = False,
              on_change: Callable[[dict, dict | None], None] | None = None) -> dict:
    """Train every run of ``runs`` not completed yet, keeping ``out/sweep.json`` current.

    Args:
        runs: from :func:`lift_core.sweeps.plan.plan_runs` with the same ``out``.
        grid: the grid they come from (recorded in the index).
        argv: the command that runs this sweep (recorded, to run it again).
        stop_event: set it (from any thread or a signal handler) to stop the current run
            after its step and leave the rest "pending".
        rerun_completed: train completed runs again too.
        on_change: called with (index, None) after each index write and with (index,
            metrics row) during a run, in the training thread (progress bars).

    Returns:
        The final index (see the module docstring and README "Sweeps").

    Raises:
        LiftError: the folder is not a sweep's, another sweep writes there, or a completed
            run has other settings than the grid's (before anything is trained).
    """
    out = Path(out).expanduser()
    index = _start_index(runs, grid, out, argv, rerun_completed)
    out.mkdir(parents=True, exist_ok=True)
    claim = _claim(out)
    sweep = _Sweep(index, out, on_change)
    try:
        sweep.write()
        for planned, entry in zip(runs, index["runs"]):
            if entry["status"] == "completed":
                continue
            if stop_event is not None and stop_event.is_set():
                break
            sweep.train(planned, entry, stop_event)
        sweep.finish("stopped" if stop_event is not None and stop_event.is_set() else None)
    except BaseException:
        sweep.finish("stopped")
        raise
    finally:
        claim.release()
    return index


class _Sweep:
    """The index of a sweep in progress and the clock of the runs trained in this invocation."""

    def __init__(self, index: dict, out: Path, on_change):
        self.index, self.out, self.on_change = index, out, on_change
        self.ended_seconds: list[float] = []  # runs that ended (completed or failed) this time

    def train(self, planned: PlannedRun, entry: dict, stop_event) -> None:
        from lift_core.train.loop import finetune

        resume = _resumable(planned.config)
        config = replace(planned.config, overwrite=False) if resume else planned.config
        entry.update(status="running", seconds=None, error=None)
        self.write()
        began = time.perf_counter()
        try:
            summary = finetune(config, stop_event=stop_event, progress=False, resume=resume,
                               callbacks=lambda row: self._row(row))
            entry.update(status=summary["status"], error=summary.get("error"))
        except LiftError as exc:  # a set-up failure (e.g. a rank the model cannot take)
            entry.update(status="failed", error=str(exc))
        except BaseException:
            entry.update(status="stopped", error="interrupted by the user (Ctrl-C)",
                         seconds=round(time.perf_counter() - began, 3))
            raise
        finally:
            gc.collect()  # the run's model and optimizer go before the next run loads its own
        entry["seconds"] = round(time.perf_counter() - began, 3)
        if entry["status"] in ("completed", "failed"):
            self.ended_seconds.append(entry["seconds"])
        self.write()

    def _row(self, row: dict) -> None:
        if self.on_change is not None:
            self.on_change(self.index, row)

    def write(self) -> None:
        runs = self.index["runs"]
        left = sum(e["status"] not in ("completed", "failed") for e in runs)
        self.index["done"] = len(runs) - left
        mean = sum(self.ended_seconds) / len(self.ended_seconds) if self.ended_seconds else None
        self.index["eta_seconds"] = None if mean is None else round(mean * left, 1)
        write_json(self.out / SWEEP_FILE, self.index)
        if self.on_change is not None:
            self.on_change(self.index, None)

    def finish(self, stopped: str | None) -> None:
        statuses = {e["status"] for e in self.index["runs"]}
        if stopped or statuses - {"completed", "failed"}:
            self.index["status"] = "stopped"
        else:
            self.index["status"] = "completed" if statuses == {"completed"} else "failed"
        self.index["finished"] = time.time()
        self.write()


def _start_index(runs: list[PlannedRun], grid: SweepGrid, out: Path, argv, rerun: bool) -> dict:
    """The index this invocation starts from: each run's status read from its folder."""
    previous = read_index(out) if out.is_dir() else None
    if previous is None and out.is_dir() and any(not e.name.startswith(".lift-") for e in out.iterdir()):
        raise LiftError(f"output directory {out} is not empty and holds no {SWEEP_FILE}; choose a "
                        "new or empty folder for the sweep (or the folder of an earlier sweep)")
    if previous is not None:
        if previous.get("kind") != SWEEP_KIND:
            raise LiftError(f"{out / SWEEP_FILE} is not a sweep index (kind {previous.get('kind')!r})")
        dropped = {e.get("name") for e in previous.get("runs", [])} - {r.name for r in runs}
        if dropped:
            raise LiftError(f"{out} holds a sweep with other runs (e.g. {sorted(dropped)[0]}); "
                            "give its grid again (or a larger one) to continue it, or a new --out")
    seconds = {e.get("name"): e.get("seconds") for e in (previous or {}).get("runs", [])}
    entries = [_entry(planned, out, rerun, seconds.get(planned.name)) for planned in runs]
    return {"kind": SWEEP_KIND, "version": SWEEP_VERSION,
            "created": (previous or {}).get("created", time.time()), "argv": list(argv or []),
            "grid": grid.as_record(), "runs": entries, "done": 0, "total": len(entries),
            "eta_seconds": None, "status": "running"}


def _entry(planned: PlannedRun, out: Path, rerun: bool, earlier_seconds: float | None) -> dict:
    cfg, run_dir = planned.config, Path(planned.config.out_dir)
    status, seconds, error = "pending", None, None
    record = _read_record(run_dir)
    if record is not None:
        status, error = record.status, record.note
        if status == "completed" and not rerun:
            differs = _differing_setting(record.config, cfg)
            if differs:
                raise LiftError(f"{run_dir} was completed with {differs}; use a new --out folder "
                                "(or --overwrite to train it again)")
            # The sweep's own count (set-up included) when it trained the run, else the run's.
            seconds = earlier_seconds or (record.summary or {}).get("wall_seconds")
        elif status == "completed":
            status = "pending"
    return {"name": planned.name, "dir": os.path.relpath(run_dir, out), "method": cfg.method,
            "lr": cfg.lr_used, "seed": cfg.seed, "budget": planned.budget, "status": status,
            "seconds": seconds, "error": error}


def _read_record(run_dir: Path):
    """The run record in ``run_dir``; None without one or when it cannot be read (re-run)."""
    if not is_run_dir(run_dir):
        return None
    try:
        return read_run(run_dir)
    except LiftError:
        return None


def _differing_setting(recorded: dict, planned: FinetuneConfig) -> str | None:
    """The first setting a recorded run trained with that the grid no longer asks for, as
    text ("steps 4, the sweep now asks for 8"); None when the run trained what it asks."""
    for f in fields(FinetuneConfig):
        if f.name in _NOT_COMPARED:
            continue
        then, now = recorded.get(f.name, f.default), getattr(planned, f.name)
        if then != now:
            return f"{f.name} {then!r}, the sweep now asks for {now!r}"
    return None


def _resumable(config: FinetuneConfig) -> bool:
    """A stopped or killed run with a checkpoint and the same settings continues from it."""
    run_dir = Path(config.out_dir)
    if not (run_dir / "checkpoint").is_dir():
        return False
    record = _read_record(run_dir)
    return (record is not None and record.status in ("stopped", "interrupted")
            and _differing_setting(record.config, config) is None)


def _claim(out: Path) -> RunClaim:
    """Claim the sweep folder; a claim left by a killed sweep is taken over."""
    try:
        return RunClaim.acquire(out, overwrite=True)
    except LiftError:
        claim = read_claim(out) or {}
        raise LiftError(f"sweep folder {out} is in use by another sweep ({describe_owner(claim)}); "
                        f"wait for it or stop it (if it is gone, delete {out / CLAIM_FILE})") from None
