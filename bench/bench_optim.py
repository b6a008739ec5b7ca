"""Benchmark SparseAdamW: step time and state size against torch AdamW and a naive masked Adam.

All optimizers step the same parameters (one Llama-style block, hidden 1024, MLP 2816:
7 matrices, 12.8M numbers) with the same gradients. Rounds are interleaved across the
optimizers, so ratios come from one run under one machine load. On CPU each step is timed
twice: single-thread CPU time (other processes on a shared machine cannot inflate it) and
wall clock on all threads. A second part measures peak memory of backward + step with and
without ``free_dense_grads``.

Run: ``python -m bench.bench_optim`` (or ``python bench/bench_optim.py``); prints a
markdown table and writes bench/results/optim.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lift_core.lowrank.masks import lora_budget  # noqa: E402
from lift_core.optim import SparseAdamW  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "optim.json"
HIDDEN, MLP, BLOCKS = 1024, 2816, 1
# q, k, v, o (out, in); gate, up; down
BLOCK_SHAPES = [(HIDDEN, HIDDEN)] * 4 + [(MLP, HIDDEN)] * 2 + [(HIDDEN, MLP)]
LORA_RANKS = (128, 32)
ROUNDS = 15
ADAMW, NAIVE = "torch AdamW (foreach, dense)", "naive boolean-mask Adam"
DENSE = (ADAMW, "SparseAdamW dense group")
BETAS, EPS, LR = (0.9, 0.95), 1e-6, 2e-4


class NaiveMaskedAdam:
    """The straightforward sparse Adam: boolean masks, ``grad[mask]``, ``p[mask] -= ...``."""

    def __init__(self, params, masks):
        self.params, self.masks, self.t = params, masks, 0
        self.exp_avg = [torch.zeros(int(m.sum())) for m in masks]
        self.exp_avg_sq = [torch.zeros(int(m.sum())) for m in masks]

    @torch.no_grad()
    def step(self):
        self.t += 1
        b1, b2 = BETAS
        step_size = LR * math.sqrt(1 - b2**self.t) / (1 - b1**self.t)
        for p, mask, m, v in zip(self.params, self.masks, self.exp_avg, self.exp_avg_sq):
            g = p.grad[mask]
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p[mask] -= step_size * m / (v.sqrt() + EPS)

    def state_bytes(self) -> int:
        tensors = self.exp_avg + self.exp_avg_sq + self.masks
        return sum(t.numel() * t.element_size() for t in tensors)


def _params(device) -> list[torch.nn.Parameter]:
    params = []
    for shape in BLOCK_SHAPES * BLOCKS:
        p = torch.nn.Parameter(torch.randn(shape, device=device) * 0.02)
        p.grad = torch.randn(shape, device=device) * 1e-3
        params.append(p)
    return params


def _sparse(params, lora_rank: int, free_dense_grads: bool = False) -> SparseAdamW:
    # Masks by magnitude on Gaussian weights: scattered positions, the worst case for the
    # gathers (LIFT masks cluster in rows and columns). The mask rule does not enter the step.
    opt = SparseAdamW([{"params": params, "mask": "magnitude", "lora_rank": lora_rank}],
                      lr=LR, betas=BETAS, eps=EPS, free_dense_grads=free_dense_grads)
    if free_dense_grads:  # what the backward hooks leave behind: gathered 1-D gradients
        grads = [p.grad for p in params]
        for p in params:
            opt._absorb_grad(p)
        for p, g in zip(params, grads):
            p.grad = g
    return opt


def _time_steps(optimizers: dict, device, *, cpu_time: bool) -> dict[str, list[float]]:
    """Seconds per step of each optimizer, one sample per round, rounds interleaved.

    ``cpu_time``: run torch on one thread and read that thread's CPU clock, which other
    processes on a shared machine cannot inflate (they can only take wall-clock time).
    """
    clock = time.thread_time if cpu_time else time.perf_counter
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if cpu_time else threads)
    samples = {name: [] for name in optimizers}
    try:
        for round_index in range(ROUNDS + 1):
            for name, opt in optimizers.items():
                _sync(device)
                began = clock()
                opt.step()
                _sync(device)
                if round_index:  # the first round warms up allocations
                    samples[name].append(clock() - began)
    finally:
        torch.set_num_threads(threads)
    return samples


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_steps(device) -> list[dict]:
    """One row per optimizer and budget: ms per step, ratios, state bytes."""
    params = _params(device)
    numel = sum(p.numel() for p in params)
    adamw = torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=0.0,
                              foreach=True)
    rows = []
    for lora_rank in LORA_RANKS:
        k = sum(lora_budget(tuple(p.shape), lora_rank) for p in params)
        lift = _sparse(params, lora_rank)
        optimizers = {
            ADAMW: adamw,
            "SparseAdamW dense group": SparseAdamW(params, lr=LR, betas=BETAS, eps=EPS),
            "SparseAdamW masked": lift,
            "SparseAdamW masked, free_dense_grads": _sparse(params, lora_rank, True),
            NAIVE: NaiveMaskedAdam(params, [lift.mask_of(p) for p in params]),
        }
        # On CUDA the CPU clock would miss the kernels: wall clock only there.
        cpu = _time_steps(optimizers, device, cpu_time=True) if device.type == "cpu" else None
        wall = _time_steps(optimizers, device, cpu_time=False)
        for name, opt in optimizers.items():
            dense = name in DENSE
            state = opt.state_bytes() if hasattr(opt, "state_bytes") else _torch_state(opt)
            rows.append({
                "lora_rank": lora_rank, "optimizer": name,
                **(_ratios(cpu, name, statistics.median, "cpu_1_thread_median") if cpu else {}),
                **_ratios(wall, name, statistics.median, "wall_median"),
                **_ratios(wall, name, min, "wall_min"),
                "trained_entries": numel if dense else k, "state_bytes": state,
                "state_bytes_per_trained_entry": state / (numel if dense else k),
            })
    return rows


def _ratios(samples: dict, name: str, reduce, label: str) -> dict:
    """ms per step and the two ratios, with the samples reduced by median or min."""
    times = {n: reduce(s) for n, s in samples.items()}
    return {
        f"ms_per_step_{label}": 1e3 * times[name],
        f"vs_adamw_{label}": times[name] / times[ADAMW],
        f"naive_vs_this_{label}": times[NAIVE] / times[name],
    }


def _torch_state(opt) -> int:
    return sum(t.numel() * t.element_size() for s in opt.state.values()
               for t in s.values() if isinstance(t, torch.Tensor) and t.ndim)


def bench_refresh(device) -> dict:
    """Seconds to refresh one exact-SVD LIFT mask, per shape (paid every update_interval)."""
    seconds = {}
    for shape in ((HIDDEN, HIDDEN),):  # a full SVD of (m, n) costs ~ m n min(m, n)
        p = torch.nn.Parameter(torch.randn(shape, device=device) * 0.02)
        opt = SparseAdamW([{"params": [p], "mask": "lift", "lora_rank": 128,
                            "filter_rank": 64, "update_interval": 1}], lr=LR)
        p.grad = torch.randn_like(p)
        began = time.perf_counter()
        opt.step()  # the step is milliseconds; the refresh (SVD) dominates
        seconds["x".join(map(str, shape))] = time.perf_counter() - began
    return seconds


def memory_probe(free_dense_grads: bool) -> dict:
    """Peak memory of 3 train steps of an 8-layer 2048-wide MLP, masked at LoRA rank 32."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    layers = [torch.nn.Linear(2048, 2048, bias=False, device=device) for _ in range(8)]
    model = torch.nn.Sequential(*[m for layer in layers for m in (layer, torch.nn.GELU())])
    weights = [layer.weight for layer in layers]
    counted = {"peak": 0}
    holder = {}

    def count_gradient_bytes(_):
        # Registered before the optimizer's hooks, so it sees each fresh dense gradient.
        live = [w.grad for w in weights if w.grad is not None]
        live += list(holder["opt"]._grad_buffers.values())
        counted["peak"] = max(counted["peak"], sum(t.numel() * t.element_size() for t in live))

    for w in weights:
        w.register_post_accumulate_grad_hook(count_gradient_bytes)
    holder["opt"] = opt = SparseAdamW(
        [{"params": weights, "mask": "magnitude", "lora_rank": 32}], lr=LR,
        free_dense_grads=free_dense_grads)
    x = torch.randn(64, 2048, device=device)
    before = _memory_now(device)
    for _ in range(3):
        model(x).square().mean().backward()
        opt.clip_grad_norm_(1.0)
        opt.step()
        opt.zero_grad()
    return {"peak_minus_start_mb": (_memory_peak(device) - before) / 2**20,
            "peak_gradient_mb_counted": counted["peak"] / 2**20,
            "measured_with": "torch.cuda.max_memory_allocated" if device.type == "cuda"
            else "process peak RSS (VmHWM) minus RSS before training, fresh process"}


