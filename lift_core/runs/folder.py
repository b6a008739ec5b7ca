"""Who may write a run folder, and what a run folder may hold.

One writer per folder. A writer claims a folder by creating ``.lift-claim.json`` in it
atomically: the claim is written and ``flock``-ed under a unique temporary name, then
hard-linked into place, which fails when a claim is already there. The lock is held for the
run's life and the claim is deleted once ``summary.json`` is written. The kernel drops the
lock when a process dies, even by SIGKILL, so a claim left behind tells a killed run from a
live one (readers check its pid, process start time, boot id and host instead of locking).
The claim also reserves a few KiB on disk, so a run that fills the disk can still record in
place that it failed.

A run record is ``config.json`` (a run's: ``"format": "lift-run/..."``), ``metrics.jsonl``,
``summary.json``, ``progress.json``, ``generations.jsonl``, the claim and this module's temporary files, and beside a run's config.json
what the run saved (``RUN_OUTPUTS``: ``model/``, ``adapter/``, ``checkpoint/``,
``delta.safetensors``). ``overwrite`` replaces those and nothing else; a folder with other
model files or sub-folders, a config.json that is not a run's, or (without a run's
config.json) any other file is never written. docs/reliability.md.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

from lift_core.errors import LiftError
from lift_core.jsonio import read_json_object, write_all

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
# What a running run is doing now (an evaluation's batches done/total), replaced atomically.
PROGRESS_FILE = "progress.json"
# A few prompts with the model's answers at each evaluation, one JSON line per evaluation.
GENERATIONS_FILE = "generations.jsonl"
RECORD_FILES = (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, PROGRESS_FILE, GENERATIONS_FILE)
CLAIM_FILE = ".lift-claim.json"
# Bumped when a field changes meaning, so old records can be told apart.
RECORD_FORMAT = "lift-run/1"
# The claim is padded to this size so that the end state fits in blocks already on disk.
CLAIM_BYTES = 4096
# Never part of a run record: weights, tokenizers and generation settings of a model.
MODEL_FILES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".onnx", ".h5",
               ".msgpack", "tokenizer.json", "tokenizer_config.json", "tokenizer.model",
               "special_tokens_map.json", "generation_config.json", "vocab.txt", "merges.txt")

# What a run itself may leave beside its record (lift_core.train.export / checkpoint): the
# fine-tuned model, its sparse delta (also as a SHiRA adapter), a LoRA-family adapter, the
# latest checkpoint.
RUN_OUTPUTS = ("model", "adapter", "shira", "checkpoint", "delta.safetensors")

_HELD: set[str] = set()  # tokens of the claims this process holds (its own pid is alive)


# --- processes ---------------------------------------------------------------------------


def process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/pid/stat), None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def owner_state(claim: dict) -> str:
    """Whether the process named by a claim still runs: "alive", "dead" or "unknown".

    "unknown" means another host (or a claim without a pid): nothing here can check it.
    """
    pid = claim.get("pid")
    if not isinstance(pid, int) or claim.get("host") != socket.gethostname():
        return "unknown"
    if claim.get("boot_id") and claim["boot_id"] != _boot_id():
        return "dead"  # the machine restarted since
    if pid == os.getpid():
        return "alive" if claim.get("token") in _HELD else "dead"
    if claim.get("pid_start") and Path("/proc/self/stat").exists():
        return "alive" if process_start(pid) == claim["pid_start"] else "dead"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "dead"
    except PermissionError:
        pass
    return "alive"


def describe_owner(claim: dict) -> str:
    started = claim.get("started")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(started)) if started else ""
    return f"process {claim.get('pid')} on {claim.get('host')}{when}"


def _is_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp") and (
        name.startswith(".lift-") or any(name.startswith(f".{r}.") for r in RECORD_FILES))


# --- what a folder holds -------------------------------------------------------------------


def read_claim(folder: Path) -> dict | None:
    """The folder's claim, None without one ({} while it cannot be read)."""
    try:
        return read_json_object(Path(folder) / CLAIM_FILE)
    except (LiftError, OSError):
        return {}


