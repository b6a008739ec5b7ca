"""Start a data-parallel run's processes on this machine (``--processes N``).

``python -m lift_core finetune --processes N ...`` runs :func:`launch_ranks`: N copies of
the same command, each told its rank through the environment torch.distributed and
accelerate read (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``, ...), exactly
what ``torchrun --standalone --nproc_per_node N`` sets up; either launcher works. The
launcher forwards SIGTERM and Ctrl-C to every rank (they agree to stop at the same step),
and when a rank ends while the others run it gives them a grace period to notice (their
next exchange fails and the main process records the run "failed"), then ends them: a dead
rank never leaves a hung job behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from lift_core.errors import LiftError

# Seconds the other ranks get to end by themselves after one rank ended, then after SIGTERM.
GRACE_SECONDS = 30.0
KILL_SECONDS = 15.0


def process_rank() -> int:
    """This process's rank in a data-parallel run (0 when it runs alone)."""
    return int(os.environ.get("RANK", "0") or 0)


def launched_world_size() -> int:
    """How many processes the launcher started (1 when none did)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def check_world_size(processes: int) -> None:
    """A run that says ``processes`` > 1 must run as that many launched processes (the
    finetune CLI launches them; compare, sweep and library calls train in this process)."""
    started = launched_world_size()
    if processes > 1 and started != processes:
        how = ("started as 1 process" if started == 1 else f"started as {started} processes")
        raise LiftError(f"processes={processes} but this run was {how}: use `python -m "
                        f"lift_core finetune --processes {processes}` (or torchrun "
                        f"--nproc_per_node {processes}), one run at a time")


def rank_environment(rank: int, world_size: int, port: int, threads: int) -> dict[str, str]:
    """The environment of one rank (what torchrun's standalone mode sets)."""
    return {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world_size), "LOCAL_WORLD_SIZE": str(world_size),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": str(threads)}


def free_port() -> int:
    """A TCP port nobody listens on now (the ranks' rendezvous)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_ranks(world_size: int, cli_args: list[str], *, threads: int | None = None) -> int:
    """Run ``python -m lift_core <cli_args>`` as ``world_size`` ranks and wait for them.

    Args:
        world_size: processes to start.
        cli_args: the command's arguments (the caller removed ``--processes``).
        threads: torch threads per rank; None: the CPU cores shared out between the ranks.

    Returns:
        Rank 0's exit code (1 if a rank had to be ended).
    """
    threads = threads or max(1, (os.cpu_count() or 1) // world_size)
    port = free_port()
    command = [sys.executable, "-m", "lift_core", *cli_args]
    ranks = [subprocess.Popen(command, env=rank_environment(r, world_size, port, threads))
             for r in range(world_size)]
    forward = lambda signum, frame: _signal_all(ranks, signal.SIGTERM)  # noqa: E731
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _wait_for_ranks(ranks)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _wait_for_ranks(ranks: list[subprocess.Popen]) -> int:
    """Wait for every rank; once one has ended, end the others after the grace period."""
    first_end, had_to_end = None, False
    while [r.poll() for r in ranks].count(None):  # poll every rank, not just the first alive
        ended = [(i, r.returncode) for i, r in enumerate(ranks) if r.returncode is not None]
        if ended and first_end is None:
            first_end = (time.monotonic(), *ended[0])
        if first_end is not None and time.monotonic() - first_end[0] > GRACE_SECONDS:
            late = time.monotonic() - first_end[0] > GRACE_SECONDS + KILL_SECONDS
            _signal_all(ranks, signal.SIGKILL if late else signal.SIGTERM)
            had_to_end = True
        time.sleep(0.2)
    if first_end is not None and (had_to_end or first_end[2] < 0):
        rank, code = first_end[1], first_end[2]
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        ended = (f"; the others were ended after {GRACE_SECONDS:.0f} s" if had_to_end
                 else "; the others stopped with it")
        print(f"error: process {rank} of the run {how}{ended} (the run record says where "
              "training stopped)", file=sys.stderr)
    code = ranks[0].returncode
    return code if code >= 0 else 1


def _signal_all(ranks: list[subprocess.Popen], sig: int) -> None:
    for rank in ranks:
        if rank.poll() is None:
            try:
                rank.send_signal(sig)
            except ProcessLookupError:
                pass
