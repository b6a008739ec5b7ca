"""Step time of lift, full and lora as the model grows, with the fitted log-log exponent.

Llamas built from configs at hidden 256, 512 and 1024 (MLP 2.75x hidden, 64-wide heads,
vocab 8192, the same depth), random init. The budget keeps the paper's density: LoRA rank
= hidden / 32 (6.25% of each attention matrix, 4.3% of each MLP matrix), filter rank equal.
At each size the three methods are set up by ``lift_core.train.methods.setup_method`` and step
in interleaved rounds (the trainer's step, as in bench_memory). The exponent a of
time ~ hidden^a is a least-squares fit on log-log axes.

Run: ``python -m bench.bench_model_scaling [--quick]``; writes
bench/results/model_scaling.json and the plot docs/img/step_scaling.(png|svg).
"""

from __future__ import annotations

import argparse
import sys

import torch

from bench.bench_memory import build_model, make_batch, set_up, train_step
from bench.common import (REPO, RESULTS_DIR, Clock, fit_power_law, loglog_svg, machine,
                          markdown_table, median, use_one_thread, write_json)
from lift_core.train.registry import method_color

RESULTS = RESULTS_DIR / "model_scaling.json"
IMAGE = REPO / "docs" / "img" / "step_scaling"
METHODS = ("full", "lift", "lora")
HIDDENS = (256, 512, 1024)
VOCAB = 8192
SIZES = {
    "full": {"layers": 2, "batch": 4, "seq": 128, "rounds": 5},
    "quick": {"layers": 1, "batch": 2, "seq": 128, "rounds": 3},
}
NOT_RUN = "not run (no GPU in this session)"


def shape_for(hidden: int) -> dict:
    """Config numbers of the model at ``hidden``: MLP 2.75x (to 64), 64-wide heads."""
    return {"intermediate": 64 * round(2.75 * hidden / 64), "vocab": VOCAB,
            "heads": hidden // 64}


def time_size(hidden: int, size: dict, device) -> dict:
    """Median step seconds of each method at one model size (rounds interleaved)."""
    clock = Clock(device)
    rank = hidden // 32
    batch = make_batch(VOCAB, size["batch"], size["seq"], device)
    setups = {}
    for method in METHODS:
        model = build_model(hidden, size["layers"], **shape_for(hidden))
        setups[method] = set_up(model, method, device, rank, rank)
        train_step(setups[method], batch, device)  # warm-up
    block = sum(row["shape"][0] * row["shape"][1] for row in setups["full"].layers)
    samples = {m: [] for m in METHODS}
    for _ in range(size["rounds"]):
        for method in METHODS:
            samples[method].append(clock(lambda m=method: train_step(setups[m], batch, device)))
    kind = "cpu" if device.type == "cpu" else "wall"
    row = {"hidden": hidden, "lora_rank": rank, "block_linear_params": block,
           "matmul_params": block + VOCAB * hidden,  # + lm_head: what forward/backward multiply
           "trainable": {m: setups[m].trainable_params for m in METHODS}}
    for method in METHODS:
        row[f"{method}_s"] = median(s[kind] for s in samples[method])
        row[f"{method}_wall_s"] = median(s["wall"] for s in samples[method])
        row[f"{method}_vs_full"] = row[f"{method}_s"] / median(s[kind] for s in samples["full"])
    return row


def fits(rows: list[dict], x: str = "hidden") -> dict:
    """Exponent of step time vs ``x`` (hidden size, or the parameters in matmuls), per method."""
    return {m: fit_power_law([r[x] for r in rows], [r[f"{m}_s"] for r in rows])[0]
            for m in METHODS}


def run(quick: bool = False) -> dict:
    """Time every size on CPU (and CUDA when present); write the JSON and the plot."""
    info = machine()
    use_one_thread()
    mode = "quick" if quick else "full"
    size = SIZES[mode]
    report = {"machine": info, "mode": mode, "sizes": size, "hiddens": list(HIDDENS),
              "methods": list(METHODS), "threads": 1, "results": {}}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for name in devices:
        rows = [time_size(h, size, torch.device(name)) for h in HIDDENS]
        report["results"][name] = {"rows": rows, "exponents": fits(rows),
                                   "exponents_vs_matmul_params": fits(rows, "matmul_params"),
                                   "clock": "CPU time, 1 thread" if name == "cpu"
                                   else "CUDA events"}
    report["plot"] = plot(report)
    write_json(RESULTS, report)
    return report


# --- the plot: matplotlib when installed, else a small hand-written SVG ----------------------

COLOURS = {m: method_color(m) for m in METHODS}  # the app's colours (method registry)


def plot(report: dict) -> str:
    """Write docs/img/step_scaling.png (matplotlib) or .svg; returns the path from docs/."""
    result = report["results"]["cpu"]
    series = {m: [(r["hidden"], r[f"{m}_s"]) for r in result["rows"]] for m in METHODS}
    IMAGE.parent.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        path = IMAGE.with_suffix(".svg")
        legend = {m: f"{m} (slope {result['exponents'][m]:.2f})" for m in series}
        path.write_text(loglog_svg(series, COLOURS, legend, "hidden size (log)",
                                   "seconds per step, CPU 1 thread (log)"))
        return f"img/{path.name}"
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m, points in series.items():
        ax.loglog(*zip(*points), "o-", color=COLOURS[m],
                  label=f"{m} (slope {result['exponents'][m]:.2f})")
    ax.set_xlabel("hidden size")
    ax.set_ylabel("seconds per step (CPU, 1 thread)")
    ax.legend()
    fig.tight_layout()
    path = IMAGE.with_suffix(".png")
    fig.savefig(path, dpi=120)
    return f"img/{path.name}"


def markdown(report: dict) -> str:
    """The docs table: one row per size, CPU columns, GPU columns, then the exponents."""
    cpu = report["results"]["cpu"]
    gpu = report["results"].get("cuda")
    headers = (["hidden", "block-linear params", "LoRA rank"]
               + [f"{m} s/step (CPU)" for m in METHODS] + ["lift / full", "lora / full",
                                                           "GPU ms/step full / lift / lora"])
    rows = []
    for i, r in enumerate(cpu["rows"]):
        g = gpu["rows"][i] if gpu else None
        rows.append([r["hidden"], f"{r['block_linear_params'] / 1e6:.1f}M", r["lora_rank"]]
                    + [f"{r[f'{m}_s']:.3f}" for m in METHODS]
                    + [f"{r['lift_vs_full']:.2f}", f"{r['lora_vs_full']:.2f}",
                       " / ".join(f"{1e3 * g[f'{m}_s']:.1f}" for m in METHODS) if g else NOT_RUN])
    def exps(result: dict, key: str) -> str:
        return ", ".join(f"{m} {a:.2f}" for m, a in result[key].items())

    line = (f"\n\nFitted exponent a (log-log least squares), CPU: time ~ hidden^a: "
            f"{exps(cpu, 'exponents')}; time ~ (block linears + lm_head params)^a: "
            f"{exps(cpu, 'exponents_vs_matmul_params')}")
    line += (f". GPU: {exps(gpu, 'exponents')}" if gpu else f". GPU: {NOT_RUN}")
    return markdown_table(headers, rows) + line + "."


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 layer, 3 rounds")
    args = parser.parse_args(argv)
    print(markdown(run(quick=args.quick)))
    print(f"wrote {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