def _is_run_config(path: Path) -> bool:
    try:
        config = read_json_object(path)
    except (LiftError, OSError):
        return False
    return bool(config) and str(config.get("format", "")).startswith("lift-run/")


def foreign_entries(folder: Path) -> list[str]:
    """Names in ``folder`` that are not part of a run record (those make it off limits).

    Beside a run's config.json, other plain files (a user's notes) are kept and allowed;
    model files, sub-folders and a config.json that is not a run's never are.
    """
    run_config = _is_run_config(folder / CONFIG_FILE)
    foreign = []
    for entry in sorted(folder.iterdir()):
        name = entry.name
        if name in (METRICS_FILE, SUMMARY_FILE, PROGRESS_FILE, GENERATIONS_FILE) or _ours(name):
            continue
        if name == CONFIG_FILE or name in RUN_OUTPUTS:
            ok = run_config
        else:
            ok = run_config and entry.is_file() and not name.endswith(MODEL_FILES)
        if not ok:
            foreign.append(name + ("/" if entry.is_dir() else ""))
    return foreign


def check_out_dir(path: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Raise LiftError unless a run may be written to ``path``.

    Allowed: a missing or empty folder, or (with ``overwrite``) one that holds nothing but a
    run record whose writer is no longer alive.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise LiftError(f"output path {path} is a file, not a directory")
    if not path.is_dir() or not any(path.iterdir()):
        return
    _check_contents(path, overwrite=overwrite, claim=read_claim(path))


def _check_contents(path: Path, *, overwrite: bool, claim: dict | None) -> None:
    foreign = foreign_entries(path)
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    if foreign and not overwrite:
        raise LiftError(f"output directory {path} is not empty (it holds {shown}, which a run "
                        "record never has); choose a new or empty folder")
    if foreign:
        raise LiftError(f"output directory {path} holds {shown}, which a run record never has "
                        "(a model or other data?); runs are never written there, even with "
                        "--overwrite: choose a new or empty folder")
    if claim is not None and not claim.get("status") and owner_state(claim) != "dead":
        raise _in_use(path, claim)
    if not overwrite:
        raise LiftError(
            f"output directory {path} is not empty; choose a new one or pass --overwrite "
            "(overwrite=True) to replace its run record"
        )


def check_resumable(path: str | os.PathLike) -> Path:
    """Raise LiftError unless ``path`` holds a run record with a checkpoint and no live writer.

    Returns:
        The folder as a Path.
    """
    path = Path(path).expanduser()
    if not _is_run_config(path / CONFIG_FILE):
        raise LiftError(f"{path} is not a run folder (no run config.json); --resume takes the "
                        "--out folder of an earlier finetune run")
    if not any((path / name).is_dir() for name in ("checkpoint", ".lift-checkpoint-previous")):
        raise LiftError(f"run folder {path} has no checkpoint to resume from (start runs with "
                        "--checkpoint-every N to be able to resume them)")
    claim = read_claim(path)
    if claim is not None and not claim.get("status") and owner_state(claim) != "dead":
        raise _in_use(path, claim)
    return path


def _ours(name: str) -> bool:
    return name == CLAIM_FILE or _is_temp(name) or name.startswith(".lift-")


def prepare_claimed(folder: Path, *, overwrite: bool) -> None:
    """Under our claim: look again (the folder may have changed since the first look), then
    delete an earlier run's record files and temporary files, and nothing else."""
    if any(not _ours(entry.name) for entry in folder.iterdir()):
        _check_contents(folder, overwrite=overwrite, claim=None)
    for entry in folder.iterdir():
        if entry.name in RUN_OUTPUTS and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)  # an earlier run's model or checkpoint is part of its record
        elif entry.name in RECORD_FILES + RUN_OUTPUTS or (
                _is_temp(entry.name) and not entry.name.startswith(".lift-")):
            entry.unlink(missing_ok=True)


