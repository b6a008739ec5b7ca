"""First render of each explorer page and the layer-switch time, through Streamlit's AppTest.

Each repeat is a fresh Python process (nothing imported, nothing cached), driving app.py the
way tests/test_app_pages.py does, on the default model (embedded MiniLM, r = 8, LoRA rank 8,
exact SVD). ``time.perf_counter()`` is read around each ``at.run()``. Timed, in order:

1. Overview, cold process: the first ``at.run()`` (imports torch / transformers, loads the model).
2. First render of Spectrum, Principal weights, Overlap: model cached, the layer new to the page.
3. Layer switch on each page: to a layer no page has computed (new), then back (seen, cached).
4. Every page again in a second AppTest session of the same process (warm caches).

The reported number for each is the median over the repeats (worst in the JSON).

Run: ``python -m bench.bench_app [--quick]``; writes bench/results/app.json.

``--first-paint`` measures what a person sees instead: a fresh ``streamlit run app.py``
server (nothing imported), headless Chromium opening it, and the seconds from the request
to the page frame (the sidebar's navigation), to the first content of the page (its title)
and to the end of the first script run; writes bench/results/app_first_paint.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from bench.common import (REPO, RESULTS_DIR, machine, markdown_table, median, run_child,
                          write_json)

RESULTS = RESULTS_DIR / "app.json"
FIRST_PAINT = RESULTS_DIR / "app_first_paint.json"
MAIN = '[data-testid="stMainBlockContainer"]'  # the page area, beside the navigation
FIRST_PAINT_TARGET_S = 2.0  # to first content, idle 2-core machine (issue 14)
APP = str(REPO / "app.py")
PAGES = {"spectrum": "Spectrum", "principal_weights": "Principal weights",
         "overlap": "Overlap"}
# Each page switches to a layer of block 0 that no page has computed yet, then back.
SWITCH_TO = {"spectrum": "k", "principal_weights": "v", "overlap": "o"}
REPEATS = {"full": 5, "quick": 3}
TARGETS = {"first_render_s": 3.0, "switch_s": 1.0}
TIMEOUT = 300  # seconds per script run: generous, the machine is shared


class _Timings(dict):
    """Wall seconds per key; CPU seconds of this process (all threads) under ``cpu``."""

    def __init__(self):
        super().__init__()
        self.cpu: dict[str, float] = {}

    def run(self, key: str | None, at) -> None:
        """``at.run()``, timed under ``key`` (None: not recorded)."""
        wall, cpu = time.perf_counter(), time.process_time()
        at.run()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if at.exception:
            raise RuntimeError(f"the app raised: {at.exception[0].value}")
        if key is not None:
            self[key], self.cpu[key] = wall, cpu


def _layer_option(at, role: str) -> int:
    options = at.selectbox(key="_w_layer").options
    return next(i for i, o in enumerate(options) if o.startswith(f"{role} ·"))


def probe() -> dict:
    """One repeat, in this fresh process: every timing listed in the module docstring."""
    began = time.perf_counter()
    from streamlit.testing.v1 import AppTest

    imported = time.perf_counter() - began
    out = _Timings()
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    out.run("home_cold_s", at)
    for page in PAGES:
        out.run(f"{page}_first_s", at.switch_page(f"pages/{page}.py"))
    for page, role in SWITCH_TO.items():
        out.run(None, at.switch_page(f"pages/{page}.py"))
        before = at.selectbox(key="_w_layer").index
        at.selectbox(key="_w_layer").select_index(_layer_option(at, role))
        out.run(f"{page}_switch_new_s", at)
        at.selectbox(key="_w_layer").select_index(before)
        out.run(f"{page}_switch_seen_s", at)
    warm = AppTest.from_file(APP, default_timeout=TIMEOUT)
    out.run("home_warm_s", warm)
    for page in PAGES:
        out.run(f"{page}_warm_s", warm.switch_page(f"pages/{page}.py"))
    return {"wall": dict(out), "cpu": out.cpu, "import_apptest_s": imported}


def run(quick: bool = False) -> dict:
    """Repeat the probe in fresh processes; write app.json with medians and worst cases."""
    info = machine()
    mode = "quick" if quick else "full"
    samples = [run_child("bench_app", "--probe") for _ in range(REPEATS[mode])]
    keys = samples[0]["wall"].keys()
    report = {
        "machine": info, "mode": mode, "repeats": len(samples), "model": "minilm",
        "settings": "defaults: filter rank 8, LoRA rank 8, exact SVD",
        "targets": TARGETS,
        "median_s": {k: median(s["wall"][k] for s in samples) for k in keys},
        "worst_s": {k: max(s["wall"][k] for s in samples) for k in keys},
        "median_cpu_s": {k: median(s["cpu"][k] for s in samples) for k in keys},
        "import_apptest_s": median(s["import_apptest_s"] for s in samples),
        "samples": samples,
    }
    write_json(RESULTS, report)
    return report


def markdown(report: dict) -> str:
    """The docs table: one row per page, first render cold / warm and layer switch new / seen."""
    med, worst, cpu = report["median_s"], report["worst_s"], report["median_cpu_s"]

    def cell(key: str, target: float) -> str:
        mark = "" if med[key] < target else " **over target**"
        return f"{med[key]:.2f} ({worst[key]:.2f}; CPU {cpu[key]:.2f}){mark}"

    first, switch = TARGETS["first_render_s"], TARGETS["switch_s"]
    rows = [["Overview (app.py home)", cell("home_cold_s", first) + ", cold process",
             cell("home_warm_s", first), "-", "-"]]
    for page, title in PAGES.items():
        rows.append([title, cell(f"{page}_first_s", first), cell(f"{page}_warm_s", first),
                     cell(f"{page}_switch_new_s", switch), cell(f"{page}_switch_seen_s", switch)])
    headers = ["page", "first render, cold cache: wall s median (worst; CPU s median)",
               "first render, warm cache (new session)", "layer switch, new layer",
               "layer switch, seen layer (cached)"]
    return markdown_table(headers, rows)


def first_paint(page_path: str = "", repeats: int = 3) -> dict:
    """Cold first paint in a browser: a new server per repeat, seconds from the request to
    the frame (navigation), the first element in the page area (app.py's start-up spinner on
    a cold server), the first content (the page title) and the finished first run."""
    from playwright.sync_api import sync_playwright

    from tests.browser_util import CHROMIUM, CHROMIUM_ARGS, streamlit_server

    samples = []
    for _ in range(repeats):
        with streamlit_server(timeout=TIMEOUT) as url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            began = time.perf_counter()
            page.goto(f"{url}/{page_path}")
            times = {}
            for key, selector in (("frame_s", '[data-testid="stSidebarNav"]'),
                                  # anything in the main area: the start-up spinner, else the page
                                  ("first_element_s", f'{MAIN} [data-testid="stElementContainer"]'),
                                  ("first_content_s", f'{MAIN} h1')):
                page.wait_for_selector(selector, timeout=TIMEOUT * 1000)
                times[key] = time.perf_counter() - began
            page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=TIMEOUT * 1000)
            times["script_done_s"] = time.perf_counter() - began
            browser.close()
        samples.append(times)
    report = {"machine": machine(), "page": page_path or "home", "target_first_content_s": FIRST_PAINT_TARGET_S,
              "median_s": {k: median(s[k] for s in samples) for k in samples[0]}, "samples": samples}
    write_json(FIRST_PAINT.with_name(f"app_first_paint{'_' + page_path if page_path else ''}.json"), report)
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 5")
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--first-paint", action="store_true",
                        help="cold first paint in headless Chromium (needs playwright + chromium)")
    parser.add_argument("--page", default="", help="with --first-paint: the page's url path (default home)")
    args = parser.parse_args(argv)
    if args.first_paint:
        print(json.dumps(first_paint(args.page)["median_s"]))
        return
    if args.probe:
        print(json.dumps(probe()))
        return
    print(markdown(run(quick=args.quick)))
    print(f"wrote {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
