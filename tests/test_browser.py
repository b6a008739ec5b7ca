"""Browser smoke test: every page renders in headless Chromium without an error.

Starts `streamlit run app.py` on a free port, opens each page, waits for its plotly charts,
fails on a Streamlit exception or error box, and saves full-page screenshots to
$LIFT_SCREENSHOTS (or a pytest temp dir) for a human to look at. The training pages read
the shipped sample runs when they exist (else a synthetic set), launch into a temp runs
folder, and the workshop's live demo is started, watched until its charts update, and stopped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lift_core.runs.jobs import JobManager
from tests.browser_util import CHROMIUM, CHROMIUM_ARGS, REPO, streamlit_server
from tests.fake_runs import write_sample_set

pytestmark = pytest.mark.browser

# (url path, screenshot name, plotly charts expected once the page has rendered)
# A sub-page comes first on purpose: a fresh server's first visit must still go through
# app.py's navigation (see lift_ui.navigation.require_app_navigation).
PAGES = [
    ("spectrum", "spectrum", 2),
    ("", "home", 0),
    ("principal_weights", "principal_weights", 6),
    ("overlap", "overlap", 3),
    ("finetune", "finetune", 0),
    ("runs", "runs", 3),
    ("workshop", "workshop", 4),
    ("sensitivity", "sensitivity", 0),
]
# Something every page draws once its script has run past the sidebar.
LAST_ELEMENT = {
    "home": '[data-testid="stDataFrame"]',
    "spectrum": '[data-testid="stExpander"]',
    "principal_weights": '[data-testid="stMetric"]',
    "overlap": '[data-testid="stButton"]',
    "finetune": '[data-testid="stCode"]',
    "runs": '[data-testid="stDownloadButton"]',
    "workshop": '[data-testid="stCode"]',
    "sensitivity": '[data-testid="stButton"]',
}
RENDER_TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; the CI script installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def server(runs_dir, tmp_path_factory):
    env = {"LIFT_RUNS_DIR": str(runs_dir)}
    if not any((REPO / "sample_runs").glob("*/summary.json")):
        env["LIFT_SAMPLE_RUNS"] = str(write_sample_set(tmp_path_factory.mktemp("samples")))
    with streamlit_server(env=env) as url:
        yield url
    JobManager(runs_dir).stop(timeout=20)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    where = os.environ.get("LIFT_SCREENSHOTS")
    path = Path(where) if where else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _wait_rendered(page, charts: int, selector: str = '[data-testid="stSidebar"]') -> None:
    page.wait_for_selector(selector, timeout=RENDER_TIMEOUT_MS)
    if charts:
        page.wait_for_function(
            f"document.querySelectorAll('.js-plotly-plot').length >= {charts}", timeout=RENDER_TIMEOUT_MS)
    # The "running" indicator disappears once the script run has finished.
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=RENDER_TIMEOUT_MS)
    page.wait_for_timeout(1000)  # let plotly finish laying out before the screenshot


def _assert_app_navigation(page, name: str) -> None:
    nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
    assert "Overview" in nav and "Principal weights" in nav and "Workshop" in nav, \
        f"{name}: not app.py's navigation: {nav!r}"


def _assert_no_errors(page, name: str) -> None:
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, f"{name}: {exceptions.first.inner_text()[:800]}"
    errors = page.locator('[data-testid="stAlertContentError"]')
    assert errors.count() == 0, f"{name}: {errors.first.inner_text()[:800]}"


def _screenshot(page, path: Path) -> None:
    # Streamlit scrolls inside its main container, so a "full page" shot would stop at the
    # viewport: grow the viewport to the content's height first.
    height = page.evaluate(
        "document.querySelector('[data-testid=\"stMainBlockContainer\"]')?.scrollHeight || 1000")
    page.set_viewport_size({"width": 1500, "height": min(max(int(height) + 80, 1000), 6000)})
    page.wait_for_timeout(800)
    page.screenshot(path=str(path))


@pytest.mark.parametrize("path,name,charts", PAGES, ids=[p[1] for p in PAGES])
def test_page_renders(browser, server, shots, path, name, charts):
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    try:
        page.goto(f"{server}/{path}", timeout=RENDER_TIMEOUT_MS)
        _wait_rendered(page, charts, LAST_ELEMENT[name])
        _assert_no_errors(page, name)
        _assert_app_navigation(page, name)
        if name == "overlap":  # the whole-model view: click, wait for the bar chart
            page.get_by_role("button", name="Analyze every layer").click()
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 4",
                                   timeout=RENDER_TIMEOUT_MS)
            _wait_rendered(page, 4, '[data-testid="stDownloadButton"]')
            _assert_no_errors(page, name)
        _screenshot(page, shots / f"{name}.png")
        if name == "workshop":
            _live_demo(page, shots)
    finally:
        page.close()


def _live_demo(page, shots: Path) -> None:
    """Start the demo, let the polling fragment draw a few updates, screenshot, stop."""
    before = page.locator(".js-plotly-plot").count()
    page.get_by_role("button", name="Start the live demo").click()
    page.wait_for_selector('[data-testid="stProgress"]', timeout=RENDER_TIMEOUT_MS)
    # Three more charts (loss, churn, accuracy) once the record has its first rows, then wait
    # for the fragment's polling to move the step counter on.
    page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot').length >= {before + 3}",
                           timeout=RENDER_TIMEOUT_MS)
    page.wait_for_function(
        "[...document.querySelectorAll('[data-testid=\"stProgress\"]')].some("
        "e => /step ([3-9]\\d|\\d{3})\\//.test(e.innerText))", timeout=RENDER_TIMEOUT_MS)
    _assert_no_errors(page, "workshop live demo")
    # Between two polls, so the screenshot does not catch the fragment's faded re-render.
    page.wait_for_selector('[data-testid="stStatusWidget"]', state="detached", timeout=RENDER_TIMEOUT_MS)
    _screenshot(page, shots / "workshop_live.png")
    page.get_by_role("button", name="Stop").click()
    page.wait_for_selector('[data-testid="stAlertContentWarning"]', timeout=RENDER_TIMEOUT_MS)
    _assert_no_errors(page, "workshop after stop")
    _screenshot(page, shots / "workshop_stopped.png")
