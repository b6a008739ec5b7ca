"""Run records: the files a fine-tuning run leaves behind, written as it goes.

A run directory holds ``config.json`` (every setting plus resolved values), ``metrics.jsonl``
(one JSON object per line, appended and flushed each step so a live reader sees progress)
and, once the run ends, ``summary.json`` (written atomically). The app, the CLI and the
sample runs all read records through :func:`read_run`, :func:`list_runs` and
:func:`runs_table`; docs/training.md documents every field.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lift_core.errors import LiftError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
RECORD_FILES = (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE)
# Bumped when a field changes meaning, so old records can be told apart.
RECORD_FORMAT = "lift-run/1"

# Columns of runs_table, in display order.
TABLE_COLUMNS = [
    "run", "method", "seed", "lr", "steps", "status", "steps_done", "target_acc_before",
    "target_acc", "source_acc_before", "source_acc", "forgetting", "trainable_params",
    "optimizer_state_bytes", "peak_memory_bytes", "seconds_per_step", "wall_seconds", "path",
]


@dataclass
class RunRecord:
    """A run read back from disk; ``summary`` is None while the run is still going."""

    path: Path  # the run directory
    config: dict  # config.json as written at the start of the run
    metrics: Any  # pandas.DataFrame, one row per metrics.jsonl line
    summary: dict | None  # summary.json, or None for a run in progress (or killed)


def _clean(value):
    """JSON cannot hold NaN/inf; store them as null so every reader can parse the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _json_default(value):
    # Paths, numpy scalars and torch dtypes end up in configs; store their text form.
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _dumps(obj, **kwargs) -> str:
    return json.dumps(_clean(obj), default=_json_default, allow_nan=False, **kwargs)


def _write_atomic(path: Path, text: str) -> None:
    # Write beside the target and rename: a reader never sees half a file.
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class RunWriter:
    """Writes one run directory; refuses to touch a directory that already holds data.

    Args:
        out_dir: the run directory (created if missing).
        overwrite: allow a non-empty directory; only the three record files are replaced,
            anything else in it is left alone.

    Raises:
        LiftError: when ``out_dir`` is a file, or is non-empty and ``overwrite`` is False.
    """

    def __init__(self, out_dir: str | os.PathLike, *, overwrite: bool = False):
        self.path = Path(out_dir).expanduser()
        check_out_dir(self.path, overwrite=overwrite)
        self.path.mkdir(parents=True, exist_ok=True)
        for name in RECORD_FILES:
            (self.path / name).unlink(missing_ok=True)
        self._metrics = open(self.path / METRICS_FILE, "a", encoding="utf-8")

    def write_config(self, config: dict) -> None:
        """Write config.json (atomically), tagged with the record format."""
        _write_atomic(self.path / CONFIG_FILE, _dumps({"format": RECORD_FORMAT, **config}, indent=2))

    def append_metrics(self, row: dict) -> None:
        """Append one metrics row and flush it, so a live reader sees it now."""
        self._metrics.write(_dumps(row) + "\n")
        self._metrics.flush()

    def write_summary(self, summary: dict) -> None:
        """Write summary.json atomically (tmp file + rename) and close the metrics file."""
        _write_atomic(self.path / SUMMARY_FILE, _dumps(summary, indent=2))
        self.close()

    def close(self) -> None:
        if not self._metrics.closed:
            self._metrics.close()


