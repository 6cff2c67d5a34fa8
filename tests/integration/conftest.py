"""Shared fixtures for tests against the real local cluster (``pytest -m cluster``).

Nothing here mocks Kubernetes: the api and the operator run as real processes
against the cluster in $KUBECONFIG (default /var/lib/icee-cluster/kubeconfig).

By default each test run gets its own namespace (``icee-it-<random>``) with its
own ``icee-operator`` process, so runs never disturb each other or a deployed
icee. Set ICEE_TEST_NAMESPACE to test an already running operator instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from icee_core import names
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

REPO = Path(__file__).resolve().parents[2]
DEFAULT_KUBECONFIG = "/var/lib/icee-cluster/kubeconfig"
CRD = REPO / "charts" / "icee" / "crds" / "codesession.yaml"
BIN = Path(sys.executable).parent


def _kubectl_path() -> str:
    cached = sorted(Path.home().glob(".cache/icee/k8s-v*/bin/kubectl"))
    return str(cached[-1]) if cached else (shutil.which("kubectl") or "kubectl")


KUBECTL = _kubectl_path()


def kubectl(*args: str, check: bool = True, timeout: float = 60) -> str:
    proc = subprocess.run(
        [KUBECTL, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def apply_crd(kind: str) -> None:
    """This checkout's CRD (charts/icee/crds/<kind>.yaml), applied and served.

    Always applied: helm does not upgrade CRDs, and this checkout's (additive)
    schema must be in.
    """
    path = CRD.with_name(f"{kind}.yaml")
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    kubectl("wait", "--for=condition=Established", f"crd/{kind}s.icee.dev")


def apply_pool(namespace: str, name: str, language: str, replicas: int) -> None:
    pool = {
        "apiVersion": names.API_VERSION,
        "kind": "SandboxPool",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"language": language, "replicas": replicas},
    }
    subprocess.run([KUBECTL, "apply", "-f", "-"], input=json.dumps(pool), text=True, check=True)


def pod_ready(pod: dict[str, Any]) -> bool:
    """Ready and not being deleted."""
    conditions = (pod.get("status") or {}).get("conditions") or []
    return not pod["metadata"].get("deletionTimestamp") and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conditions
    )


def wait_for(what: str, check: Callable[[], bool], within: float = 90, every: float = 0.5) -> float:
    """Poll ``check`` (often a kubectl call) until it holds; the seconds it took."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < within, f"timed out waiting for {what}"
        time.sleep(every)
    return time.monotonic() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    path = os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG
    if not Path(path).exists():
        pytest.fail(f"no kubeconfig at {path}: bring the cluster up (make cluster)")
    os.environ["KUBECONFIG"] = path
    try:
        kubectl("get", "--raw", "/readyz", timeout=10)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"the cluster does not answer: {exc}")
    return path


