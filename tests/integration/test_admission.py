"""Admission control and hardening against the real cluster (issue 9).

Each test starts its own api process (real uvicorn, real cluster, real gVisor
sandboxes) with the settings it needs; the operator is the shared one of the run.
Figures (flood counts, api RSS) are printed: run with ``-s`` to see them.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from conftest import ApiServer, LiveSession, kubectl
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

if TYPE_CHECKING:
    from conftest import StartApi

pytestmark = pytest.mark.cluster

HELLO = {"language": "python", "code": "print('hello')"}
ECHO = "print(input()[::-1])"
# The chart's memory limit for the api container.
API_MEMORY_LIMIT_BYTES = 256 * 1024 * 1024


def sandbox_pods(api: ApiServer) -> set[str]:
    out = kubectl(
        "get", "pods", "-n", api.namespace, "-l", "app.kubernetes.io/managed-by=icee",
        "-o", "name",
    )  # fmt: skip
    return {line.removeprefix("pod/") for line in out.split()}


def rss_bytes(api: ApiServer) -> int:
    for line in Path(f"/proc/{api.process.popen.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def echo_session(api: ApiServer, http: httpx.AsyncClient, text: str) -> str:
    r = await http.post("/session", json={"language": "python", "code": ECHO})
    assert r.status_code == 201, r.text
    async with api.connect(r.json()["sessionId"]) as s:
        await s.until_state("running", within=90)
        await s.input(text + "\n")
        t = await s.finish(within=90)
    assert t.final["reason"] == "Completed", t.messages
    return t.stdout


async def test_flood_from_one_client_gets_429_while_another_runs(start_api: StartApi) -> None:
    quota = 20
    api = start_api(
        trusted_proxies='["127.0.0.1"]',
        client_max_sessions=str(quota),
        client_burst=str(quota),
        client_rate_per_second="2",
        max_starting_sessions="100",  # the start cap has tests of its own
    )
    flooder = {"x-forwarded-for": "203.0.113.7"}
    other = {"x-forwarded-for": "203.0.113.8"}
    codes: list[int] = []
    refusals: list[httpx.Response] = []
    admitted: list[str] = []

    async def flood(http: httpx.AsyncClient, n: int) -> None:
        for _ in range(n):
            r = await http.post("/session", json=HELLO, headers=flooder)
            codes.append(r.status_code)
            if r.status_code == 201:
                admitted.append(r.json()["sessionId"])
            elif r.status_code == 429:
                refusals.append(r)

    started = time.monotonic()
    async with api.http() as flood_http, api.http() as http:
        http.headers.update(other)
        flooders = [asyncio.create_task(flood(flood_http, 25)) for _ in range(10)]
        await asyncio.sleep(0.2)  # the flood is on
        stdout = await echo_session(api, http, "a second client")
        await asyncio.gather(*flooders)
    elapsed = time.monotonic() - started
    assert stdout == "tneilc dnoces a\n"
    assert len(codes) == 250
    assert set(codes) <= {201, 429}, codes
    # Beyond its quota (concurrent sessions; its rate refills 2/s meanwhile) all 429.
    assert quota <= len(admitted) <= quota + 2 * elapsed + 1, (len(admitted), elapsed)
    assert len(refusals) == 250 - len(admitted)
    for r in refusals:
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["limit"] in ("client_sessions", "client_rate"), r.json()
        assert r.json()["detail"]
    # Nobody connected to the flood's sessions: they cost no sandbox.
    assert not {f"run-{sid}" for sid in admitted} & sandbox_pods(api)
    async with api.http() as http:
        metrics = (await http.get("/metrics")).text
        # Leave the namespace as found: every api watching it counts these sessions
        # (their start cap counts the unconnected ones created in the last seconds).
        for sid in admitted:
            assert (await http.delete(f"/session/{sid}")).status_code in (200, 202, 204)
    assert 'icee_sessions_rejected_total{why="client_sessions"}' in metrics
    for sid in admitted:
        assert (await api.wait_ended(sid, within=60))["reason"] == "UserTerminated"
    print(
        f"\nflood: {len(codes)} POSTs from one client in {elapsed:.1f} s: "
        f"{len(admitted)} admitted, {len(refusals)} refused 429; "
        f"a second client's session ran normally meanwhile"
    )


async def test_unconnected_sessions_create_no_pods(api: ApiServer) -> None:
    async with api.http() as http:
        ids = []
        for _ in range(5):
            # The operator ends them after their idle timeout from creation: long
            # enough that a loaded node still sees them pending below.
            r = await http.post("/session", json={**HELLO, "timeouts": {"idleSeconds": 10}})
            assert r.status_code == 201
            ids.append(r.json()["sessionId"])
        await asyncio.sleep(2)
        for sid in ids:
            assert (await http.get(f"/session/{sid}")).json()["state"] == "pending"
        assert not {f"run-{sid}" for sid in ids} & sandbox_pods(api)
    # Nobody comes: each ends with ClientGone, still without a pod.
    for sid in ids:
        final = await api.wait_ended(sid, within=40)
        assert (final["state"], final["reason"]) == ("terminated", "ClientGone"), final
        assert "no client connected within 10 s" in final["message"]
    assert not {f"run-{sid}" for sid in ids} & sandbox_pods(api)
    # The same flow with a client: the pod is made when it connects.
    t = await api.run("print('lazy')")
    assert (t.stdout, t.final["reason"]) == ("lazy\n", "Completed")


async def test_post_needs_json(api: ApiServer) -> None:
    async with api.http() as http:
        r = await http.post("/session", content=json.dumps(HELLO).encode())
        assert r.status_code == 415
        assert "application/json" in r.json()["detail"]


async def test_cross_origin_websocket_is_refused(api: ApiServer) -> None:
    sid = await api.create("print(input())")
    url = f"{api.ws_url}/ws/session/{sid}"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, origin="https://evil.example"):  # type: ignore[arg-type]
            pass  # pragma: no cover
    assert refused.value.response.status_code == 403
    assert b"origin" in refused.value.response.body
    # The page served by this api (same origin) may.
    same = f"http://127.0.0.1:{api.port}"
    async with connect(url, origin=same) as ws:  # type: ignore[arg-type]
        s = LiveSession(sid, ws)
        await s.until_state("running", within=90)
        await s.input("same origin\n")
        t = await s.finish()
    assert t.stdout == "same origin\n"


TOKEN = "it-token-0123456789abcdef"


async def test_tokens(start_api: StartApi, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    (tokens / "tester").write_text(TOKEN + "\n")
    api = start_api(tokens_dir=str(tokens))
    async with api.http() as http:
        r = await http.post("/session", json=HELLO)
        assert r.status_code == 401
        assert "Bearer" in r.json()["detail"]
        r = await http.post("/session", json=HELLO, headers={"authorization": "Bearer " + "x" * 20})
        assert r.status_code == 403
        for path in ("/healthz", "/readyz", "/metrics", "/languages"):
            assert (await http.get(path)).status_code == 200, path
        r = await http.post(
            "/session",
            json={"language": "python", "code": ECHO},
            headers={"authorization": f"Bearer {TOKEN}"},
        )
        assert r.status_code == 201, r.text
        sid = r.json()["sessionId"]
        assert (await http.get(f"/session/{sid}")).status_code == 401
    url = f"{api.ws_url}/ws/session/{sid}"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url):
            pass  # pragma: no cover
    assert refused.value.response.status_code == 401
    # As a browser does it: the token in a subprotocol; the server selects "icee".
    protocols: Any = ["icee", f"bearer.{TOKEN}"]
    async with connect(url, subprotocols=protocols) as ws:
        assert ws.subprotocol == "icee"
        s = LiveSession(sid, ws)
        await s.until_state("running", within=90)
        await s.input("token\n")
        t = await s.finish()
    assert (t.stdout, t.final["reason"]) == ("nekot\n", "Completed")


async def _oversized(api: ApiServer) -> tuple[int | None, str]:
    sid = await api.create("input()")
    async with connect(f"{api.ws_url}/ws/session/{sid}", max_size=None) as ws:
        try:
            await ws.send(json.dumps({"type": "input", "data": "x" * (2 << 20)}))
            while True:
                await ws.recv()
        except ConnectionClosed:
            pass
        return ws.close_code, sid


async def _never_reads(api: ApiServer) -> str:
    """A client that stops reading while its program writes as fast as it can."""
    limits = {"outputBytes": 64 << 20}
    sid = await api.create("while True:\n    print('y' * 4000)\n", limits=limits)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", api.port))
    sock.setblocking(False)
    async with connect(f"{api.ws_url}/ws/session/{sid}", sock=sock, max_queue=1):
        # Read nothing: once the buffers are full, the api gives up on us after its
        # send timeout and ends the session.
        await api.wait_ended(sid, within=90)
    return sid


async def test_oversized_frames_and_stalled_readers_stay_bounded(start_api: StartApi) -> None:
    api = start_api(
        ws_send_timeout_seconds="3",
        maxima__limits__output_bytes=str(64 << 20),
        client_max_sessions="100",
        client_burst="100",
        max_starting_sessions="100",  # 15 sessions of one client start at once
    )
    samples: list[int] = []
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            samples.append(rss_bytes(api))
            await asyncio.sleep(0.1)

    baseline = rss_bytes(api)
    sampler = asyncio.create_task(sample())
    async with api.http() as http:
        normal = asyncio.create_task(echo_session(api, http, "undisturbed"))
        oversized = [asyncio.create_task(_oversized(api)) for _ in range(8)]
        stalled = [asyncio.create_task(_never_reads(api)) for _ in range(6)]
        closes = await asyncio.gather(*oversized)
        stalled_ids = await asyncio.gather(*stalled)
        assert await normal == "debrutsidnu\n"
    done.set()
    await sampler
    for code, sid in closes:
        assert code == 1009, code  # message too big, refused before it was read
        final = await api.wait_ended(sid, within=60)
        assert final["reason"] == "ClientGone", final
    for sid in stalled_ids:
        final = await api.wait_ended(sid, within=60)
        assert final["reason"] == "ClientGone", final
        assert "stopped reading" in final["message"], final
    peak = max(samples)
    async with api.http() as http:
        metrics = (await http.get("/metrics")).text
    assert "icee_clients_too_slow_total 6.0" in metrics
    print(
        f"\napi RSS: {baseline / 2**20:.0f} MiB before, peak {peak / 2**20:.0f} MiB with 8 "
        f"sockets sending 2 MiB frames and 6 that never read (limit "
        f"{API_MEMORY_LIMIT_BYTES / 2**20:.0f} MiB)"
    )
    assert peak < API_MEMORY_LIMIT_BYTES
    assert peak - baseline < 64 * 2**20
