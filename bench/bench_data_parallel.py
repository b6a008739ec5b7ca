"""Data-parallel LIFT on CPU: bytes exchanged per step (dense vs sparse) and step time of
1 vs 2 processes, on the built-in model and a ~107M-parameter config-built Llama.

Run: ``python -m bench.bench_data_parallel [--quick]``; writes
bench/results/data_parallel.json and prints the markdown table of docs/distributed.md.
Each configuration is one launch: ``torchrun --standalone --nproc_per_node P`` of this
module's worker (or the worker alone for P=1), which sets a Trainer up on the model,
trains ``STEPS`` steps on a fixed synthetic global batch and reports the median step time
(after one warm-up step) and the median bytes rank 0 sent into all-reduces per step.
Bytes do not depend on the machine; step times on CPU are dominated by compute and by how
the 2 cores are shared (each process gets one torch thread, the 1-process run gets one too
and then two).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from bench.common import REPO, RESULTS_DIR, describe_machine, machine, markdown_table, median, write_json

RESULTS = RESULTS_DIR / "data_parallel.json"
MODELS = {  # name -> (how to build it, global batch x sequence)
    "builtin": {"batch": 8, "seq": 64},
    "llama-107m": {"batch": 4, "seq": 128},
}
STEPS = 6


def _model(name: str):
    if name == "builtin":
        from lift_core.models.loading import load_model

        return load_model("builtin", kind="causal")
    from bench.bench_memory import MODEL, _shape, build_model

    return build_model(MODEL["hidden"], 7, **_shape())


def worker(model_name: str, method: str, exchange: str, threads: int) -> dict:
    """One process (or rank) of a configuration; rank 0 returns the measurements."""
    import torch

    from lift_core.train.config import FinetuneConfig
    from lift_core.train.trainer import Trainer

    torch.set_num_threads(threads)
    shape = MODELS[model_name]
    config = FinetuneConfig(method=method, grad_exchange=exchange, batch_size=shape["batch"],
                            lora_rank=4, filter_rank=4, update_interval=1000, steps=1000,
                            device="cpu")
    trainer = Trainer(config).setup(model=_model(model_name))
    generator = torch.Generator().manual_seed(0)
    vocab = trainer.unwrapped_model.config.vocab_size
    ids = torch.randint(0, vocab, (shape["batch"], shape["seq"]), generator=generator)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    seconds = []
    for _ in range(STEPS + 1):
        began = time.perf_counter()
        trainer.step(batch)
        seconds.append(time.perf_counter() - began)
    parallel = trainer.parallel
    return {"model": model_name, "method": method, "exchange": exchange,
            "processes": parallel.world_size, "threads_per_process": threads,
            "step_seconds": median(seconds[1:]), "bytes_per_step": parallel.median_step_bytes(),
            "trainable": trainer.trainable_params,
            "block_entries": sum(r["shape"][0] * r["shape"][1] for r in trainer.method_setup.layers)}


def launch(model_name: str, method: str, exchange: str, processes: int, threads: int) -> dict:
    """Run one configuration in fresh processes; rank 0's result."""
    args = ["-m", "bench.bench_data_parallel", "--worker", model_name, method, exchange,
            str(threads)]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node", str(processes), *args]
    else:
        command = [sys.executable, *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[0][7:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the built-in model only")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        model_name, method, exchange, threads = args.worker
        result = worker(model_name, method, exchange, int(threads))
        if int(os.environ.get("RANK", "0")) == 0:
            print("RESULT " + json.dumps(result), flush=True)
        return
    info = machine()
    rows = []
    for model_name in ["builtin"] if args.quick else list(MODELS):
        for method, exchange, processes, threads in [
                ("lift", "dense", 1, 1), ("lift", "dense", 1, 2), ("lift", "dense", 2, 1),
                ("lift", "sparse", 2, 1), ("full", "dense", 2, 1)]:
            rows.append(launch(model_name, method, exchange, processes, threads))
            print(rows[-1], file=sys.stderr)
    write_json(RESULTS, {"machine": info, "steps": STEPS, "rows": rows})
    print(describe_machine(info))
    print(table(rows))


def table(rows: list[dict]) -> str:
    """The markdown table: per model, bytes per step and step time by configuration."""
    out = []
    for row in rows:
        dense = next((r for r in rows if r["model"] == row["model"] and r["method"] == "lift"
                      and r["exchange"] == "dense" and r["processes"] > 1), None)
        ratio = (f"{row['bytes_per_step'] / dense['bytes_per_step']:.3f}"
                 if row["bytes_per_step"] and dense else "")
        out.append([row["model"], row["method"], row["processes"], row["threads_per_process"],
                    row["exchange"] if row["processes"] > 1 else "",
                    f"{row['bytes_per_step']:,}" if row["bytes_per_step"] else "0", ratio,
                    f"{row['trainable'] / row['block_entries']:.3f}",
                    f"{1000 * row['step_seconds']:.0f}"])
    return markdown_table(["model", "method", "processes", "threads each", "exchange",
                           "bytes / step (rank 0)", "vs lift dense", "trained fraction",
                           "ms / step"], out)


if __name__ == "__main__":
    main()