@dataclass
class Process:
    """A process started by a fixture; its output goes to a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def start_process(name: str, argv: list[str], env: dict[str, str], logs: Path) -> Process:
    log = logs / f"{name}-{uuid.uuid4().hex[:6]}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, cwd=REPO
        )
    return Process(name, popen, log)


def icee_env(settings: dict[str, str]) -> dict[str, str]:
    """``ICEE_*`` variables from settings named as in Settings (``lease_seconds``)."""
    return {f"ICEE_{key.upper()}": value for key, value in settings.items()}


def start_operator(namespace: str, logs: Path, **settings: str) -> Process:
    """An ``icee-operator`` process (the console script) serving ``namespace``."""
    env = {"ICEE_NAMESPACE": namespace, "ICEE_HEALTH_PORT": str(free_port())}
    return start_process("operator", [str(BIN / "icee-operator")], env | icee_env(settings), logs)


def start_api_server(namespace: str, logs: Path, **settings: str) -> ApiServer:
    """An ``icee-api`` process (the console script) on a free port, once it is ready."""
    port = free_port()
    env = {"ICEE_NAMESPACE": namespace, "ICEE_PORT": str(port), "ICEE_HOST": "127.0.0.1"}
    proc = start_process("api", [str(BIN / "icee-api")], env | icee_env(settings), logs)
    server = ApiServer(proc, port, namespace)
    try:
        _wait_ready(server)
    except BaseException:
        proc.stop()
        raise
    return server


@pytest.fixture(scope="session")
def process_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def namespace(kubeconfig: str, process_logs: Path) -> Iterator[str]:
    """The sandbox namespace the tests use, with an operator serving it."""
    given = os.environ.get("ICEE_TEST_NAMESPACE")
    if given:
        yield given
        return
    apply_crd("codesession")
    ns = f"icee-it-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", ns)
    operator = start_operator(ns, process_logs)
    try:
        yield ns
    finally:
        # While the operator still runs, so it can remove its finalizers.
        kubectl("delete", "codesessions", "--all", "-n", ns, "--timeout=60s", check=False)
        operator.stop()
        for name in kubectl("get", "codesessions", "-n", ns, "-o", "name", check=False).split():
            kubectl("patch", name, "-n", ns, "--type=merge", "-p",
                    '{"metadata":{"finalizers":null}}', check=False)  # fmt: skip
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


@dataclass
class ApiServer:
    process: Process
    port: int
    namespace: str

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=30)

    def pod_exists(self, session_id: str) -> bool:
        out = kubectl("get", "pod", f"run-{session_id}", "-n", self.namespace, "--ignore-not-found")
        return bool(out.strip())

    async def wait_ended(self, session_id: str, within: float = 30) -> dict[str, Any]:
        """GET /session/{id} until it is finished or terminated."""
        async with self.http() as http:
            for _ in range(int(within / 0.25)):
                body: dict[str, Any] = (await http.get(f"/session/{session_id}")).json()
                if body["state"] in ("finished", "terminated"):
                    return body
                await asyncio.sleep(0.25)
        raise AssertionError(f"session {session_id} did not end within {within} s: {body}")

    async def deadline_lateness(self, session_id: str, transcript: Transcript) -> float:
        """Seconds from the session's execution deadline (its CodeSession's startedAt +
        executionSeconds) to its final state at the client; checks the status's times too.
        """
        async with self.http() as http:
            view = (await http.get(f"/session/{session_id}")).json()
        # In a thread: a blocking kubectl would hold up the other sessions' clients.
        obj = json.loads(
            await asyncio.to_thread(
                kubectl, "get", "codesession", session_id, "-n", self.namespace, "-o", "json"
            )
        )
        seconds = obj["spec"]["timeouts"]["executionSeconds"]
        started = datetime.fromisoformat(view["startedAt"]).timestamp()
        finished = datetime.fromisoformat(view["finishedAt"]).timestamp()
        deadline = started + seconds
        assert transcript.final_at is not None, transcript.messages
        late = transcript.final_at - deadline
        # Times in the status have a resolution of a second (the kubelet's startedAt).
        assert -1 <= finished - deadline <= late + 1, (view, late)
        return late

    async def wait_pod_gone(self, session_id: str, within: float = 30) -> None:
        for _ in range(int(within / 0.25)):
            if not self.pod_exists(session_id):
                return
            await asyncio.sleep(0.25)
        raise AssertionError(f"pod run-{session_id} still there after {within} s")

    async def create(self, code: str, language: str = "python", **extra: Any) -> str:
        """POST /session; returns the session id."""
        async with self.http() as http:
            r = await http.post("/session", json={"language": language, "code": code, **extra})
            assert r.status_code == 201, r.text
            session_id: str = r.json()["sessionId"]
            return session_id

    @contextlib.asynccontextmanager
    async def connect(self, session_id: str) -> AsyncIterator[LiveSession]:
        async with connect(f"{self.ws_url}/ws/session/{session_id}", max_size=None) as ws:
            yield LiveSession(session_id, ws)

    async def refused(self, session_id: str) -> tuple[int | None, str | None]:
        """Open the session's WebSocket as another client would: the close it gets."""
        async with connect(f"{self.ws_url}/ws/session/{session_id}") as ws:
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        return ws.close_code, ws.close_reason

    @contextlib.asynccontextmanager
    async def live(
        self, code: str, language: str = "python", **extra: Any
    ) -> AsyncIterator[LiveSession]:
        """POST /session, then its WebSocket."""
        async with self.connect(await self.create(code, language, **extra)) as session:
            yield session

    async def run(self, code: str, **extra: Any) -> Transcript:
        """A session from start to its final state, with no input."""
        async with self.live(code, **extra) as s:
            return await s.finish()


