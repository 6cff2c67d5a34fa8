"""The browser UI with API tokens on (issue 9): asked for at the first refusal,
sent as a bearer header on HTTP and as a WebSocket subprotocol, kept; a 429 over a
per-client quota shows the server's reason and Retry-After."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Browser, expect
from test_ui import GREETINGS, expect_state, expect_terminal, type_line

if TYPE_CHECKING:
    from conftest import TokenApi

pytestmark = pytest.mark.e2e


def test_api_token(browser: Browser, token_api: TokenApi, screenshots: Path) -> None:
    """Tokens on: Run asks for a token, a wrong one is refused, the right one runs the
    program (HTTP header and WebSocket subprotocol) and is kept; over the per-client
    quota the server's reason and Retry-After are shown."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    other = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(token_api.url)
        page.locator("#language[data-loaded='true']").wait_for(timeout=15_000)
        form = page.get_by_test_id("token-form")
        expect(form).to_be_hidden()

        page.get_by_test_id("run").click()
        expect(form).to_be_visible()
        expect(page.get_by_test_id("token-problem")).to_contain_text("HTTP 401")
        expect_state(page, "error")
        expect(page.get_by_test_id("token")).to_be_focused()
        page.screenshot(path=screenshots / "token-required.png")

        page.get_by_test_id("token").fill("not-the-right-token-0123456789")
        page.get_by_test_id("token-save").click()  # retries the run
        expect(page.get_by_test_id("token-problem")).to_contain_text("refused")
        expect(page.get_by_test_id("token-problem")).to_contain_text("HTTP 403")
        expect(form).to_be_visible()

        page.get_by_test_id("token").fill(token_api.token)
        page.keyboard.press("Enter")
        expect(form).to_be_hidden()
        expect_terminal(page, GREETINGS["python"])  # the WebSocket took the token too
        expect_state(page, re.compile("running|waiting"))

        # The same token in a second browser: over its quota of one session.
        second = other.new_page()
        second.goto(token_api.url)
        second.evaluate("t => localStorage.setItem('icee.token', t)", token_api.token)
        second.reload()
        second.locator("#language[data-loaded='true']").wait_for(timeout=15_000)
        expect(second.get_by_test_id("token-button")).to_be_visible()
        second.get_by_test_id("run").click()
        expect_state(second, "error", timeout=30_000)
        message = second.get_by_test_id("message")
        expect(message).to_contain_text("HTTP 429")
        expect(message).to_contain_text(re.compile(r"try again in \d+ s"))
        expect(second.get_by_test_id("token-form")).to_be_hidden()
        second.screenshot(path=screenshots / "token-quota-429.png")

        type_line(page, "with a token")
        expect_terminal(page, "You typed: with a token")
        page.get_by_test_id("eof").click()
        expect_state(page, "finished")
        expect(page.get_by_test_id("exit-code")).to_have_text("0")
        page.screenshot(path=screenshots / "token-run.png")

        # Kept for the next visit.
        page.reload()
        page.locator("#language[data-loaded='true']").wait_for(timeout=15_000)
        assert page.evaluate("localStorage.getItem('icee.token')") == token_api.token
        expect(page.get_by_test_id("token-button")).to_be_visible()
        expect(form).to_be_hidden()
    finally:
        context.close()
        other.close()
