"""Fixtures for the browser end-to-end tests (``pytest -m e2e tests/e2e``).

They drive Debian's headless Chromium through Playwright against the real api;
nothing is mocked. Which api:

- ICEE_API_URL set (e.g. http://127.0.0.1:30080/ after ``make up``): that one,
  with the UI it serves;
- otherwise: an ``icee-api`` process serving this checkout's ``ui/dist`` (build it
  with ``make ui``) plus an ``icee-operator``, both on the local cluster in
  $KUBECONFIG, in a namespace of their own that is removed afterwards.

Tests that need an api configured differently (API tokens on) always start their
own ``icee-api`` in that namespace (``local_stack``), whichever api the others use.

Screenshots land in ``artifacts/screenshots/`` at the repository root: one per
checked state, plus ``FAILED-<test>.png`` for each failed test.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "artifacts" / "screenshots"
UI_DIST = REPO / "ui" / "dist"
CRD = REPO / "charts" / "icee" / "crds" / "codesession.yaml"
BIN = Path(sys.executable).parent
DEFAULT_KUBECONFIG = "/var/lib/icee-cluster/kubeconfig"
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
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


# ---- the api under test ------------------------------------------------------


def _kubectl_path() -> str:
    cached = sorted(Path.home().glob(".cache/icee/k8s-v*/bin/kubectl"))
    return str(cached[-1]) if cached else (shutil.which("kubectl") or "kubectl")


def kubectl(*args: str, check: bool = True) -> str:
    proc = subprocess.run(
        [_kubectl_path(), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start(name: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(BIN / name)], env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
            cwd=REPO,
        )  # fmt: skip


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"icee-api exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"icee-api not ready in 60 s:\n{log.read_text(errors='replace')[-3000:]}")


class LocalStack:
    """An ``icee-operator`` and any number of ``icee-api`` processes (this checkout's
    code and ``ui/dist``) in a namespace of their own on the local cluster."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.namespace = f"icee-e2e-{uuid.uuid4().hex[:8]}"
        self._procs: list[subprocess.Popen[bytes]] = []
        self._operator: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if not (UI_DIST / "index.html").is_file():
            pytest.fail("ui/dist is not built (make ui)")
        os.environ.setdefault("KUBECONFIG", DEFAULT_KUBECONFIG)
        if not Path(os.environ["KUBECONFIG"]).exists():
            pytest.fail("no local cluster (make cluster)")
        try:
            kubectl("get", "--raw", "/readyz")
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            pytest.fail(f"the cluster does not answer: {exc}")
        if not kubectl("get", "crd", "codesessions.icee.dev", check=False).strip():
            kubectl("apply", "-f", str(CRD))
            kubectl("wait", "--for=condition=Established", "crd/codesessions.icee.dev")
        kubectl("create", "namespace", self.namespace)
        self._operator = _start(
            "icee-operator",
            {"ICEE_NAMESPACE": self.namespace, "ICEE_HEALTH_PORT": str(_free_port())},
            self.logs / "icee-operator.log",
        )

    def api(self, name: str, env: dict[str, str] | None = None) -> str:
        """Starts an ``icee-api`` with ``env`` on top of the defaults; returns its URL."""
        port = _free_port()
        log = self.logs / f"{name}.log"
        proc = _start(
            "icee-api",
            {
                "ICEE_NAMESPACE": self.namespace,
                "ICEE_HOST": "127.0.0.1",
                "ICEE_PORT": str(port),
                "ICEE_UI_DIR": str(UI_DIST),
                **(env or {}),
            },
            log,
        )
        self._procs.append(proc)
        url = f"http://127.0.0.1:{port}/"
        _wait_ready(url, proc, log)
        return url

    def stop(self) -> None:
        for proc in self._procs:
            _stop(proc)
        # While the operator still runs, so it can remove its finalizers.
        kubectl(
            "delete", "codesessions", "--all", "-n", self.namespace, "--timeout=60s", check=False
        )
        if self._operator is not None:
            _stop(self._operator)
        kubectl("delete", "namespace", self.namespace, "--wait=false", check=False)


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Started on first use, even when ICEE_API_URL names the api under test: tests
    that need an api configured their own way (tokens on) start it here."""
    stack = LocalStack(tmp_path_factory.mktemp("e2e-logs"))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def api_url(request: pytest.FixtureRequest) -> str:
    """ICEE_API_URL (e.g. the helm release after ``make up``), else a local api."""
    given = os.environ.get("ICEE_API_URL")
    if given:
        return given.rstrip("/") + "/"
    stack: LocalStack = request.getfixturevalue("local_stack")
    return stack.api("icee-api")


@dataclass(frozen=True)
class TokenApi:
    url: str
    token: str


@pytest.fixture(scope="session")
def token_api(local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> TokenApi:
    """An api with API tokens on (one token, as a mounted Secret would give it) and a
    per-client quota of one session at a time, so that a second run gets a 429."""
    tokens = tmp_path_factory.mktemp("tokens")
    token = secrets.token_hex(24)
    (tokens / "e2e").write_text(token + "\n")
    url = local_stack.api(
        "icee-api-tokens",
        {"ICEE_TOKENS_DIR": str(tokens), "ICEE_CLIENT_MAX_SESSIONS": "1"},
    )
    return TokenApi(url, token)


# ---- the browser -------------------------------------------------------------


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (make cluster does)")
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
