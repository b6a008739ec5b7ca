"""Optimizer state, peak memory and step time of lift / full / lora / magnitude at matched budget.

The model is a Llama built from a config (hidden 1024, MLP 2816, vocab 8192, 16 heads,
random init: memory and time do not depend on the values) and every method is set up and
trained by :class:`lift_core.train.trainer.Trainer`, the code path of every fine-tuning run:
``Trainer.setup(model=...)``, then ``Trainer.step(batch)`` (forward, backward, clipping at
norm 1.0, optimizer step, schedule step, zero_grad), its phases timed through the
trainer's ``phase_runner``.
Step times come from one process holding all four models, rounds interleaved, so ratios
share one machine load. Peak memory comes from a fresh process per method: peak RSS
(VmHWM, reset after set-up) minus RSS after the model was built, plus the bytes of
parameters, gradients, gradient buffers and optimizer state counted at every gradient hook,
and the activations autograd saves for backward (counted through saved-tensor hooks, each
storage once, parameters left out). The counted numbers are tensor bytes, the same whatever
the allocator does; RSS is shown beside them, measured with glibc returning large blocks to
the OS (MALLOC_MMAP_THRESHOLD_=1 MiB), since otherwise freed-but-kept heap decides it.

Run: ``python -m bench.bench_memory [--quick | --size 100m]``; writes bench/results/memory.json
(``--size 100m``: a ~107M-parameter Llama, batch 4 x 256, memory only, memory_100m.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from bench.common import (RESULTS_DIR, Clock, machine, markdown_table, median,
                          proc_status_bytes, reset_peak_rss, run_child, tensor_bytes,
                          use_one_thread, write_json)

RESULTS = RESULTS_DIR / "memory.json"
METHODS = ("full", "lift", "lora", "magnitude")
MODEL = {"hidden": 1024, "intermediate": 2816, "vocab": 8192, "heads": 16}
# LoRA rank 32 at hidden 1024 is the paper's density (Llama-2-7B: rank 128 at hidden 4096):
# k is 6.25% of each attention matrix and 4.3% of each MLP matrix.
LORA_RANK, FILTER_RANK = 32, 32
SIZES = {  # layers, batch x sequence, interleaved timing rounds, steps in the memory probe
    "full": {"layers": 4, "batch": 4, "seq": 128, "rounds": 5, "memory_steps": 3},
    "quick": {"layers": 2, "batch": 2, "seq": 128, "rounds": 3, "memory_steps": 2},
    # ~107M parameters (7 blocks of 12.8M + 16.8M embeddings); memory only, no timing rounds.
    "100m": {"layers": 7, "batch": 4, "seq": 256, "rounds": 0, "memory_steps": 2},
}
# glibc keeps freed heap blocks below this size in the process; 1 MiB returns every
# tensor-sized block to the OS, so RSS follows live tensors instead of allocator history.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "1048576"}
MB = 2**20


def build_model(hidden: int, layers: int, *, intermediate: int, vocab: int, heads: int,
                seed: int = 0):
    """A randomly initialised Llama causal LM of the given shape (fp32, on CPU)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=heads, vocab_size=vocab,
                         max_position_embeddings=1024)
    return LlamaForCausalLM(config)


def set_up(model, method: str, device, lora_rank: int, filter_rank: int):
    """A :class:`~lift_core.train.trainer.Trainer` for ``model`` (the method's default LR).

    The mask is never refreshed during the benchmark (a refresh is an SVD per matrix every
    ``update_interval`` steps, measured by bench_masks, not part of a step).
    """
    from lift_core.train.trainer import Trainer
    from lift_core.train.config import FinetuneConfig

    config = FinetuneConfig(method=method, lora_rank=lora_rank, filter_rank=filter_rank,
                            update_interval=10**9, device=device.type)
    return Trainer(config).setup(model=model)


def make_batch(vocab: int, batch: int, seq: int, device) -> dict:
    ids = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids.to(device), "labels": ids.to(device)}


def train_step(trainer, batch: dict, phases: dict | None = None, clock=None) -> None:
    """One ``Trainer.step``; ``phases`` (with ``clock``) collects the time of each phase."""
    from lift_core.train.trainer import run_phase

    def timed(name, fn):
        result = []
        phases.setdefault(name, []).append(clock(lambda: result.append(fn())))
        return result[0]

    trainer.phase_runner = run_phase if phases is None else timed
    trainer.step(batch)


# --- step time: one process, rounds interleaved --------------------------------------------


def time_methods(size: dict, device) -> dict:
    """Per method: median step seconds (CPU and wall, or CUDA events) and per-phase medians."""
    clock = Clock(device)
    batch = make_batch(MODEL["vocab"], size["batch"], size["seq"], device)
    trainers = {}
    for method in METHODS:
        model = build_model(MODEL["hidden"], size["layers"], **_shape())
        trainers[method] = set_up(model, method, device, LORA_RANK, FILTER_RANK)
        train_step(trainers[method], batch)  # warm-up: allocations, lazy dense state
    samples = {m: {} for m in METHODS}
    for _ in range(size["rounds"]):
        for method in METHODS:
            train_step(trainers[method], batch, samples[method], clock)
    return {method: _summarise(phases) for method, phases in samples.items()}


