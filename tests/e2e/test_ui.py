"""The browser UI against the real api: each language's starter program,
typed input, Stop, a compile error, an API error, keyboard-only use; tty mode
(the default: prompt and answer, Ctrl-C, resize), the waiting indicator, pipe
mode (stderr in red), the usage in the finished line. API tokens: test_ui_tokens.py.

Run with the cluster up: ICEE_API_URL=http://... pytest -m e2e tests/e2e
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, Request, expect

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

TTY_PROMPT_PYTHON = """\
import sys
print("isatty:", sys.stdin.isatty(), sys.stdout.isatty())
name = input("What is your name? ")
print(f"Hello, {name}!")
"""

# Ctrl-C must reach the program as SIGINT (KeyboardInterrupt), not end the session.
INTERRUPTIBLE_PYTHON = """\
import itertools, sys, time

try:
    for i in itertools.count():
        print("tick", i, flush=True)
        time.sleep(0.2)
except KeyboardInterrupt:
    print("caught Ctrl-C", flush=True)
    sys.exit(3)
"""

RESIZE_PYTHON = """\
import os, signal

def report(*_):
    size = os.get_terminal_size()
    print(f"resized to {size.columns}x{size.lines}", flush=True)

size = os.get_terminal_size()
print(f"started at {size.columns}x{size.lines}", flush=True)
signal.signal(signal.SIGWINCH, report)
input("Resize the window, then press Enter. ")
"""

STDERR_PYTHON = """\
import sys
print("isatty:", sys.stdin.isatty())
print("this is stdout", flush=True)
print("oops on stderr", file=sys.stderr, flush=True)
answer = input("Continue? ")
print("you said", answer)
"""

# The finished line: "── finished · exit code 0 · Completed · 3.9 s · CPU 120 ms · 9.5 MB ──"
USAGE_TAIL = (
    r"[\d.]+ (?:ms|s|min [\d.]+ s) · (?:compile [\d.]+ m?s · )?CPU [\d.]+ m?s · [\d.]+ [kM]B ──"
)

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


def terminal_lines(page: Page) -> list[str]:
    """The terminal's visible rows, right-trimmed."""
    rows = page.locator("#terminal .xterm-rows > div").all_inner_texts()
    return [row.replace("\xa0", " ").rstrip() for row in rows]


def terminal_size(page: Page) -> tuple[int, int]:
    """Columns and rows of the terminal (the UI shows xterm's size on the pane)."""
    pane = page.get_by_test_id("terminal")
    return int(pane.get_attribute("data-cols") or 0), int(pane.get_attribute("data-rows") or 0)


def choose_mode(page: Page, mode: str) -> None:
    page.locator(f"label[for='mode-{mode}']").click()
    expect(page.get_by_test_id(f"mode-{mode}")).to_be_checked()


