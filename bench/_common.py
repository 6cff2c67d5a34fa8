"""Shared bits of the benchmarks: percentiles, an api process, a session client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

BIN = Path(sys.executable).parent


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    rank = max(1, round(p / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def report(name: str, seconds: list[float]) -> None:
    ms = [s * 1000 for s in seconds]
    print(
        f"{name}: n={len(ms)} p50={percentile(ms, 50):.1f} ms p95={percentile(ms, 95):.1f} ms "
        f"p99={percentile(ms, 99):.1f} ms min={min(ms):.1f} ms max={max(ms):.1f} ms"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# Processes this bench started (pid -> what it is), for cpu_by_process.Sampler.
OWN: dict[int, str] = {}

KUBECTL = str(Path(__file__).resolve().parents[1] / "cluster" / "kubectl")


def kubectl(*args: str) -> str:
    return subprocess.run([KUBECTL, *args], capture_output=True, text=True, check=False).stdout


def load_average() -> str:
    """The 1-minute load average and the core count, to print next to every figure."""
    return f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


@contextlib.contextmanager
def bench_namespace(operator_env: dict[str, str] | None = None) -> Iterator[str]:
    """A namespace of our own (deleted afterwards); with ``operator_env`` an operator
    (with those extra settings) serves it."""
    namespace = f"icee-bench-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    operator = None
    if operator_env is not None:
        env = {**os.environ, **operator_env, "ICEE_NAMESPACE": namespace,
               "ICEE_HEALTH_PORT": str(free_port())}  # fmt: skip
        operator = subprocess.Popen(
            [str(BIN / "icee-operator")], env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        OWN[operator.pid] = "icee operator"
    try:
        yield namespace
    finally:
        kubectl("delete", "codesessions", "--all", "-n", namespace, "--wait=false")
        if operator is not None:
            stop(operator)
        kubectl("delete", "namespace", namespace, "--wait=false")


def stop(proc: subprocess.Popen[bytes], grace: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``grace`` seconds."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def start_api(namespace: str, **settings: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``icee-api`` on a free port; returns the process and its base URL."""
    port = free_port()
    env = {**os.environ, "ICEE_NAMESPACE": namespace, "ICEE_PORT": str(port),
           "ICEE_HOST": "127.0.0.1", "ICEE_LOG_LEVEL": "warning"}  # fmt: skip
    env |= {f"ICEE_{k.upper()}": v for k, v in settings.items()}
    proc = subprocess.Popen([str(BIN / "icee-api")], env=env)
    OWN[proc.pid] = "icee api"
    url = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("icee-api did not become ready")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def create(http: httpx.AsyncClient, code: str, **extra: Any) -> str:
    r = await http.post("/session", json={"language": "python", "code": code, **extra})
    r.raise_for_status()
    session_id: str = r.json()["sessionId"]
    return session_id


class Refused(Exception):
    """Admission kept refusing (429/503) for longer than the caller would wait."""


async def create_admitted(
    http: httpx.AsyncClient, code: str, within: float, client: str | None = None, **extra: Any
) -> tuple[str, list[str]]:
    """Create a session as a well-behaved client: on a 429 or 503 with Retry-After,
    wait that long and try again, for up to ``within`` seconds. Returns the session id
    and the refusals met on the way (their ``limit``, or the status). ``client``: an
    address to send as X-Forwarded-For (an api with ``TRUSTED_PROXIES`` = us believes
    it), so one bench can be many clients, as a classroom is."""
    refusals: list[str] = []
    deadline = time.monotonic() + within
    headers = {"x-forwarded-for": client} if client else {}
    body = {"language": "python", "code": code, **extra}
    while True:
        r = await http.post("/session", json=body, headers=headers)
        if r.status_code not in (429, 503) or "retry-after" not in r.headers:
            r.raise_for_status()
            session_id: str = r.json()["sessionId"]
            return session_id, refusals
        try:
            refusals.append(str(r.json().get("limit") or r.status_code))
        except ValueError:
            refusals.append(str(r.status_code))
        wait = float(r.headers["retry-after"])
        if time.monotonic() + wait > deadline:
            raise Refused(f"still refused after {within:.0f} s: {refusals[-1]}")
        await asyncio.sleep(wait)


def ws_url(base: str, session_id: str) -> str:
    return base.replace("http", "ws", 1) + f"/ws/session/{session_id}"


def loads(raw: str | bytes) -> dict[str, Any]:
    msg: dict[str, Any] = json.loads(raw)
    return msg
