"""One training job per machine, run as a CLI subprocess that outlives any browser tab.

The app never trains inside its own process: it launches the same ``python -m lift_core``
command that it shows the user, in a new session, with output to a log file. A small JSON
file under the runs folder records the active job, so a reloaded page or a second tab
reattaches to it, and a second launch while one runs is refused with a clear message.
Stopping sends SIGTERM, which the finetune CLI turns into a clean "stopped" run record.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lift_core.errors import LiftError
from lift_core.jsonio import write_json
from lift_core.runs.folder import process_start

# Popen objects of jobs this process started: polling them reaps finished children, which
# would otherwise linger as zombies that still answer os.kill(pid, 0).
_CHILDREN: dict[int, subprocess.Popen] = {}


@dataclass
class Job:
    """A launched CLI command and where its run records go."""

    job_id: str  # unique per launch
    label: str  # what the user launched, e.g. "lift, 300 steps"
    argv: list[str]  # the full command line
    run_dirs: list[str]  # run-record folders the command writes, in order
    pid: int
    pid_start: str  # the process's start time, guards against a reused pid
    started: float  # time.time() at launch
    log_path: str
    extra: dict = field(default_factory=dict)

    @property
    def command_line(self) -> str:
        return shell_command(self.argv)

    def is_alive(self) -> bool:
        """True while the job's process runs (a finished child is reaped here)."""
        child = _CHILDREN.get(self.pid)
        if child is not None:
            return child.poll() is None
        return process_start(self.pid) == self.pid_start

    def log_tail(self, lines: int = 20) -> str:
        """Last lines of the job's combined stdout/stderr."""
        try:
            text = Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""
        # tqdm redraws with carriage returns; keep the latest state of each line.
        cleaned = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
        return "\n".join(cleaned[-lines:])


class JobManager:
    """Starts, finds and stops the one active job under ``root`` (a runs folder)."""

    def __init__(self, root: str | Path, *, launcher: list[str] | None = None):
        self.root = Path(root)
        self.jobs_dir = self.root / ".jobs"
        # What argv is appended to; tests swap in a plain Python script.
        self.launcher = launcher or [sys.executable, "-m", "lift_core"]

    @property
    def _state_file(self) -> Path:
        return self.jobs_dir / "active.json"

    @contextmanager
    def _locked(self):
        # An advisory lock makes check-then-start atomic across tabs, sessions and processes.
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        with open(self.jobs_dir / "lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def active(self) -> Job | None:
        """The running job, or None (a finished job's record is kept as last())."""
        job = self.last()
        return job if job is not None and job.is_alive() else None

    def last(self) -> Job | None:
        """The most recently launched job, running or not."""
        try:
            data = json.loads(self._state_file.read_text())
        except (OSError, ValueError):
            return None
        return Job(**data)

    def start(self, argv: list[str], *, run_dirs: list[str | Path], label: str,
              extra: dict | None = None, resume: bool = False) -> Job:
        """Launch ``argv`` (arguments after ``python -m lift_core``) in the background.

        ``resume``: the job continues the runs in ``run_dirs`` (``finetune --resume``), so
        their folders may hold records.

        Raises:
            LiftError: when a job is already running, or a run folder already has a record.
        """
        with self._locked():
            running = self.active()
            if running is not None:
                minutes = (time.time() - running.started) / 60
                raise LiftError(
                    f"a job is already running ({running.label}, started {minutes:.0f} min ago); "
                    "wait for it to finish or stop it first: one job at a time per machine"
                )
            for run_dir in () if resume else run_dirs:
                if Path(run_dir).exists() and any(Path(run_dir).iterdir()):
                    raise LiftError(f"run folder {run_dir} already holds a run; choose another name")
            job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
            log_path = self.jobs_dir / f"{job_id}.log"
            full_argv = [*self.launcher, *argv]
            with open(log_path, "w") as log:
                child = subprocess.Popen(
                    full_argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    cwd=str(Path(__file__).resolve().parents[2]),  # the repository
                    start_new_session=True,  # not killed with the Streamlit script run
                )
            _CHILDREN[child.pid] = child
            job = Job(job_id, label, full_argv, [str(d) for d in run_dirs], child.pid,
                      process_start(child.pid) or "", time.time(), str(log_path), extra or {})
            write_json(self._state_file, asdict(job))
            return job

    def stop(self, *, timeout: float = 15.0) -> bool:
        """Ask the active job to stop (SIGTERM), waiting up to ``timeout`` seconds.

        The CLI answers SIGTERM by finishing the current step and writing a "stopped"
        summary, so the record stays intact. Returns True when nothing runs any more.
        """
        job = self.active()
        if job is None:
            return True
        _signal(job.pid, signal.SIGTERM)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not job.is_alive():
                return True
            time.sleep(0.2)
        _signal(job.pid, signal.SIGKILL)  # last resort; the record then shows "interrupted"
        time.sleep(0.2)
        return not job.is_alive()


def _signal(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the job is its own session leader: reach its whole group
    except (ProcessLookupError, PermissionError):
        pass


def shell_command(argv: list[str]) -> str:
    """``argv`` as one line a POSIX shell reads back as the same arguments."""
    return " ".join(shell_quote(a) for a in argv)


def shell_quote(arg: str) -> str:
    """``arg`` as it must be typed in a POSIX shell (quoted only when it needs to be)."""
    safe = all(c.isalnum() or c in "-_./=:,+" for c in arg)
    return arg if safe and arg else "'" + arg.replace("'", "'\\''") + "'"