def _in_use(path: Path, claim: dict) -> LiftError:
    if not claim.get("pid"):
        return LiftError(f"run folder {path} has a claim that cannot be read; if no run is "
                         f"writing there, delete {path / CLAIM_FILE}")
    if owner_state(claim) == "unknown":
        return LiftError(f"run folder {path} is claimed by {describe_owner(claim)}, which cannot be "
                         f"checked from here; if that run is gone, delete {path / CLAIM_FILE}")
    return LiftError(f"run folder {path} is in use by a running run ({describe_owner(claim)}); "
                     "wait for it to end or stop it, or choose another folder")


# --- the claim -----------------------------------------------------------------------------


class RunClaim:
    """An exclusive, lifelong claim on one run folder (see the module docstring).

    Use :meth:`acquire`; then :meth:`release` once summary.json is written, or
    :meth:`mark_ended` when it could not be; :meth:`close` only drops the lock.
    """

    def __init__(self, folder: Path, fd: int, identity: dict):
        self.folder, self._fd, self.identity = folder, fd, identity
        _HELD.add(identity["token"])

    @property
    def path(self) -> Path:
        return self.folder / CLAIM_FILE

    @classmethod
    def acquire(cls, folder: Path, *, overwrite: bool) -> RunClaim:
        """Claim ``folder`` (which must exist); a stale claim is taken over only with overwrite.

        Raises:
            LiftError: another writer holds the folder, or it is not empty and not ``overwrite``.
        """
        identity = {"pid": os.getpid(), "host": socket.gethostname(), "boot_id": _boot_id(),
                    "pid_start": process_start(os.getpid()), "started": time.time(),
                    "token": uuid.uuid4().hex}
        tmp = folder / f".lift-claim.{identity['token'][:12]}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else knows this file yet
            write_all(fd, _padded(identity))
            os.fsync(fd)
            for _ in range(20):  # retried only when the claim changed under us
                try:
                    os.link(tmp, folder / CLAIM_FILE)
                    return cls(folder, fd, identity)
                except FileExistsError:
                    pass
                if cls._take_over(folder, tmp, overwrite):
                    return cls(folder, fd, identity)
            raise LiftError(f"run folder {folder} keeps changing claims; try again")
        except BaseException:
            os.close(fd)
            raise
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    def _take_over(folder: Path, tmp: Path, overwrite: bool) -> bool:
        """Replace a claim whose owner is gone by ours (``tmp``); False when it vanished."""
        path = folder / CLAIM_FILE
        try:
            old = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            claim = read_claim(folder) or {}
            try:
                fcntl.flock(old, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise _in_use(folder, claim) from None
            try:
                replaced = os.fstat(old).st_ino != os.stat(path).st_ino
            except FileNotFoundError:
                replaced = True
            if replaced:
                return False  # released (or replaced) meanwhile: start over
            if owner_state(claim) == "unknown" or not overwrite:
                check_out_dir(folder, overwrite=overwrite)  # says why (another host, not empty)
            os.replace(tmp, path)  # atomic: always a whole claim at the path
            return True
        finally:
            os.close(old)

    def release(self) -> None:
        """The run ended with its summary written: delete the claim and drop the lock."""
        try:
            if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                self.path.unlink()
        except OSError:
            pass
        self._unlock(ended=True)

    def mark_ended(self, status: str, error: str) -> None:
        """Record the end in the claim itself (its reserved bytes), for a run whose summary
        could not be written; best effort, as the disk may refuse even this."""
        state = {**self.identity, "status": status, "error": error[:3000], "ended": time.time()}
        try:
            os.pwrite(self._fd, _padded(state), 0)
            os.fsync(self._fd)
        except OSError:
            pass
        self._unlock(ended=True)

    def close(self) -> None:
        """Drop the lock but keep the claim: the run counts as going on while this process
        lives, and as interrupted once it has ended."""
        self._unlock(ended=False)

    def _unlock(self, *, ended: bool) -> None:
        if ended:
            _HELD.discard(self.identity["token"])
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _padded(state: dict) -> bytes:
    data = json.dumps(state).encode("utf-8")
    return data + b" " * max(0, CLAIM_BYTES - 1 - len(data)) + b"\n"
