"""Helpers shared by the benchmark suite: timing, medians, the machine, JSON, memory probes.

Timings on CPU use one torch thread and read both the process CPU clock (which other jobs on
a shared machine cannot inflate much) and the wall clock; on CUDA they use CUDA events.
Every comparison the suite reports is a ratio of two medians taken in the same run.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from lift_core import jsonio

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"


# --- the machine ---------------------------------------------------------------------------


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else ():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (what `uptime` prints)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not Unix
        return []


def machine() -> dict:
    """Where and when a benchmark ran: CPU, cores, memory, torch, GPU, load at the start."""
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu_model(), "logical_cpus": os.cpu_count(),
        "memory_gb": round(_meminfo_kb("MemTotal") / 2**20, 1),
        "python": platform.python_version(), "torch": torch.__version__,
        "gpu": gpu, "load_average_start": load_average(),
        "nice": os.nice(0),
    }


def describe_machine(info: dict) -> str:
    """One sentence for the docs: CPU, cores, torch, GPU, load average."""
    load = info.get("load_average_start") or []
    text = (f"{info['cpu']}, {info['logical_cpus']} logical CPUs, {info.get('memory_gb', '?')} GB, "
            f"torch {info['torch']}, {'GPU ' + info['gpu'] if info.get('gpu') else 'no GPU'}")
    if load:
        text += f", load average {load[0]:.1f} at the start"
        cpus = info["logical_cpus"] or 1
        if load[0] > 0.5 * cpus:
            text += f" (a shared machine: other jobs were using the {cpus} cores)"
    return text


def _meminfo_kb(field: str) -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:  # pragma: no cover - not Linux
        pass
    return 0


# --- statistics ----------------------------------------------------------------------------


def median(values) -> float:
    """Median of a non-empty sequence (NaN for an empty one)."""
    values = list(values)
    return statistics.median(values) if values else math.nan


def fit_power_law(xs, ys) -> tuple[float, float]:
    """Least-squares fit of log y = a log x + b; returns (exponent a, coefficient e^b)."""
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    sxx = sum((x - mx) ** 2 for x in lx)
    a = sum((x - mx) * (y - my) for x, y in zip(lx, ly)) / sxx
    return a, math.exp(my - a * mx)


# --- timing --------------------------------------------------------------------------------


def use_one_thread() -> None:
    """One torch thread: on a shared 2-core box, two threads oversubscribe and SVDs crawl."""
    import torch

    torch.set_num_threads(1)


class Clock:
    """Times one call: CPU seconds and wall seconds on CPU, CUDA-event seconds on a GPU."""

    def __init__(self, device):
        self.cuda = getattr(device, "type", device) == "cuda"

    def __call__(self, fn) -> dict:
        """Run ``fn()`` once; returns {"wall": s, "cpu": s} (cpu is None on CUDA)."""
        if self.cuda:
            import torch

            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return {"wall": start.elapsed_time(end) / 1e3, "cpu": None}
        cpu, wall = time.process_time(), time.perf_counter()
        fn()
        return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


# --- memory --------------------------------------------------------------------------------


def proc_status_bytes(field: str) -> int:
    """A /proc/self/status memory field (VmRSS, VmHWM) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def tensor_bytes(tensors) -> int:
    """Bytes of distinct tensor storages among ``tensors`` (None entries skipped)."""
    seen, total = set(), 0
    for t in tensors:
        if t is None:
            continue
        key = (t.untyped_storage().data_ptr(), t.device.type)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


# --- files and children --------------------------------------------------------------------


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON, atomically (lift_core.jsonio), making its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    jsonio.write_json(path, data)


def read_json(path: Path) -> dict | None:
    """The JSON in ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def run_child(module: str, *args: str, timeout: float = 1800) -> dict:
    """Run ``python -m bench.<module> *args`` in a fresh process; its last stdout line is JSON."""
    out = subprocess.run([sys.executable, "-m", f"bench.{module}", *args], cwd=REPO,
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"bench.{module} {' '.join(args)} failed: " + " | ".join(tail))
    return json.loads(out.stdout.strip().splitlines()[-1])


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --- plots without matplotlib ------------------------------------------------------------


def loglog_svg(series: dict, colours: dict, legend: dict, x_label: str, y_label: str,
               width: int = 560, height: int = 340) -> str:
    """A log-log line chart as plain SVG (no matplotlib needed): one polyline per series.

    Args:
        series: name -> [(x, y), ...]; colours and legend: name -> colour / legend text.
    """
    left, right, top, bottom = 70, 190, 20, 50
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts]
    lx0, lx1 = math.log(min(xs)) - 0.1, math.log(max(xs)) + 0.1
    ly0, ly1 = math.log(min(ys)) - 0.2, math.log(max(ys)) + 0.2

    def px(x: float) -> float:
        return left + (math.log(x) - lx0) / (lx1 - lx0) * (width - left - right)

    def py(y: float) -> float:
        return height - bottom - (math.log(y) - ly0) / (ly1 - ly0) * (height - top - bottom)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" '
           'stroke="black"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="black"/>']
    for x in sorted(set(xs)):
        out.append(f'<text x="{px(x):.0f}" y="{height - bottom + 16}" '
                   f'text-anchor="middle">{x}</text>')
    for y in _log_ticks(math.exp(ly0), math.exp(ly1)):
        out.append(f'<line x1="{left - 4}" y1="{py(y):.0f}" x2="{left}" y2="{py(y):.0f}" '
                   'stroke="black"/>')
        out.append(f'<text x="{left - 6}" y="{py(y) + 4:.0f}" text-anchor="end">{y:g}</text>')
    out.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 12}" '
               f'text-anchor="middle">{x_label}</text>')
    out.append(f'<text transform="translate(16,{(top + height - bottom) / 2:.0f}) rotate(-90)" '
               f'text-anchor="middle">{y_label}</text>')
    for i, (name, points) in enumerate(series.items()):
        colour = colours[name]
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        out.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>')
        out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{colour}"/>'
                for x, y in points]
        ly = top + 14 + 20 * i
        out.append(f'<line x1="{width - right + 12}" y1="{ly - 4}" x2="{width - right + 32}" '
                   f'y2="{ly - 4}" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{width - right + 38}" y="{ly}">{legend[name]}</text>')
    return "\n".join(out + ["</svg>"]) + "\n"


def _log_ticks(low: float, high: float) -> list[float]:
    """1-2-5 ticks between low and high."""
    ticks, decade = [], 10 ** math.floor(math.log10(low))
    while decade <= high:
        ticks += [m * decade for m in (1, 2, 5) if low <= m * decade <= high]
        decade *= 10
    return ticks


# --- test matrices -------------------------------------------------------------------------


def power_law_matrix(m: int, n: int, *, exponent: float = 0.5, seed: int = 0):
    """An (m, n) fp32 matrix with singular values i^-exponent and random orthogonal vectors.

    A smooth power-law spectrum is the shape trained LLM layers have; tests and benchmarks
    use it as a stand-in for a large trained matrix.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    r = min(m, n)
    u, _ = torch.linalg.qr(torch.randn(m, r, generator=g))
    v, _ = torch.linalg.qr(torch.randn(n, r, generator=g))
    s = torch.arange(1, r + 1, dtype=torch.float32) ** -exponent
    return (u * s) @ v.T
