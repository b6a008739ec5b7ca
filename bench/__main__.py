"""Run the benchmark suite and regenerate the tables in docs/benchmarks.md from its JSON.

    nice python -m bench                  # every benchmark, ~20 min on 2 shared cores
    nice python -m bench --quick          # reduced sizes and repeats, ~5-6 min (skips optim)
    nice python -m bench memory app       # a subset (names below)
    python -m bench --docs-only           # only rebuild the docs tables from bench/results/

Each benchmark runs as its own process (``python -m bench.<module>``, ``--quick`` passed where
the module takes it) and writes bench/results/<name>.json; afterwards every table between
the ``<!-- bench:NAME -->`` markers of docs/benchmarks.md is rebuilt from those files, so the
docs always show the last run of each benchmark. Not part of the unit tests.
"""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
import time
from pathlib import Path

from bench.common import (BENCH_DIR, REPO, RESULTS_DIR, describe_machine, load_average,
                          markdown_table, read_json)

DOCS = REPO / "docs" / "benchmarks.md"
# name -> (module, results file); the order they run in
BENCHMARKS = {
    "optim": ("bench_optim", "optim.json"),
    "memory": ("bench_memory", "memory.json"),
    "model_scaling": ("bench_model_scaling", "model_scaling.json"),
    "masks": ("bench_masks", "masks.json"),
    "scaling": ("bench_scaling", "scaling.json"),
    "app": ("bench_app", "app.json"),
}


def takes_quick(module: str) -> bool:
    """Whether ``bench.<module>`` has a --quick option (read from its source)."""
    return '"--quick"' in (BENCH_DIR / f"{module}.py").read_text()


def run_benchmark(name: str, quick: bool) -> dict:
    """Run one benchmark in its own process, output streamed; returns status and seconds."""
    module, _ = BENCHMARKS[name]
    if not (BENCH_DIR / f"{module}.py").exists():
        print(f"== {name}: bench/{module}.py does not exist, skipped", flush=True)
        return {"name": name, "status": "missing", "seconds": 0.0}
    command = [sys.executable, "-m", f"bench.{module}"]
    if quick and takes_quick(module):
        command.append("--quick")
    print(f"== {name}: {' '.join(command[1:])} (load average {load_average()})", flush=True)
    began = time.perf_counter()
    code = subprocess.run(command, cwd=REPO).returncode
    seconds = time.perf_counter() - began
    status = "ok" if code == 0 else f"failed (exit {code})"
    print(f"== {name}: {status} in {seconds:.0f} s", flush=True)
    return {"name": name, "status": status, "seconds": seconds}


# --- the docs tables ---------------------------------------------------------------------------


def _machine_line(report: dict) -> str:
    """Where and when a result was measured, from whichever machine fields its JSON has."""
    m = report.get("machine") or {}
    if m:
        load = (m.get("load_average_start") or [None])[0]
        text = (f"{m.get('date_utc', '?')} UTC, {m.get('cpu', '?')}, {m.get('logical_cpus', '?')} "
                f"CPUs, torch {m.get('torch', '?')}, {m.get('gpu') or 'no GPU'}")
    else:  # bench_optim's flat fields
        load = report.get("load_average_1min")
        text = f"{report.get('device', '?')}, torch {report.get('torch', '?')}"
    mode = report.get("mode") or ("quick" if report.get("quick") else None)
    text += f", load average {load:.1f} at the start" if load is not None else ""
    return f"_Measured: {text}" + (f"; {mode} mode" if mode else "") + "._"


def _optim(report: dict) -> str:
    from bench.bench_optim import _markdown

    return _markdown(report["steps"], report["memory"], report["refresh_seconds"])


def _scaling(report: dict) -> str:
    rows = [[f"{r['n']}²", f"{r['exact_cpu_s']:.3f}", f"{r['randomized_cpu_s']:.3f}",
             f"{r['exact_cpu_s'] / r['randomized_cpu_s']:.1f}x", f"{r['jaccard']:.4f}"]
            for r in report["rows"]]
    table = markdown_table(["n x n", "exact mask, CPU s", "randomized mask, CPU s",
                            "speedup", "Jaccard vs exact"], rows)
    fit = ", ".join(f"{k.split('_', 1)[1]} {v:.2f}" for k, v in report.items()
                    if k.startswith("exponent_") and v is not None)
    return table + f"\n\nFitted exponent of mask time vs n: {fit}."


def _module_markdown(module: str):
    def render(report: dict) -> str:
        return importlib.import_module(f"bench.{module}").markdown(report)
    return render


def _model_scaling(report: dict) -> str:
    return (_module_markdown("bench_model_scaling")(report)
            + f"\n\n![step time vs hidden size]({report['plot']})")


RENDERERS = {
    "optim": _optim, "memory": _module_markdown("bench_memory"),
    "model_scaling": _model_scaling, "masks": _module_markdown("bench_masks"),
    "scaling": _scaling, "app": _module_markdown("bench_app"),
}


def _machines(results: dict) -> str:
    """The machine in one sentence, then when each benchmark last ran and under what load."""
    info = next((r["machine"] for r in results.values() if "cpu" in r.get("machine", {})
                 and "memory_gb" in r["machine"]), None)
    rows = []
    for name, r in results.items():
        m = r.get("machine") or {}
        load = (m.get("load_average_start") or [r.get("load_average_1min")])[0]
        mode = r.get("mode") or ("quick" if r.get("quick") else "full" if "quick" in r
                                 or not takes_quick(BENCHMARKS[name][0]) else "(not recorded)")
        rows.append([name, m.get("date_utc", "(not recorded)"), mode,
                     f"{load:.1f}" if load is not None else "?"])
    loads = [float(row[3]) for row in rows if row[3] != "?"]
    busy = bool(info and loads and max(loads) > 0.5 * (info["logical_cpus"] or 1))
    head = (f"Machine: {describe_machine({**info, 'load_average_start': None})}. "
            f"{'Shared with other jobs: ' if busy else ''}"
            f"load average {min(loads):.1f}-{max(loads):.1f} on {info['logical_cpus']} cores "
            "as the benchmarks recorded it.\n\n" if info else "")
    return head + markdown_table(["benchmark", "last run (UTC)", "mode",
                                  "load average (1 min) it recorded (bench_optim: at its end)"],
                          rows)


