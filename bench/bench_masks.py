"""Benchmark: exact vs randomized (block Krylov) LIFT masks, time and agreement.

Power-law matrices (s_i = i^-0.5, random orthogonal singular vectors: the shape of a
trained LLM layer) at 1024^2..4096^2, every MiniLM linear layer, and whole-model mask time.
Times are medians of repeats, exact and randomized interleaved in the same run; CPU runs use
one torch thread (two threads on a shared 2-core box oversubscribe and SVDs crawl) and
report both process CPU seconds and wall seconds.

    nice python -m bench.bench_masks            # full, ~5 min on 2 cores
    nice python -m bench.bench_masks --quick    # 1024^2 and 2048^2, fewer repeats
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from bench.common import power_law_matrix
from lift_core.lowrank.masks import lift_mask, lora_budget

RESULTS = Path(__file__).resolve().parent / "results"
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "lift_core" / "builtin"
RANK = 64  # filter rank and budget (LoRA-equivalent) rank for the power-law matrices
MINILM_RANKS = (4, 8, 16, 32, 64)
WHOLE_MODEL_RANK = 8


def timed(fn) -> tuple[object, float, float]:
    """(result, cpu seconds, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - cpu, time.perf_counter() - wall


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    inter = (a & b).sum().item()
    return inter / ((a | b).sum().item() or 1)


def compare(w: torch.Tensor, k: int, rank: int, repeats: int) -> dict:
    """Median exact and randomized mask times (interleaved) and their Jaccard."""
    times = {"exact": ([], []), "randomized": ([], [])}
    masks = {}
    for rep in range(repeats):
        for mode in ("exact", "randomized"):
            gen = torch.Generator().manual_seed(rep)
            masks[mode], cpu, wall = timed(
                lambda: lift_mask(w, k=k, filter_rank=rank, svd=mode, generator=gen))
            times[mode][0].append(cpu)
            times[mode][1].append(wall)
    med = {f"{mode}_{kind}_s": statistics.median(t[i])
           for mode, t in times.items() for i, kind in enumerate(("cpu", "wall"))}
    return {
        **med,
        "speedup_cpu": med["exact_cpu_s"] / med["randomized_cpu_s"],
        "speedup_wall": med["exact_wall_s"] / med["randomized_wall_s"],
        "jaccard": jaccard(masks["exact"], masks["randomized"]),
        "repeats": repeats,
    }


def bench_power_law(sizes, repeats) -> list[dict]:
    rows = []
    for n in sizes:
        w = power_law_matrix(n, n)
        row = {"n": n, "k": lora_budget((n, n), RANK),
               **compare(w, lora_budget((n, n), RANK), RANK, repeats[n])}
        rows.append(row)
        print(f"  {n}^2: {row}", flush=True)
    return rows


def _minilm_weights():
    from lift_core.models.loading import layer_weight, list_linear_layers, load_model

    model = load_model("minilm")
    return {l.name: layer_weight(model, l).detach().clone() for l in list_linear_layers(model)}


def bench_minilm_layers(weights: dict, forced: bool) -> dict:
    """Jaccard and time ratio over every layer x rank; forced=True runs Krylov on small layers."""
    import lift_core.lowrank.svd as svd_module

    saved = svd_module.RANDOMIZED_MIN_DIM
    if forced:
        svd_module.RANDOMIZED_MIN_DIM = 0
    try:
        jac, t_exact, t_rand = [], 0.0, 0.0
        for w in weights.values():
            for r in MINILM_RANKS:
                k = lora_budget(tuple(w.shape), r)
                exact, cpu_e, _ = timed(lambda: lift_mask(w, k=k, filter_rank=r))
                fast, cpu_r, _ = timed(lambda: lift_mask(
                    w, k=k, filter_rank=r, svd="randomized", generator=torch.Generator().manual_seed(0)))
                jac.append(jaccard(exact, fast))
                t_exact, t_rand = t_exact + cpu_e, t_rand + cpu_r
    finally:
        svd_module.RANDOMIZED_MIN_DIM = saved
    return {"cases": len(jac), "min_jaccard": min(jac), "median_jaccard": statistics.median(jac),
            "exact_cpu_s": t_exact, "randomized_cpu_s": t_rand, "speedup_cpu": t_exact / t_rand}


def whole_model(weights: dict, rank: int, repeats: int) -> dict:
    """CPU seconds to mask every linear layer once (budget rank = filter rank)."""
    out = {"layers": len(weights), "rank": rank}
    for mode in ("exact", "randomized"):
        runs = []
        for rep in range(repeats):
            _, cpu, _ = timed(lambda: [
                lift_mask(w, k=lora_budget(tuple(w.shape), rank), filter_rank=min(rank, min(w.shape)),
                          svd=mode, generator=torch.Generator().manual_seed(rep))
                for w in weights.values()])
            runs.append(cpu)
        out[f"{mode}_cpu_s"] = statistics.median(runs)
    out["speedup_cpu"] = out["exact_cpu_s"] / out["randomized_cpu_s"]
    return out


def _builtin_weights():
    if not BUILTIN_DIR.exists():
        return None
    from lift_core.models.loading import layer_weight, list_linear_layers, load_model

    model = load_model("builtin")
    return {l.name: layer_weight(model, l).detach().clone() for l in list_linear_layers(model)}


def markdown(results: dict) -> str:
    lines = ["| matrix | exact (CPU s) | randomized (CPU s) | speedup CPU | speedup wall | Jaccard |",
             "|---|---|---|---|---|---|"]
    for row in results["power_law"]:
        lines.append(f"| power-law {row['n']}² (r={RANK}, k={row['k']}) | {row['exact_cpu_s']:.2f} | "
                     f"{row['randomized_cpu_s']:.3f} | {row['speedup_cpu']:.1f}x | "
                     f"{row['speedup_wall']:.1f}x | {row['jaccard']:.5f} |")
    for key, label in (("minilm_layers", "MiniLM, all layers x r 4..64 (default rule: exact)"),
                       ("minilm_layers_forced_krylov", "MiniLM, all layers x r 4..64 (Krylov forced)")):
        m = results[key]
        lines.append(f"| {label} | {m['exact_cpu_s']:.2f} | {m['randomized_cpu_s']:.2f} | "
                     f"{m['speedup_cpu']:.2f}x | - | min {m['min_jaccard']:.4f}, "
                     f"median {m['median_jaccard']:.4f} |")
    for key in ("whole_minilm", "whole_builtin"):
        m = results.get(key)
        if isinstance(m, dict):
            lines.append(f"| {key.split('_')[1]} whole model ({m['layers']} layers, r={m['rank']}) | "
                         f"{m['exact_cpu_s']:.2f} | {m['randomized_cpu_s']:.2f} | "
                         f"{m['speedup_cpu']:.2f}x | - | - |")
        elif m:
            lines.append(f"| {key.split('_')[1]} whole model | {m} | | | | |")
    return "\n".join(lines)


def machine() -> dict:
    return {"date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "cpu": platform.processor() or platform.machine(), "logical_cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "load_average_start": [round(x, 2) for x in os.getloadavg()]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, default=RESULTS / "masks.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = (1024, 2048) if args.quick else (1024, 2048, 4096)
    repeats = {1024: 3, 2048: 1 if args.quick else 3, 4096: 3}
    results = {"machine": machine(), "quick": args.quick}
    print("power-law matrices", flush=True)
    results["power_law"] = bench_power_law(sizes, repeats)
    print("MiniLM layers", flush=True)
    weights = _minilm_weights()
    results["minilm_layers"] = bench_minilm_layers(weights, forced=False)
    results["minilm_layers_forced_krylov"] = bench_minilm_layers(weights, forced=True)
    results["whole_minilm"] = whole_model(weights, WHOLE_MODEL_RANK, 1 if args.quick else 3)
    builtin = _builtin_weights()
    results["whole_builtin"] = (whole_model(builtin, WHOLE_MODEL_RANK, 3) if builtin is not None
                                else "skipped: lift_core/builtin/ does not exist")
    results["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(markdown(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