def _shape() -> dict:
    return {k: MODEL[k] for k in ("intermediate", "vocab", "heads")}


def _summarise(phases: dict) -> dict:
    """Median seconds per phase and for the whole step (sum of the phases of each round)."""
    out = {}
    for kind in ("cpu", "wall"):
        if phases["forward"][0][kind] is None:
            continue
        rounds = range(len(phases["forward"]))
        per_round = [sum(p[i][kind] for p in phases.values()) for i in rounds]
        out[f"step_{kind}_s"] = median(per_round)
        out[f"step_{kind}_samples_s"] = per_round
        for name, samples in phases.items():
            out[f"{name}_{kind}_s"] = median(s[kind] for s in samples)
    return out


# --- memory: one fresh process per method ----------------------------------------------------


class _Counter:
    """Peak bytes of parameters + gradients + gradient buffers + optimizer state alive at once."""

    def __init__(self):
        self.trainer, self.peak, self.at_peak, self.hooked = None, 0, {}, set()

    def hook(self, params) -> None:
        """Sample at every gradient accumulation of ``params`` (each hooked once)."""
        for p in params:
            if p.requires_grad and id(p) not in self.hooked:
                self.hooked.add(id(p))
                p.register_post_accumulate_grad_hook(self.sample)

    def sample(self, _=None) -> None:
        if self.trainer is None:
            return
        params = list(self.trainer.model.parameters())
        opt = self.trainer.optimizer
        parts = {
            "params": tensor_bytes(params),
            "grads": tensor_bytes(p.grad for p in params),
            "grad_buffers": tensor_bytes(getattr(opt, "_grad_buffers", {}).values()),
            "optimizer_state": tensor_bytes(t for s in opt.state.values() for t in s.values()
                                            if isinstance(t, torch.Tensor)),
        }
        total = sum(parts.values())
        if total > self.peak:
            self.peak, self.at_peak = total, parts


class _SavedActivations:
    """Bytes autograd saves for backward during a step (each storage once, parameters left
    out): the activations, counted from tensors, not from the allocator. All of them are
    alive at the end of the forward, so the largest step's total is the activation peak."""

    def __init__(self, params):
        self.param_storages = {p.untyped_storage().data_ptr() for p in params}
        self.storages: dict[int, int] = {}
        self.peak = 0

    def pack(self, tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self.param_storages:
            self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    def step_done(self) -> None:
        self.peak = max(self.peak, sum(self.storages.values()))
        self.storages = {}


def memory_probe(method: str, device_name: str, size: dict) -> dict:
    """Set up ``method`` in this (fresh) process, train a few steps, report its peaks."""
    use_one_thread()
    device = torch.device(device_name)
    model = build_model(MODEL["hidden"], size["layers"], **_shape()).to(device)
    model_bytes = tensor_bytes(model.parameters())
    after_load = _memory_now(device)
    # Hooked before set-up, so these hooks run before the optimizer's free_dense_grads hook
    # and see each fresh dense gradient; LoRA's adapters exist only after set-up.
    counter = _Counter()
    counter.hook(model.parameters())
    trainer = set_up(model, method, device, LORA_RANK, FILTER_RANK)
    setup_peak = _memory_peak(device)
    counter.trainer = trainer
    counter.hook(trainer.model.parameters())
    batch = make_batch(MODEL["vocab"], size["batch"], size["seq"], device)
    reset = _reset_peak(device)
    saved = _SavedActivations(trainer.model.parameters())
    for _ in range(size["memory_steps"]):
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda tensor: tensor):
            train_step(trainer, batch)
        saved.step_done()
        counter.sample()
    state = trainer.optimizer.state_bytes()
    return {
        "method": method, "device": device_name, "trainable_params": trainer.trainable_params,
        "optimizer_state_bytes": state,
        "state_bytes_per_trained_entry": state / trainer.trainable_params,
        "peak_minus_load_mb": (_memory_peak(device) - after_load) / MB,
        "setup_peak_minus_load_mb": (setup_peak - after_load) / MB,
        "counted_peak_mb": counter.peak / MB,
        "counted_peak_minus_model_mb": (counter.peak - model_bytes) / MB,
        "counted_at_peak_mb": {k: v / MB for k, v in counter.at_peak.items()},
        "saved_activations_mb": saved.peak / MB,
        # An upper bound of what training adds to the model in tensors: the training state's
        # peak (during backward) plus every activation (alive at the end of the forward).
        "tensor_total_minus_model_mb": (counter.peak - model_bytes + saved.peak) / MB,
        "peak_reset_after_setup": reset,
        "measured_with": ("torch.cuda.max_memory_allocated" if device.type == "cuda" else
                          "VmHWM (peak RSS) of a fresh process minus its RSS after the model "
                          "was built"),
    }


def _memory_now(device) -> int:
    if device.type == "cuda":
        return torch.cuda.memory_allocated()
    return proc_status_bytes("VmRSS")


