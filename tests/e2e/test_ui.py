"""The browser UI against the real api: each language's starter program,
typed input, Stop, a compile error, an API error, keyboard-only use.

Run with the cluster up: ICEE_API_URL=http://... pytest -m e2e tests/e2e
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

pytestmark = pytest.mark.e2e

# Generous: the first run of a language may start a cold JVM under gVisor.
RUN_TIMEOUT = 90_000

GREETINGS = {
    "python": "Hello from Python!",
    "javascript": "Hello from JavaScript!",
    "java": "Hello from Java!",
    "cpp": "Hello from C++!",
    "ruby": "Hello from Ruby!",
}

INTERACTIVE_PYTHON = """\
name = input("What is your name? ")
print(f"Hello, {name}!")
number = int(input("Pick a number: "))
print(f"{number} squared is {number * number}")
"""

INFINITE_LOOP_PYTHON = """\
import itertools, time

for i in itertools.count():
    print("tick", i, flush=True)
    time.sleep(0.2)
"""

COMPILE_ERRORS = {
    "java": (
        "public class Main {\n    public static void main(String[] args) {\n"
        '        System.out.println("missing semicolon")\n    }\n}\n'
    ),
    "cpp": "#include <iostream>\n\nint main() {\n    std::cout << undeclared << std::endl;\n}\n",
}


# ---- helpers ---------------------------------------------------------------


def terminal(page: Page) -> Locator:
    """What the terminal shows (xterm's DOM rows)."""
    return page.locator("#terminal .xterm-rows")


def expect_terminal(page: Page, text: str | re.Pattern[str], timeout: int = RUN_TIMEOUT) -> None:
    expect(terminal(page)).to_contain_text(text, timeout=timeout)


def expect_state(page: Page, state: str | re.Pattern[str], timeout: int = RUN_TIMEOUT) -> None:
    expect(page.get_by_test_id("state")).to_have_attribute("data-state", state, timeout=timeout)


def pick_language(page: Page, language: str) -> None:
    page.get_by_test_id("language").select_option(language)
    expect(page.get_by_test_id("code")).to_contain_text("Hello from")


def set_code(page: Page, code: str) -> None:
    """Replaces the editor's content, as a paste would (no auto-indent)."""
    editor = page.get_by_test_id("code")
    editor.click()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.insert_text(code)
    first_line = code.splitlines()[0]
    expect(editor).to_contain_text(first_line)


def type_line(page: Page, text: str) -> None:
    """Types into the terminal (which has the focus while a program runs)."""
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def terminal_has_focus(page: Page) -> bool:
    return bool(page.evaluate("document.activeElement?.closest('#terminal') != null"))


# ---- tests -----------------------------------------------------------------


@pytest.mark.parametrize("language", sorted(GREETINGS))
def test_starter_program(page: Page, screenshots: Path, language: str) -> None:
    pick_language(page, language)
    page.get_by_test_id("run").click()
    expect_terminal(page, GREETINGS[language])
    assert terminal_has_focus(page), "the terminal should have the focus once the program runs"
    expect(page.get_by_test_id("stop")).to_be_enabled()

    type_line(page, "hello icee")
    expect_terminal(page, "You typed: hello icee")
    page.get_by_test_id("eof").click()
    expect_terminal(page, "Bye!")
    expect_state(page, "finished")
    expect(page.get_by_test_id("exit-code")).to_have_text("0")
    expect(page.get_by_test_id("reason")).to_have_text("Completed")
    expect(page.get_by_test_id("elapsed")).to_have_text(re.compile(r"\d+\.\d s"))
    expect(page.get_by_test_id("run")).to_be_enabled()
    page.screenshot(path=screenshots / f"starter-{language}.png")


def test_interactive_program_two_lines(page: Page, screenshots: Path) -> None:
    set_code(page, INTERACTIVE_PYTHON)
    page.keyboard.press("ControlOrMeta+Enter")  # runs from inside the editor
    expect_terminal(page, "What is your name?")
    expect_state(page, re.compile("running|waiting"))
    assert terminal_has_focus(page)

    page.keyboard.type("Adx")
    page.keyboard.press("Backspace")  # local line editing
    type_line(page, "a")
    expect_terminal(page, "Hello, Ada!")
    expect_terminal(page, "Pick a number:")
    page.screenshot(path=screenshots / "running-with-input.png")

    type_line(page, "12")
    expect_terminal(page, "12 squared is 144")
    expect_state(page, "finished")
    expect(page.get_by_test_id("exit-code")).to_have_text("0")
    page.screenshot(path=screenshots / "finished.png")


def test_stop_infinite_loop(page: Page, screenshots: Path) -> None:
    set_code(page, INFINITE_LOOP_PYTHON)
    page.get_by_test_id("run").click()
    expect_terminal(page, "tick 3")
    expect_state(page, "running")
    page.get_by_test_id("stop").click()
    expect_state(page, "terminated", timeout=30_000)
    expect(page.get_by_test_id("state")).to_have_text("terminated")
    expect(page.get_by_test_id("reason")).not_to_have_text("—")
    expect(page.get_by_test_id("stop")).to_be_disabled()
    page.screenshot(path=screenshots / "terminated.png")


@pytest.mark.parametrize("language", ["java", "cpp"])
def test_compile_error(page: Page, screenshots: Path, language: str) -> None:
    pick_language(page, language)
    set_code(page, COMPILE_ERRORS[language])
    page.get_by_test_id("run").click()
    expect_state(page, "finished")
    expect(page.get_by_test_id("reason")).to_have_text("CompilationError")
    expect(page.get_by_test_id("exit-code")).not_to_have_text(re.compile(r"^0$"))
    expect_terminal(page, "error", timeout=5_000)
    page.screenshot(path=screenshots / f"compile-error-{language}.png")


def test_api_error_is_shown(page: Page, screenshots: Path) -> None:
    # The api refuses code over 64 KiB with a 4xx and a `detail`.
    set_code(page, "# too long\n" + ("# " + "x" * 998 + "\n") * 70)  # 70 KB, few lines
    page.get_by_test_id("run").click()
    expect_state(page, "error", timeout=30_000)
    message = page.get_by_test_id("message")
    expect(message).to_be_visible()
    expect(message).to_contain_text("Could not start the program")
    expect(message).to_contain_text(re.compile(r"HTTP 4\d\d"))
    expect(page.get_by_test_id("run")).to_be_enabled()
    page.screenshot(path=screenshots / "error.png")


def test_keyboard_only(page: Page, screenshots: Path) -> None:
    """Tab order: language, Run, Reset, editor; Escape then Tab leaves the editor."""
    expect_state(page, "idle")
    page.screenshot(path=screenshots / "idle.png")
    page.locator("body").click(position={"x": 5, "y": 5})
    order = []
    for _ in range(4):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.dataset.testid ?? ''"))
    assert order == ["language", "run", "reset", "code"]
    page.keyboard.press("Tab")  # inside the editor Tab indents ...
    assert page.evaluate("document.activeElement.dataset.testid") == "code"
    page.keyboard.press("Escape")
    page.keyboard.press("Tab")  # ... until Escape lets it move on
    assert page.evaluate("document.activeElement.dataset.testid") == "clear"


def test_phone_width(open_ui: Callable[..., Page], screenshots: Path) -> None:
    page = open_ui(width=390, height=844)
    no_overflow = "document.documentElement.scrollWidth <= window.innerWidth"
    assert page.evaluate(no_overflow), "no sideways scrolling at phone width"
    page.get_by_test_id("run").click()
    expect_terminal(page, GREETINGS["python"])
    expect(page.get_by_test_id("state")).to_be_in_viewport()
    page.screenshot(path=screenshots / "phone.png", full_page=True)
    page.get_by_test_id("stop").click()
    expect_state(page, "terminated", timeout=30_000)