def _targets(results: dict) -> str:
    """The benchmark issue's targets, checked against the JSON of the last runs."""
    rows = []

    def add(target: str, value, ok: bool | None, where: str) -> None:
        verdict = "n/a" if ok is None else ("met" if ok else "**missed**")
        rows.append([target, value, verdict, where])

    mem = results.get("memory")
    if mem:
        lift = next(r for r in mem["results"]["cpu"] if r["method"] == "lift")
        add("LIFT step <= 1.5x full AdamW (CPU time)", f"{lift['step_vs_full']:.2f}x",
            lift["step_vs_full"] <= 1.5, "memory")
        add("<= 12 B of optimizer state per masked entry",
            f"{lift['state_bytes_per_trained_entry']:.1f} B",
            lift["state_bytes_per_trained_entry"] <= 12,
            "memory")
        if "tensor_vs_lora" in lift:  # tensor bytes: independent of the allocator
            add("LIFT memory within 10% of LoRA's (tensors: state + saved activations)",
                f"{lift['tensor_vs_lora']:.2f}x", lift["tensor_vs_lora"] <= 1.10, "memory")
        add("LIFT peak memory within 10% of LoRA's (peak RSS - model; allocator-dependent)",
            f"{lift['peak_vs_lora']:.2f}x", lift["peak_vs_lora"] <= 1.10, "memory")
        add("same, counting only grads + buffers + state + adapters",
            f"{lift['counted_vs_lora']:.2f}x",
            lift["counted_vs_lora"] <= 1.10, "memory")
    opt = results.get("optim")
    if opt:
        for r in opt["steps"]:
            if r["optimizer"] == "SparseAdamW masked" and "vs_adamw_cpu_1_thread_median" in r:
                add(f"SparseAdamW masked step <= 1.5x torch AdamW (rank {r['lora_rank']})",
                    f"{r['vs_adamw_cpu_1_thread_median']:.2f}x",
                    r["vs_adamw_cpu_1_thread_median"] <= 1.5, "optim")
    app = results.get("app")
    if app:
        med = app["median_s"]
        firsts = {k: v for k, v in med.items() if k.endswith(("_first_s", "_warm_s"))}
        worst = max(firsts, key=firsts.get)
        add("first render of a page < 3 s (model loaded)",
            f"max median {firsts[worst]:.2f} s ({worst})",
            firsts[worst] < 3, "app")
        add("first render, cold process (imports + model load) < 3 s",
            f"{med['home_cold_s']:.2f} s", med["home_cold_s"] < 3, "app")
        switches = {k: v for k, v in med.items() if "_switch_" in k}
        worst = max(switches, key=switches.get)
        add("layer switch < 1 s", f"max median {switches[worst]:.2f} s ({worst})",
            switches[worst] < 1, "app")
    return markdown_table(["target", "measured", "verdict", "benchmark"], rows)


def update_docs(docs: Path, results_dir: Path) -> list[str]:
    """Replace each ``<!-- bench:NAME -->`` block of ``docs`` with the table from NAME's JSON.

    Returns the names with no results file (their blocks say so).
    """
    results = {name: read_json(results_dir / file) for name, (_, file) in BENCHMARKS.items()}
    found = {k: v for k, v in results.items() if v}
    blocks = {"targets": _targets(found), "machine": _machines(found)}
    for name, report in results.items():
        if report is None:
            blocks[name] = f"_No results yet: run `python -m bench {name}`._"
            continue
        try:
            blocks[name] = RENDERERS[name](report) + "\n\n" + _machine_line(report)
        except Exception as exc:  # another engineer's JSON may change shape: say so, go on
            blocks[name] = (f"_Table not rendered ({type(exc).__name__}: {exc}); see "
                            f"bench/results/{BENCHMARKS[name][1]}._")
    text = docs.read_text()
    for name, block in blocks.items():
        pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.S)
        text = pattern.sub(lambda m: m.group(1) + block + "\n" + m.group(2), text)
    docs.write_text(text)
    return [name for name, report in results.items() if report is None]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="reduced sizes and repeats")
    parser.add_argument("--docs-only", action="store_true",
                        help="run nothing; rebuild docs/benchmarks.md tables from the JSON")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)} (allowed: {', '.join(BENCHMARKS)})")
    runs = []
    if not args.docs_only:
        for name in args.names or BENCHMARKS:
            if args.quick and not args.names and not takes_quick(BENCHMARKS[name][0]):
                # bench_optim has no reduced mode (~2.5 min); --quick keeps to ~5 min
                print(f"== {name}: skipped by --quick (no reduced mode; run "
                      f"`python -m bench {name}`)", flush=True)
                runs.append({"name": name, "status": "skipped (--quick)", "seconds": 0.0})
                continue
            runs.append(run_benchmark(name, args.quick))
    missing = update_docs(DOCS, RESULTS_DIR)
    print(f"updated {DOCS.relative_to(REPO)}" + (f" (no results yet: {', '.join(missing)})"
                                                 if missing else ""))
    for run in runs:
        print(f"  {run['name']:<14} {run['status']:<20} {run['seconds']:6.0f} s")
    return 0 if all(not r["status"].startswith("failed") for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
