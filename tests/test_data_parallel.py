"""Data-parallel training on CPU (gloo): two processes are the same run as one.

The equality test launches torchrun once (tests/dist_scripts/data_parallel_run.py trains
lift, full, lora and lift with the sparse exchange, 20 steps with a mask refresh at step
10) and compares every rank with the same runs trained here in one process.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lift_core.distributed.data_parallel import DataParallel, token_loss_sum
from lift_core.distributed.launch import rank_environment
from lift_core.errors import LiftError
from lift_core.train.config import FinetuneConfig

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "dist_scripts" / "data_parallel_run.py"
TWO_PROCESS_RUNS = ["lift", "full", "lora", "lift-sparse"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("dp")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", str(SCRIPT), str(out), *TWO_PROCESS_RUNS]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
    if done.returncode != 0 and "gloo" in done.stderr.lower() and "connect" in done.stderr.lower():
        pytest.skip("gloo cannot connect on this machine")
    assert done.returncode == 0, done.stderr[-3000:]
    return {name: [torch.load(out / f"{name}-rank{r}.pt") for r in (0, 1)]
            for name in TWO_PROCESS_RUNS}


@pytest.mark.slow
@pytest.mark.parametrize("name", TWO_PROCESS_RUNS)
def test_two_processes_train_like_one(two_process_results, name):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from data_parallel_run import RUNS, train
    finally:
        sys.path.remove(str(SCRIPT.parent))
    one = train(RUNS[name])
    rank0, rank1 = two_process_results[name]
    assert rank0["world_size"] == 2 and one["world_size"] == 1
    # Same losses, same final weights (float tolerance: sums over ranks change the order).
    torch.testing.assert_close(torch.tensor(rank0["losses"]), torch.tensor(one["losses"]),
                               rtol=1e-5, atol=5e-5)
    for a, b, ref in zip(rank0["tensors"], rank1["tensors"], one["tensors"]):
        assert torch.equal(a, b)  # the ranks hold one model
        torch.testing.assert_close(a, ref, rtol=1e-4, atol=1e-4)
    # Masks agree across ranks and with one process, after the refreshes at steps 10, 20.
    assert len(rank0["masks"]) == len(one["masks"])
    for a, b, ref in zip(rank0["masks"], rank1["masks"], one["masks"]):
        assert torch.equal(a, b) and torch.equal(a, ref)
    assert rank0["refreshes"] == one["refreshes"] == (2 if name.startswith("lift") else 0)


@pytest.mark.slow
def test_sparse_exchange_sends_the_masked_fraction(two_process_results):
    dense = two_process_results["lift"][0]
    sparse = two_process_results["lift-sparse"][0]
    trained = sum(m.numel() for m in sparse["masks"])
    dense_entries = sum(t.numel() for t in dense["tensors"])
    median = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    # Each step: the gradient entries (fp32), plus the loss and the stop flag.
    assert median(dense["bytes_per_step"]) >= 4 * dense_entries
    assert median(sparse["bytes_per_step"]) < 4 * trained + 64
    assert median(sparse["bytes_per_step"]) < 0.06 * median(dense["bytes_per_step"])


def _launch(tmp_path, steps=300):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "lift_core", "finetune", "--processes", "2", "--steps",
               str(steps), "--eval-every", "100", "--eval-limit", "8", "--train-examples", "64",
               "--no-save", "--no-progress", "--out", str(out)]
    proc = subprocess.Popen(command, env=_env(), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # until a few steps are recorded
        metrics = out / "metrics.jsonl"
        if metrics.exists() and metrics.read_text().count('"loss"') >= 3:
            return proc, out
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.5)
    proc.kill()
    pytest.fail("the two-process run recorded no steps in 240 s")


def _rank_pids(launcher_pid: int) -> dict[int, int]:
    """rank -> pid of the launcher's children."""
    ranks = {}
    for child in Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read_text().split():
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        rank = next(int(e[5:]) for e in environ if e.startswith(b"RANK="))
        ranks[rank] = int(child)
    return ranks


