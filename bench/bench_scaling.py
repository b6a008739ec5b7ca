"""Benchmark: how exact and randomized LIFT mask time grows with matrix size.

Square power-law matrices (s_i = i^-0.5) from 256^2 to 4096^2 at filter rank = budget rank
64. The fitted exponent is the slope of a least-squares line through log(time) vs log(n):
an exact SVD is O(n^3), the block Krylov mask O(n^2 * r * depth). Where
lift_core.lowrank.svd.max_krylov_depth says Krylov does not pay off, the randomized mode uses exact
SVD, so its exponent is fitted on the sizes where Krylov actually runs. Results go to bench/results/scaling.json;
docs/img/mask_scaling.png is drawn when matplotlib is installed, else a plain SVG (matplotlib is not a requirement).

    nice python -m bench.bench_scaling          # 256..4096, ~3 min on 2 cores
    nice python -m bench.bench_scaling --quick  # 256..2048
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from bench.bench_masks import RANK, RESULTS, compare, machine
from bench.common import loglog_svg
from bench.common import power_law_matrix
from lift_core.lowrank.masks import lora_budget
from lift_core.lowrank.svd import max_krylov_depth

PLOT = Path(__file__).resolve().parent.parent / "docs" / "img" / "mask_scaling.png"


def fit_exponent(sizes, times) -> float | None:
    """Slope of the least-squares line through (log n, log t); None with fewer than 2 points."""
    if len(sizes) < 2:
        return None
    xs, ys = [math.log(n) for n in sizes], [math.log(t) for t in times]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def _plot(rows, path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        svg = path.with_suffix(".svg")
        svg.parent.mkdir(parents=True, exist_ok=True)
        series = {"exact SVD": [(r["n"], r["exact_cpu_s"]) for r in rows],
                  "randomized": [(r["n"], r["randomized_cpu_s"]) for r in rows]}
        svg.write_text(loglog_svg(series, {"exact SVD": "#d62728", "randomized": "#1f77b4"},
                                  {"exact SVD": "exact SVD", "randomized": "randomized (Krylov)"},
                                  "n (n x n matrix, log)", "mask time, CPU s (log)"))
        return f"wrote {svg} (matplotlib is not installed)"
    sizes = [r["n"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.loglog(sizes, [r["exact_cpu_s"] for r in rows], "o-", label="exact SVD")
    ax.loglog(sizes, [r["randomized_cpu_s"] for r in rows], "s-", label="randomized (block Krylov)")
    ax.set_xlabel("n (n x n matrix)")
    ax.set_ylabel("mask time, CPU s")
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return f"wrote {path}"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="stop at 2048^2")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = (256, 512, 1024, 2048) if args.quick else (256, 512, 1024, 2048, 4096)
    rows = []
    for n in sizes:
        k = lora_budget((n, n), RANK)
        row = {"n": n, **compare(power_law_matrix(n, n), k, RANK, 1 if n == 4096 else 3)}
        rows.append(row)
        print(f"{n}^2: exact {row['exact_cpu_s']:.3f} s, randomized {row['randomized_cpu_s']:.3f} s, "
              f"Jaccard {row['jaccard']:.5f}", flush=True)
    krylov = [r for r in rows if max_krylov_depth((r["n"], r["n"]), RANK) is not None]
    results = {
        "machine": machine(), "filter_rank": RANK, "budget_rank": RANK, "rows": rows,
        "exponent_exact": fit_exponent([r["n"] for r in rows], [r["exact_cpu_s"] for r in rows]),
        "exponent_randomized": fit_exponent([r["n"] for r in krylov],
                                            [r["randomized_cpu_s"] for r in krylov]),
        "randomized_fit_sizes": [r["n"] for r in krylov],
    }
    results["plot"] = _plot(rows, PLOT)
    print(f"exponent exact {results['exponent_exact']:.2f}, "
          f"randomized {results['exponent_randomized']:.2f} (sizes {results['randomized_fit_sizes']})")
    print(results["plot"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scaling.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
