"""Fixtures for the browser end-to-end tests.

They drive Debian's headless Chromium through Playwright against the real api
(its base URL in ICEE_API_URL, e.g. http://127.0.0.1:8080/). Screenshots land in
artifacts/screenshots/ at the repository root, one per checked state, plus one
per failed test.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
CHROMIUM = os.environ.get("ICEE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Iterator[None]:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


@pytest.fixture(scope="session")
def api_url() -> str:
    url = os.environ.get("ICEE_API_URL")
    if not url:
        pytest.skip("ICEE_API_URL is not set: the e2e tests need the api on the local cluster")
    return url.rstrip("/") + "/"


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


OpenUi = Callable[..., Page]


@pytest.fixture
def open_ui(browser: Browser, api_url: str) -> Iterator[OpenUi]:
    """Opens the UI in a fresh browser context (no stored drafts); closes it after the test."""
    contexts: list[BrowserContext] = []

    def open_page(width: int = 1280, height: int = 800) -> Page:
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        page.goto(api_url)
        # the language list came from GET /languages (not the built-in fallback)
        page.locator("#language[data-loaded='true']").wait_for(timeout=15_000)
        return page

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def page(open_ui: OpenUi, screenshots: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    page = open_ui()
    yield page
    if request.node.stash.get(_FAILED, False):
        page.screenshot(path=screenshots / f"FAILED-{_safe(request.node.name)}.png")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