class RunRecorder:
    """Where a run's rows go: the run directory (if any) and the caller's callbacks.

    A callback is a callable that receives each metrics row, or an object with
    ``on_metrics(row)`` and/or ``on_end(summary)``; pass one or a list. The out dir is
    checked here, before anything slow happens, and created only by :meth:`start`.
    """

    def __init__(self, out_dir=None, *, overwrite: bool = False, callbacks=None):
        self.out_dir, self.overwrite, self.writer = out_dir, overwrite, None
        if out_dir:
            check_out_dir(out_dir, overwrite=overwrite)
        if callbacks is None:
            callbacks = []
        elif callable(callbacks) or hasattr(callbacks, "on_metrics") or hasattr(callbacks, "on_end"):
            callbacks = [callbacks]
        self.callbacks = list(callbacks)

    def start(self, config: dict) -> None:
        """Create the run directory and write config.json."""
        if self.out_dir:
            self.writer = RunWriter(self.out_dir, overwrite=self.overwrite)
            self.writer.write_config(config)

    def row(self, row: dict) -> None:
        """Append a metrics row to metrics.jsonl and hand a copy to each callback."""
        if self.writer is not None:
            self.writer.append_metrics(row)
        for cb in self.callbacks:
            if hasattr(cb, "on_metrics"):
                cb.on_metrics(dict(row))
            elif callable(cb) and not hasattr(cb, "on_end"):
                cb(dict(row))

    def end(self, summary: dict) -> None:
        """Write summary.json (atomically) and call each callback's on_end."""
        if self.writer is not None:
            self.writer.write_summary(summary)
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


def check_out_dir(path: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Raise LiftError unless ``path`` is missing, empty, or ``overwrite`` is set."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise LiftError(f"output path {path} is a file, not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise LiftError(
            f"output directory {path} is not empty; choose a new one or pass --overwrite "
            "(overwrite=True) to replace its run record"
        )


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Parse a metrics.jsonl file, ignoring a partially written last line.

    Raises:
        LiftError: when a line other than the last one is not valid JSON.
    """
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines):  # the writer is mid-line: a run in progress
                break
            raise LiftError(f"{path} line {number} is not valid JSON: {exc.msg}") from exc
    return rows


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LiftError(f"{path} is not valid JSON (line {exc.lineno}): {exc.msg}") from exc


def read_run(run_dir: str | os.PathLike) -> RunRecord:
    """Read a run directory (finished or in progress).

    Returns:
        RunRecord with config (dict), metrics (DataFrame, possibly empty) and summary
        (dict, or None while the run has not finished).

    Raises:
        LiftError: when the directory holds no run record.
    """
    import pandas as pd

    path = Path(run_dir).expanduser()
    config = _read_json(path / CONFIG_FILE)
    if config is None or not (path / METRICS_FILE).exists():
        raise LiftError(f"{path} is not a run directory (no {CONFIG_FILE} + {METRICS_FILE})")
    metrics = pd.DataFrame(read_metrics(path / METRICS_FILE))
    return RunRecord(path, config, metrics, _read_json(path / SUMMARY_FILE))


def is_run_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a run record (a model directory also has config.json)."""
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and (path / METRICS_FILE).is_file()


def list_runs(*roots: str | os.PathLike) -> list[Path]:
    """Run directories at or anywhere under ``roots`` (missing roots are skipped), sorted."""
    found = set()
    for root in roots:
        root = Path(root).expanduser()
        if not root.is_dir():
            continue
        if is_run_dir(root):
            found.add(root)
        found.update(p.parent for p in root.rglob(METRICS_FILE) if is_run_dir(p.parent))
    return sorted(found)


def _row(record: RunRecord) -> dict:
    cfg, summary = record.config, record.summary or {}
    metrics = record.metrics
    last_step = int(metrics["step"].max()) if "step" in metrics and len(metrics) else 0
    row = {
        "run": record.path.name, "path": str(record.path),
        "method": cfg.get("method"), "seed": cfg.get("seed"),
        "lr": cfg.get("lr_used", cfg.get("lr")), "steps": cfg.get("steps"),
        "status": summary.get("status", "running"),
        "steps_done": summary.get("steps_done", last_step),
    }
    for key in TABLE_COLUMNS:
        if key not in row:
            row[key] = summary.get(key)
    return row


def runs_table(paths) -> Any:
    """One row per run (see TABLE_COLUMNS); unfinished runs show status "running".

    Args:
        paths: run directories, e.g. from :func:`list_runs`.
    """
    import pandas as pd

    rows = [_row(read_run(p)) for p in paths]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)