@pytest.mark.slow
def test_processes_option_writes_one_record_and_stops_every_rank(tmp_path):
    import json

    proc, out = _launch(tmp_path)
    proc.send_signal(signal.SIGTERM)  # what the app's Stop button sends
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in stderr, stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["processes"] == 2
    assert json.loads((out / "config.json").read_text())["processes_used"] == 2
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if '"loss"' in line]
    assert steps == list(range(1, summary["steps_done"] + 1))  # one writer: each step once
    assert summary["exchange_bytes_per_step"] > 4 * summary["trainable_params"]


@pytest.mark.slow
def test_a_killed_rank_fails_the_run_with_one_line(tmp_path):
    import json

    proc, out = _launch(tmp_path)
    os.kill(_rank_pids(proc.pid)[1], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in stderr, stderr[-2000:]
    assert "process 1 of the run was killed by signal 9" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"].startswith("another process of this run ended")


# --- fast unit tests ------------------------------------------------------------------


class _Ranks:
    def __init__(self, world_size, rank):
        self.num_processes, self.process_index, self.device = world_size, rank, torch.device("cpu")


def test_each_rank_takes_its_own_rows_of_the_global_batch():
    rows = [DataParallel(_Ranks(3, r)).my_rows(8) for r in range(3)]
    assert [(s.start, s.stop) for s in rows] == [(0, 3), (3, 6), (6, 8)]
    with pytest.raises(LiftError, match="smaller than the 3 processes"):
        DataParallel(_Ranks(3, 0)).my_rows(2)


def test_one_process_is_the_plain_path():
    parallel = DataParallel(_Ranks(1, 0))
    assert not parallel.active and parallel.gatherer_factory() is None
    assert parallel.any_rank(True) and not parallel.any_rank(False)
    assert parallel.global_loss(torch.tensor(1.5)) == 1.5
    assert parallel.median_step_bytes() is None


def test_token_loss_sum_over_global_count_is_the_models_mean_loss(char_llama):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(char_llama)
    ids = torch.randint(3, 40, (4, 9))
    labels = ids.clone()
    labels[:, :3] = -100  # the prompt
    labels[2, 6:] = -100  # padding
    mean = model(input_ids=ids, labels=labels).loss
    count = (labels[:, 1:] != -100).sum()
    halves = sum(token_loss_sum(model(input_ids=ids[rows]).logits, labels[rows])
                 for rows in (slice(0, 1), slice(1, 4)))
    torch.testing.assert_close(halves / count, mean)


def test_settings_of_several_processes_are_checked():
    with pytest.raises(LiftError, match="batch_size >= 4"):
        FinetuneConfig(processes=4, batch_size=2)
    with pytest.raises(LiftError, match="grad_exchange must be one of dense, sparse"):
        FinetuneConfig(grad_exchange="allgather")
    env = rank_environment(1, 2, 29500, threads=1)
    assert (env["RANK"], env["WORLD_SIZE"], env["MASTER_PORT"]) == ("1", "2", "29500")


def test_a_launch_of_another_size_than_processes_is_refused(monkeypatch):
    from lift_core.distributed.launch import check_world_size

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(LiftError, match="started as 2 processes"):
        check_world_size(4)
    check_world_size(2)
    check_world_size(1)  # torchrun without --processes: fine


def test_a_run_in_this_process_refuses_several_processes(tmp_path):
    from lift_core.train.loop import finetune

    with pytest.raises(LiftError, match="processes=2 but this run was started as 1 process"):
        finetune(FinetuneConfig(processes=2, out_dir=str(tmp_path / "run")), progress=False)
    assert not (tmp_path / "run").exists()


def test_the_app_form_launches_several_processes_through_the_cli(tmp_path):
    from lift_ui.train_form import finetune_argv

    argv = finetune_argv(FinetuneConfig(processes=2, grad_exchange="sparse"), tmp_path / "run")
    assert argv[argv.index("--processes") + 1] == "2"
    assert argv[argv.index("--grad-exchange") + 1] == "sparse"