def _wait_ready(server: ApiServer, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.popen.poll() is not None:
            raise RuntimeError(f"icee-api exited:\n{server.process.tail()}")
        try:
            with urllib.request.urlopen(f"{server.base_url}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"icee-api not ready in {timeout} s:\n{server.process.tail()}")


StartApi = Callable[..., ApiServer]


@pytest.fixture(scope="session")
def _api_servers(namespace: str, process_logs: Path) -> Iterator[list[ApiServer]]:
    servers: list[ApiServer] = []
    yield servers
    for server in servers:
        server.process.stop()


@pytest.fixture(scope="session")
def start_api(namespace: str, process_logs: Path, _api_servers: list[ApiServer]) -> StartApi:
    """Start an ``icee-api`` process (the console script) with extra ICEE_* settings."""

    def start(namespace: str = namespace, **settings: str) -> ApiServer:
        """``namespace``: another sandbox namespace than the tests' (e.g. one without
        an operator)."""
        server = start_api_server(namespace, process_logs, **settings)
        _api_servers.append(server)
        return server

    return start


@pytest.fixture(scope="session")
def api(start_api: StartApi) -> ApiServer:
    """One api process shared by the tests that need nothing special."""
    return start_api()


# -- a small client of the api, for tests --------------------------------------------


@dataclass
class Transcript:
    messages: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    # When the final state arrived, by the client's wall clock (time.time()), to
    # compare with the CodeSession's times.
    final_at: float | None = None

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]

    @property
    def stdout(self) -> str:
        return "".join(m["data"] for m in self.of("stdout"))

    @property
    def stderr(self) -> str:
        return "".join(m["data"] for m in self.of("stderr"))

    @property
    def states(self) -> list[str]:
        return [m["state"] for m in self.of("state")]

    @property
    def final(self) -> dict[str, Any]:
        return self.of("state")[-1]

    @property
    def errors(self) -> list[str]:
        return [m["message"] for m in self.of("error")]


class LiveSession:
    """One session's WebSocket, recording every message it receives."""

    def __init__(self, session_id: str, ws: ClientConnection) -> None:
        self.id = session_id
        self.ws = ws
        self.transcript = Transcript()

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def input(self, data: str) -> None:
        await self.send({"type": "input", "data": data})

    async def next(self, within: float = 30) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), within)
        msg: dict[str, Any] = json.loads(raw)
        self.transcript.messages.append(msg)
        if msg["type"] == "state" and msg["state"] in ("finished", "terminated"):
            self.transcript.final_at = time.time()
        return msg

    async def until(
        self, predicate: Callable[[dict[str, Any]], bool], within: float = 30
    ) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while True:
                msg = await self.next(within)
                if predicate(msg):
                    return msg

    async def until_stdout(self, text: str, within: float = 30) -> None:
        async with asyncio.timeout(within):
            while text not in self.transcript.stdout:
                await self.next(within)

    async def until_state(self, state: str, within: float = 30) -> dict[str, Any]:
        return await self.until(lambda m: m["type"] == "state" and m["state"] == state, within)

    async def finish(self, within: float = 60) -> Transcript:
        """Read everything until the server closes the WebSocket."""
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(within):
                while True:
                    await self.next(within)
        self.transcript.close_code = self.ws.close_code
        self.transcript.close_reason = self.ws.close_reason or ""
        return self.transcript