def _memory_now(device) -> int:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    return _proc_status_kb("VmRSS") * 1024


def _memory_peak(device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated()
    return _proc_status_kb("VmHWM") * 1024


def _proc_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def bench_memory() -> dict:
    """Each mode in a fresh process, so one mode's freed memory cannot hide the other's."""
    results = {}
    for mode in ("dense_grads", "free_dense_grads"):
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--memory-probe",
                              mode], capture_output=True, text=True, check=True)
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    return results


def _markdown(rows: list[dict], memory: dict, refresh: dict) -> str:
    cpu = "ms_per_step_cpu_1_thread_median" in rows[0]
    lines = ["| LoRA rank | optimizer | " + ("CPU ms/step, 1 thread | x AdamW | naive / this | "
             if cpu else "") + "wall ms/step median (min) | x AdamW median (min) | "
             "state B per trained entry |", "|---" * (8 if cpu else 5) + "|"]
    for r in rows:
        cells = [str(r["lora_rank"]), r["optimizer"]]
        if cpu:
            cells += [f"{r['ms_per_step_cpu_1_thread_median']:.1f}",
                      f"{r['vs_adamw_cpu_1_thread_median']:.2f}",
                      f"{r['naive_vs_this_cpu_1_thread_median']:.2f}"]
        cells += [f"{r['ms_per_step_wall_median']:.1f} ({r['ms_per_step_wall_min']:.1f})",
                  f"{r['vs_adamw_wall_median']:.2f} ({r['vs_adamw_wall_min']:.2f})",
                  f"{r['state_bytes_per_trained_entry']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| gradients | peak memory - start (MB) | peak gradient tensors, counted (MB) |",
              "|---|---|---|"]
    for mode, m in memory.items():
        lines.append(f"| {mode} | {m['peak_minus_start_mb']:.0f} | "
                     f"{m['peak_gradient_mb_counted']:.1f} |")
    lines += ["", "LIFT mask refresh (exact SVD, filter rank 64), seconds per matrix: "
              + ", ".join(f"{shape}: {s:.2f}" for shape, s in refresh.items())]
    return "\n".join(lines)


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else ():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} CPUs"
    return f"{platform.machine()}, {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory-probe", choices=("dense_grads", "free_dense_grads"))
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe == "free_dense_grads")))
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    began = time.perf_counter()
    rows, refresh, memory = bench_steps(device), bench_refresh(device), bench_memory()
    report = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else _cpu_name(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
        "matrices": [list(s) for s in BLOCK_SHAPES * BLOCKS], "rounds": ROUNDS,
        "steps": rows, "refresh_seconds": refresh, "memory": memory,
        "seconds": time.perf_counter() - began,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(_markdown(rows, memory, refresh))
    print(f"\nwrote {RESULTS} in {report['seconds']:.0f} s")


if __name__ == "__main__":
    main()
