"""The start gate against the real cluster: whose cold start goes next, and what a
wait in the gate must not do to a session (icee_api.start_gate).

The namespace has an operator of its own whose sandbox pods ask for more
ephemeral storage than the node has: they are created and stay Pending, so a start
slot is held until its session's client leaves (or the session ends). The gate's
order is then decided by the test's own steps, never by timing: the order is read
from which CodeSessions got ``spec.start`` (the gate's admission), one release at a
time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    ApiServer,
    LiveSession,
    apply_crd,
    kubectl,
    start_api_server,
    start_operator,
)

pytestmark = pytest.mark.cluster

HELLO = {"language": "python", "code": "print('hello')"}
FLOODER = {"x-forwarded-for": "203.0.113.7"}
OTHER = {"x-forwarded-for": "203.0.113.8"}
# More than the node's allocatable ephemeral storage: the pod is never scheduled.
UNSCHEDULABLE_STORAGE = str(1 << 40)


@pytest.fixture(scope="module")
def gate_namespace(kubeconfig: str, process_logs: Path) -> Iterator[str]:
    """A namespace whose operator creates pods that never run (see above)."""
    apply_crd("codesession")
    ns = f"icee-gate-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", ns)
    operator = start_operator(
        ns,
        process_logs,
        ephemeral_storage_limit_bytes=UNSCHEDULABLE_STORAGE,
        ephemeral_storage_request_bytes=UNSCHEDULABLE_STORAGE,
        start_timeout_seconds="600",
    )
    try:
        yield ns
    finally:
        kubectl("delete", "codesessions", "--all", "-n", ns, "--timeout=60s", check=False)
        operator.stop()
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


@contextlib.contextmanager
def gate_api(namespace: str, logs: Path, **settings: str) -> Iterator[ApiServer]:
    api = start_api_server(
        namespace,
        logs,
        trusted_proxies='["127.0.0.1"]',
        start_gate_slots="1",
        start_gate_hold_seconds="600",
        **settings,
    )
    try:
        yield api
    finally:
        api.process.stop()


async def until(what: str, check: Callable[[], Awaitable[bool]], within: float = 60) -> None:
    try:
        async with asyncio.timeout(within):
            while not await check():  # noqa: ASYNC110 (the cluster has no event to wait on)
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"not within {within} s: {what}") from None


async def sessions(namespace: str) -> dict[str, dict[str, Any]]:
    out = await asyncio.to_thread(kubectl, "get", "codesessions", "-n", namespace, "-o", "json")
    return {item["metadata"]["name"]: item for item in json.loads(out)["items"]}


async def started(namespace: str, ids: list[str]) -> set[str]:
    """Which of ``ids`` the gate let start (their spec.start is written)."""
    objs = await sessions(namespace)
    return {sid for sid in ids if (objs.get(sid, {}).get("spec") or {}).get("start")}


async def gate_waiting(api: ApiServer) -> int:
    async with api.http() as http:
        text = (await http.get("/metrics")).text
    match = re.search(r"^icee_start_gate_waiting (\S+)$", text, re.MULTILINE)
    assert match is not None, "no icee_start_gate_waiting on /metrics"
    return int(float(match.group(1)))


class Clients:
    """Sessions created as one client or another, their sockets open until closed."""

    def __init__(self, api: ApiServer, stack: contextlib.AsyncExitStack) -> None:
        self.api = api
        self.stack = stack
        self.open: dict[str, LiveSession] = {}

    async def create(self, headers: dict[str, str], **extra: Any) -> str:
        async with self.api.http() as http:
            r = await http.post("/session", json={**HELLO, **extra}, headers=headers)
        assert r.status_code == 201, r.text
        session_id: str = r.json()["sessionId"]
        return session_id

    async def connect(self, session_id: str) -> LiveSession:
        live = await self.stack.enter_async_context(self.api.connect(session_id))
        await live.until_state("pending")
        self.open[session_id] = live
        return live

    async def close(self, session_id: str) -> None:
        await self.open.pop(session_id).ws.close()


@contextlib.asynccontextmanager
async def clients(api: ApiServer) -> AsyncIterator[Clients]:
    async with contextlib.AsyncExitStack() as stack:
        yield Clients(api, stack)


async def test_another_clients_start_is_served_next_in_turn(
    gate_namespace: str, process_logs: Path
) -> None:
    ns = gate_namespace
    with gate_api(ns, process_logs) as api:
        async with clients(api) as c:
            f = [await c.create(FLOODER) for _ in range(4)]
            v1 = await c.create(OTHER)
            everyone = [*f, v1]

            async def only_started(*expected: str) -> None:
                # One slot: once these started, nobody else can until one leaves.
                await until(
                    f"{expected} started", lambda: _has(started(ns, everyone), set(expected))
                )
                assert await started(ns, everyone) == set(expected)

            async def waiting(n: int) -> None:
                await until(f"{n} waiting", lambda: _equals(gate_waiting(api), n))

            # The flooder takes the one slot and queues three more starts.
            await c.connect(f[0])
            await only_started(f[0])
            for sid in f[1:]:
                await c.connect(sid)
            await waiting(3)
            # Another client comes last.
            await c.connect(v1)
            await waiting(4)
            assert await started(ns, everyone) == {f[0]}

            # The slot frees: the other client is next, not the flood's oldest.
            await c.close(f[0])
            await waiting(3)
            await only_started(f[0], v1)

            # Then turns alternate, the flooder's starts in the order they came.
            v2 = await c.create(OTHER)
            everyone.append(v2)
            await c.connect(v2)
            await waiting(4)
            await c.close(v1)
            await waiting(3)
            await only_started(f[0], v1, f[1])
            await c.close(f[1])
            await waiting(2)
            await only_started(f[0], v1, f[1], v2)

            # A client that leaves while queued is out of the queue at once, and the
            # slot it would have had goes to the next one (nothing leaks).
            await c.close(f[2])
            await waiting(1)
            await c.close(v2)
            await waiting(0)
            await only_started(f[0], v1, f[1], v2, f[3])
            objs = await sessions(ns)
            left = objs[f[2]]["spec"]
            assert "start" not in left
            assert left["termination"]["reason"] == "ClientGone"
            assert "waited for a start slot" in left["termination"]["message"]
            await c.close(f[3])
        # Every slot came back: a new start goes at once.
        async with clients(api) as c:
            last = await c.create(OTHER)
            await c.connect(last)
            await until("a free slot", lambda: _has(started(ns, [last]), {last}))


async def test_a_queued_session_is_not_ended_as_never_connected(
    gate_namespace: str, process_logs: Path
) -> None:
    """Its connect deadline (its idle timeout from creation) passes while it waits:
    the operator sees its client's stream claim and leaves it; the gate's own bound
    ends it, StartFailed with the reason. A terminate while queued ends it at once."""
    ns = gate_namespace
    with gate_api(ns, process_logs, start_gate_max_wait_seconds="15") as api:
        async with clients(api) as c:
            holder = await c.create(OTHER)
            await c.connect(holder)
            await until("the holder started", lambda: _has(started(ns, [holder]), {holder}))
            short = {"timeouts": {"idleSeconds": 2}}
            queued = await c.create(FLOODER, **short)
            stopped = await c.create(FLOODER, **short)
            q = await c.connect(queued)
            s = await c.connect(stopped)
            await until("2 waiting", lambda: _equals(gate_waiting(api), 2))

            await s.send({"type": "terminate"})
            final = await s.until_state("terminated", within=60)
            assert final["reason"] == "UserTerminated", s.transcript.messages

            final = await q.until_state("terminated", within=90)
            assert final["reason"] == "StartFailed", q.transcript.messages
            assert "no start slot within 15 s" in final["message"], final
            assert any("no start slot" in m for m in q.transcript.errors), q.transcript.messages
            objs = await sessions(ns)
            for sid in (queued, stopped):
                assert "start" not in objs[sid]["spec"], objs[sid]["spec"]
            assert (objs[queued]["status"] or {})["reason"] == "StartFailed"
            assert await gate_waiting(api) == 0


async def _has(found: Awaitable[set[str]], expected: set[str]) -> bool:
    return expected <= await found


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected
