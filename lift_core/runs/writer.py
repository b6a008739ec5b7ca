"""Writing a run record as the run goes: config.json, metrics.jsonl, summary.json.

:class:`RunRecorder` is what the training loop talks to: it claims the run folder
(:mod:`lift_core.runs.folder`, one writer per folder), writes ``config.json`` atomically,
appends each metrics row in one write (cut back to the last whole line if the disk fills
up), and at the end writes ``summary.json`` atomically and gives the claim up. A summary
that cannot be written (disk full) is recorded in the claim's reserved bytes instead.
Also here: what a run measures about where it ran (peak memory, library versions).
Reading records back is :mod:`lift_core.runs.records`.
"""

from __future__ import annotations

import os
from pathlib import Path

from lift_core.errors import RecordWriteError
from lift_core.jsonio import to_json, write_all, write_json
from lift_core.runs.folder import (
    CONFIG_FILE, METRICS_FILE, PROGRESS_FILE, RECORD_FORMAT, SUMMARY_FILE, RunClaim, check_out_dir,
    check_resumable, prepare_claimed,
)


class RunWriter:
    """Writes one run directory, holding its claim from creation to summary.

    Args:
        out_dir: the run directory (created if missing).
        overwrite: allow a folder that holds an earlier run record whose writer is gone; only
            the record files are replaced, anything else in it is left alone.

    Raises:
        LiftError: ``out_dir`` is a file, holds something that is not a run record, is in
            use by a live run, or is non-empty and ``overwrite`` is False.
    """

    def __init__(self, out_dir: str | os.PathLike, *, overwrite: bool = False,
                 resume: bool = False):
        self.path = Path(out_dir).expanduser()
        # resume: continue the record in place (its checkpoint decides where; nothing deleted)
        check_resumable(self.path) if resume else check_out_dir(self.path, overwrite=overwrite)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._claim = RunClaim.acquire(self.path, overwrite=overwrite or resume)
        except OSError as exc:
            raise RecordWriteError(f"cannot start a run record in {self.path}: {exc.strerror or exc}") from None
        try:
            if not resume:
                prepare_claimed(self.path, overwrite=overwrite)
            self._metrics = os.open(self.path / METRICS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            self._claim.release()
            raise RecordWriteError(f"cannot start a run record in {self.path}: {exc.strerror or exc}") from None
        except BaseException:
            self._claim.release()
            raise

    def write_config(self, config: dict) -> None:
        """Write config.json (atomically), tagged with the record format."""
        write_json(self.path / CONFIG_FILE, {"format": RECORD_FORMAT, **config})

    def append_metrics(self, row: dict) -> None:
        """Append one metrics row in one go, so a live reader sees it now.

        Raises:
            RecordWriteError: the disk is full (or the file gone); the metrics file is cut
                back to its last whole line first.
        """
        size = os.fstat(self._metrics).st_size
        try:
            write_all(self._metrics, (to_json(row) + "\n").encode("utf-8"))
        except OSError as exc:
            try:
                os.ftruncate(self._metrics, size)  # never leave half a line behind
            except OSError:
                pass
            raise RecordWriteError(f"cannot write {self.path / METRICS_FILE}: {exc.strerror or exc}") from None

    def write_summary(self, summary: dict) -> None:
        """Write summary.json atomically, close the metrics file and give up the claim."""
        write_json(self.path / SUMMARY_FILE, summary)
        self._close_metrics()
        self._claim.release()

    def mark_failed(self, error: str) -> None:
        """The summary cannot be written: record the failure in the claim's reserved bytes."""
        self._close_metrics()
        self._claim.mark_ended("failed", error)

    def abandon(self) -> None:
        """The run never got going (config.json could not be written): leave no trace."""
        if os.fstat(self._metrics).st_size == 0:
            (self.path / METRICS_FILE).unlink(missing_ok=True)
        self._close_metrics()
        self._claim.release()

    def close(self) -> None:
        """Close the metrics file and drop the lock (the claim stays until a summary)."""
        self._close_metrics()
        self._claim.close()

    def _close_metrics(self) -> None:
        if self._metrics is not None:
            os.close(self._metrics)
            self._metrics = None


class RunRecorder:
    """Where a run's rows go: the run directory (if any) and the caller's callbacks.

    A callback is a callable that receives each metrics row, or an object with
    ``on_metrics(row)``, ``on_progress(progress)`` and/or ``on_end(summary)``; pass one or a
    list. The out dir is checked here, before anything slow happens, and claimed (created)
    by :meth:`claim` before the set-up, so progress.json can show the set-up's phases;
    :meth:`start` writes config.json once the set-up is done.
    """

    def __init__(self, out_dir=None, *, overwrite: bool = False, callbacks=None,
                 resume: bool = False):
        self.out_dir, self.overwrite, self.resume, self.writer = out_dir, overwrite, resume, None
        if out_dir:
            check_resumable(out_dir) if resume else check_out_dir(out_dir, overwrite=overwrite)
        if callbacks is None:
            callbacks = []
        elif callable(callbacks) or any(hasattr(callbacks, f"on_{what}") for what in ("metrics", "progress", "end")):
            callbacks = [callbacks]
        self.callbacks = list(callbacks)
        self._created = self._started = False  # the folder is ours to remove / config.json written

    def claim(self) -> None:
        """Claim (create) the run directory, if any and not yet claimed."""
        if self.out_dir and self.writer is None:
            self._created = not Path(self.out_dir).expanduser().exists()
            self.writer = RunWriter(self.out_dir, overwrite=self.overwrite, resume=self.resume)

    def start(self, config: dict) -> None:
        """Claim the run directory (if :meth:`claim` has not) and write config.json."""
        self.claim()
        if self.writer is not None:
            try:
                self.writer.write_config(config)
            except BaseException:
                self.writer.abandon()
                self.writer = None
                raise
        self._started = True

    def abandon(self) -> None:
        """The set-up failed before config.json: give the claim up and leave no trace (the
        folder too, if the claim created it). Does nothing once :meth:`start` has written."""
        if self.writer is None or self._started:
            return
        self.writer.abandon()
        self.writer = None
        folder = Path(self.out_dir).expanduser()
        (folder / PROGRESS_FILE).unlink(missing_ok=True)
        if self._created:
            try:
                folder.rmdir()
            except OSError:  # something else appeared there meanwhile: leave it
                pass

    def notify_progress(self, progress: dict) -> None:
        """Hand a copy of a progress.json state (a set-up phase, an evaluation's batches) to
        each callback's ``on_progress``."""
        for cb in self.callbacks:
            if hasattr(cb, "on_progress"):
                cb.on_progress(dict(progress))

    def row(self, row: dict) -> None:
        """Append a metrics row to metrics.jsonl and hand a copy to each callback.

        Raises:
            RecordWriteError: the row could not be written (disk full): the run must end.
        """
        if self.writer is not None:
            self.writer.append_metrics(row)
        for cb in self.callbacks:
            if hasattr(cb, "on_metrics"):
                cb.on_metrics(dict(row))
            elif callable(cb) and not hasattr(cb, "on_end"):
                cb(dict(row))

    def end(self, summary: dict) -> None:
        """Write summary.json (atomically) and call each callback's on_end.

        When the summary cannot be written (disk full), the failure goes into the claim
        instead; the error is raised unless the summary already reports a failure (whose
        cause the caller is raising).
        """
        try:
            if self.writer is not None:
                try:
                    self.writer.write_summary(summary)
                except RecordWriteError as exc:
                    failed = summary.get("status") == "failed" and summary.get("error")
                    self.writer.mark_failed(summary["error"] if failed else str(exc))
                    if not failed:
                        raise
        finally:
            for cb in self.callbacks:
                if hasattr(cb, "on_end"):
                    cb.on_end(dict(summary))


class PeakMemory:
    """Peak memory of a run: CUDA's allocator peak, or the process RSS sampled on CPU."""

    def __init__(self, device):
        import torch

        self.cuda = device.type == "cuda"
        self.peak = 0
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(device)
            self.how = "torch.cuda.max_memory_allocated (tensors on the GPU, whole run)"
        else:
            self.how = ("process resident set size (/proc/self/statm) sampled after each "
                        "forward, backward and optimizer step; includes Python and libraries")

    def sample(self) -> None:
        """Take one RSS sample (CPU only; CUDA keeps its own peak)."""
        if self.cuda:
            return
        try:
            with open("/proc/self/statm") as fh:
                rss = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):  # not Linux: the process-lifetime peak
            import resource

            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.peak = max(self.peak, rss)

    def result(self) -> int:
        """Peak bytes so far."""
        import torch

        return int(torch.cuda.max_memory_allocated()) if self.cuda else self.peak


def library_versions() -> dict:
    """Versions of the libraries that decide a run's numbers (stored in config.json)."""
    import platform

    import accelerate
    import peft
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__,
            "accelerate": accelerate.__version__}