def _memory_peak(device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated()
    return proc_status_bytes("VmHWM")


def _reset_peak(device) -> bool:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return True
    return reset_peak_rss()


# --- the report ------------------------------------------------------------------------------


def run(quick: bool = False, mode: str | None = None) -> dict:
    """Time and probe every method on CPU (and on CUDA when present); write memory.json."""
    info = machine()
    use_one_thread()
    os.environ.update(MALLOC_ENV)  # the probes' RSS: see MALLOC_ENV
    mode = mode or ("quick" if quick else "full")
    size = SIZES[mode]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    report = {"machine": info, "mode": mode, "model": {**MODEL, **size},
              "lora_rank": LORA_RANK, "filter_rank": FILTER_RANK, "methods": list(METHODS),
              "threads": 1, "malloc_env": MALLOC_ENV, "results": {}}
    for device_name in devices:
        timing = time_methods(size, torch.device(device_name)) if size["rounds"] else None
        memory = {m: run_child("bench_memory", "--probe", m, "--device", device_name,
                               "--mode", mode) for m in METHODS}
        report["results"][device_name] = _rows(timing, memory)
    write_json(RESULTS if mode != "100m" else RESULTS.with_name("memory_100m.json"), report)
    return report


def _rows(timing: dict, memory: dict) -> list[dict]:
    """One row per method: its numbers and its ratios to full and to LoRA (no timing: None)."""
    rows = []
    for method in METHODS:
        m, lora = memory[method], memory["lora"]
        row = {**m, "peak_vs_lora": m["peak_minus_load_mb"] / lora["peak_minus_load_mb"],
               "counted_vs_lora": (m["counted_peak_minus_model_mb"]
                                   / lora["counted_peak_minus_model_mb"]),
               "tensor_vs_lora": (m["tensor_total_minus_model_mb"]
                                  / lora["tensor_total_minus_model_mb"])}
        if timing:
            key = "step_cpu_s" if "step_cpu_s" in timing["full"] else "step_wall_s"
            t = timing[method]
            row.update(t, step_vs_full=t[key] / timing["full"][key], ratio_clock=key,
                       step_wall_vs_full=t["step_wall_s"] / timing["full"]["step_wall_s"])
        rows.append(row)
    return rows


NOT_RUN = "not run (no GPU in this session)"


def _tensor_cells(row: dict) -> list[str]:
    if "saved_activations_mb" not in row:  # results from before the activation count
        return ["n/a", "n/a"]
    return [f"{row['saved_activations_mb']:.0f}",
            f"{row['tensor_total_minus_model_mb']:.0f} ({row['tensor_vs_lora']:.2f})"]


def markdown(report: dict) -> str:
    """The docs tables: memory per method, then step time per method (CPU, then GPU columns)."""
    gpu = {r["method"]: r for r in report["results"].get("cuda", [])}
    memory, time = [], []
    for r in report["results"]["cpu"]:
        g = gpu.get(r["method"])
        memory.append([
            r["method"], f"{r['trainable_params']:,}", f"{r['optimizer_state_bytes'] / MB:.1f}",
            f"{r['state_bytes_per_trained_entry']:.1f}", f"{r['counted_peak_minus_model_mb']:.1f}",
            *_tensor_cells(r),
            f"{r['peak_minus_load_mb']:.0f} ({r['peak_vs_lora']:.2f})",
            f"{r['setup_peak_minus_load_mb']:.0f}",
            f"{g['peak_minus_load_mb']:.0f} ({g['peak_vs_lora']:.2f})" if g else NOT_RUN])
        if "step_cpu_s" not in r:
            continue
        time.append([
            r["method"], f"{r['step_cpu_s']:.2f}", f"{r['step_vs_full']:.2f}",
            f"{r['forward_cpu_s']:.2f} / {r['backward_cpu_s']:.2f} / {r['optimizer_cpu_s']:.3f}",
            f"{r['step_wall_s']:.2f}", f"{r['step_wall_vs_full']:.2f}",
            f"{1e3 * g['step_wall_s']:.1f} ({g['step_vs_full']:.2f})" if g else NOT_RUN])
    table = markdown_table(
        ["method", "trained numbers", "optimizer state (MB)", "state B / trained number",
         "grads + buffers + state + adapters (MB)", "saved activations (MB)",
         "tensor total - model, MB (x LoRA)", "peak RSS - model, MB (x LoRA)",
         "set-up peak RSS - model (MB)", "GPU: peak - model MB (x LoRA)"], memory)
    if not time:
        return table
    return table + "\n\n" + markdown_table(
        ["method", "step CPU s, median", "x full", "forward / backward / optimizer CPU s",
         "step wall s, median", "x full (wall)", "GPU: ms/step (x full)"], time)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 layers, 3 rounds")
    parser.add_argument("--size", choices=("100m",), help="a ~107M Llama, memory only")
    parser.add_argument("--probe", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="full", choices=tuple(SIZES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(memory_probe(args.probe, args.device, SIZES[args.mode])))
        return
    report = run(quick=args.quick, mode=args.size)
    print(markdown(report))
    print(f"wrote {RESULTS if args.size is None else RESULTS.with_name('memory_100m.json')}", file=sys.stderr)


if __name__ == "__main__":
    main()
