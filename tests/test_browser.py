"""Browser smoke test: every explorer page renders in headless Chromium without an error.

Starts `streamlit run app.py` on a free port, opens each page, waits for its plotly charts,
fails on a Streamlit exception or error box, and saves full-page screenshots to
$LIFT_SCREENSHOTS (or a pytest temp dir) for a human to look at.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.browser_util import CHROMIUM, CHROMIUM_ARGS, streamlit_server

pytestmark = pytest.mark.browser

# (url path, screenshot name, plotly charts expected once the page has rendered)
# A sub-page comes first on purpose: a fresh server's first visit must still go through
# app.py's navigation (see lift_ui.state.require_app_navigation).
PAGES = [
    ("spectrum", "spectrum", 2),
    ("", "home", 0),
    ("principal_weights", "principal_weights", 6),
    ("overlap", "overlap", 3),
]
# Something every page draws once its script has run past the sidebar.
LAST_ELEMENT = {
    "home": '[data-testid="stDataFrame"]',
    "spectrum": '[data-testid="stExpander"]',
    "principal_weights": '[data-testid="stMetric"]',
    "overlap": '[data-testid="stButton"]',
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
def server():
    with streamlit_server() as url:
        yield url


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
    assert "Overview" in nav and "Principal weights" in nav, f"{name}: not app.py's navigation: {nav!r}"


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
    finally:
        page.close()