def session_requests(page: Page) -> list[dict[str, object]]:
    """Records the bodies of the page's POST /session calls (observed, not altered)."""
    bodies: list[dict[str, object]] = []

    def seen(request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/session"):
            bodies.append(json.loads(request.post_data or "{}"))

    page.on("request", seen)
    return bodies


# ---- tests -----------------------------------------------------------------


# The UI's default is a terminal; Node's async stdin never sees the terminal's EOF
# under the sandbox's pty (test_tty_eof_ends_node_readline), so its starter, which
# reads until end of input, runs with pipes.
STARTER_MODES = {"javascript": "pipe"}


@pytest.mark.parametrize("language", sorted(GREETINGS))
def test_starter_program(page: Page, screenshots: Path, language: str) -> None:
    pick_language(page, language)
    if language in STARTER_MODES:
        choose_mode(page, STARTER_MODES[language])
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
    # the Terminal / Pipes switch (one tab stop), then Clear (Ctrl-C, EOF are disabled)
    assert page.evaluate("document.activeElement.dataset.testid") == "mode-tty"
    page.keyboard.press("ArrowRight")  # arrows move within the radio group
    expect(page.get_by_test_id("mode-pipe")).to_be_checked()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.dataset.testid") == "clear"


def test_phone_width(open_ui: Callable[..., Page], screenshots: Path) -> None:
    page = open_ui(width=390, height=844)
    no_overflow = "document.documentElement.scrollWidth <= window.innerWidth"
    assert page.evaluate(no_overflow), "no sideways scrolling at phone width"
    heads_fit = """[...document.querySelectorAll('.pane-head, .bar')]
        .every((head) => head.scrollWidth <= head.clientWidth)"""
    assert page.evaluate(heads_fit), "the pane heads' controls fit at phone width"
    page.get_by_test_id("run").click()
    expect_terminal(page, GREETINGS["python"])
    expect(page.get_by_test_id("state")).to_be_in_viewport()
    page.screenshot(path=screenshots / "phone.png", full_page=True)
    page.get_by_test_id("stop").click()
    expect_state(page, "terminated", timeout=30_000)


# ---- tty mode, signals, waiting, pipe mode, usage --------------------------------


def test_tty_prompt_and_answer(page: Page, screenshots: Path) -> None:
    """The default mode gives the program a terminal; the pty echoes, the UI does not."""
    expect(page.get_by_test_id("mode-tty")).to_be_checked()
    # Tokens off (this api): nothing about them shows.
    expect(page.get_by_test_id("token-form")).to_be_hidden()
    expect(page.get_by_test_id("token-button")).to_be_hidden()
    posted = session_requests(page)
    set_code(page, TTY_PROMPT_PYTHON)
    page.get_by_test_id("run").click()
    expect_terminal(page, "isatty: True True")
    expect_terminal(page, "What is your name?")
    cols, rows = terminal_size(page)
    assert len(posted) == 1
    assert posted[0].get("tty") is True, posted
    assert (posted[0].get("cols"), posted[0].get("rows")) == (cols, rows), (posted, cols, rows)

    # The waiting indicator: the badge, the flag by the terminal, the terminal focused.
    expect_state(page, "waiting", timeout=10_000)
    expect(page.get_by_test_id("state")).to_have_text("waiting for input")
    expect(page.get_by_test_id("waiting-flag")).to_be_visible()
    assert terminal_has_focus(page)
    page.screenshot(path=screenshots / "tty-waiting-for-input.png")

    page.keyboard.type("Adx")
    page.keyboard.press("Backspace")  # the pty's line editing
    type_line(page, "a")
    expect_terminal(page, "Hello, Ada!")
    expect_state(page, "finished")
    expect(page.get_by_test_id("waiting-flag")).to_be_hidden()
    lines = terminal_lines(page)
    # Echoed once, by the pty (a local echo as well would show "AdaAda").
    assert "What is your name? Ada" in lines, lines
    expect(page.get_by_test_id("exit-code")).to_have_text("0")
    expect_terminal(page, re.compile(r"── finished · exit code 0 · Completed · " + USAGE_TAIL))
    page.screenshot(path=screenshots / "tty-answered.png")


def test_tty_ctrl_c_interrupts(page: Page, screenshots: Path) -> None:
    """Ctrl-C typed in the terminal is SIGINT for the program (KeyboardInterrupt)."""
    set_code(page, INTERRUPTIBLE_PYTHON)
    page.get_by_test_id("run").click()
    expect_terminal(page, "tick 3")
    expect_state(page, "running")
    assert terminal_has_focus(page)
    page.keyboard.press("Control+c")
    expect_terminal(page, "caught Ctrl-C", timeout=15_000)
    expect_state(page, "finished", timeout=30_000)
    expect(page.get_by_test_id("exit-code")).to_have_text("3")
    page.screenshot(path=screenshots / "tty-ctrl-c.png")


def test_pipe_mode_interrupt_button(page: Page, screenshots: Path) -> None:
    """With pipes, the Ctrl-C button signals the program's process group."""
    choose_mode(page, "pipe")
    set_code(page, INTERRUPTIBLE_PYTHON)
    page.get_by_test_id("run").click()
    expect_terminal(page, "tick 3")
    expect_state(page, "running")
    page.get_by_test_id("interrupt").click()
    expect_terminal(page, "caught Ctrl-C", timeout=15_000)
    expect_state(page, "finished", timeout=30_000)
    expect(page.get_by_test_id("exit-code")).to_have_text("3")
    page.screenshot(path=screenshots / "pipe-interrupt.png")


def test_tty_resize(page: Page, screenshots: Path) -> None:
    """Resizing the window resizes the program's terminal (SIGWINCH, new size)."""
    set_code(page, RESIZE_PYTHON)
    page.get_by_test_id("run").click()
    cols, rows = terminal_size(page)
    expect_terminal(page, f"started at {cols}x{rows}")
    expect_state(page, "waiting", timeout=10_000)
    page.set_viewport_size({"width": 1000, "height": 640})
    # xterm refits from a ResizeObserver, after the next layout: wait for that.
    page.wait_for_function(
        """([cols, rows]) => {
            const pane = document.querySelector("[data-testid=terminal]");
            return pane.dataset.cols !== String(cols) || pane.dataset.rows !== String(rows);
        }""",
        arg=[cols, rows],
        timeout=5_000,
    )
    new_cols, new_rows = terminal_size(page)
    assert (new_cols, new_rows) != (cols, rows)
    expect_terminal(page, f"resized to {new_cols}x{new_rows}", timeout=10_000)
    page.keyboard.press("Enter")
    expect_state(page, "finished")
    page.screenshot(path=screenshots / "tty-resized.png")


def test_pipe_mode_keeps_stderr_red(page: Page, screenshots: Path) -> None:
    """The switch to pipe mode: separate streams, stderr in red, input edited locally."""
    posted = session_requests(page)
    choose_mode(page, "pipe")
    set_code(page, STDERR_PYTHON)
    page.get_by_test_id("run").click()
    expect_terminal(page, "isatty: False")
    expect_terminal(page, "oops on stderr")
    assert len(posted) == 1
    assert "tty" not in posted[0], posted
    red = page.locator("#terminal .xterm-rows span.xterm-fg-1")
    expect(red.filter(has_text="oops on stderr")).to_have_count(1)
    expect(red.filter(has_text="this is stdout")).to_have_count(0)
    expect_state(page, "waiting", timeout=10_000)
    expect(page.get_by_test_id("waiting-flag")).to_be_visible()
    page.screenshot(path=screenshots / "pipe-stderr-red.png")
    type_line(page, "yes")
    expect_terminal(page, "you said yes")
    expect_state(page, "finished")
    expect_terminal(page, re.compile(r"── finished · exit code 0 · Completed · " + USAGE_TAIL))
    # The choice is kept for the next visit.
    page.reload()
    expect(page.get_by_test_id("mode-pipe")).to_be_checked()


def test_tty_eof_ends_node_readline(page: Page) -> None:
    """Send EOF (the terminal's VEOF) ends the JavaScript starter in tty mode."""
    pick_language(page, "javascript")
    page.get_by_test_id("run").click()
    expect_terminal(page, GREETINGS["javascript"])
    type_line(page, "hello icee")
    expect_terminal(page, "You typed: hello icee")
    page.get_by_test_id("eof").click()
    expect_terminal(page, "Bye!", timeout=15_000)
