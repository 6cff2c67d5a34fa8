"""Nothing is left behind: 20 sessions through the real api and operator, some
ending by themselves, some killed mid-run in every way a session can be killed,
one with the operator restarted mid-session. Afterwards no Pod, no ConfigMap and
no ended CodeSession older than the retention setting remains.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from conftest import (
    LiveSession,
    Process,
    kubectl,
    start_api_server,
    start_operator,
)
from icee_core import names
from websockets.asyncio.client import connect

pytestmark = pytest.mark.cluster

RETENTION_SECONDS = 8
OURS = names.MANAGED_SELECTOR
WAIT_FOR_INPUT = "import sys\nprint('ready', flush=True)\nprint(sys.stdin.readline().upper())\n"


class Stack:
    """An operator and an api serving a namespace of their own."""

    def __init__(self, namespace: str, logs: Path) -> None:
        self.namespace = namespace
        self.logs = logs
        self.operator = self.start_operator()
        self.api = start_api_server(namespace, logs)

    def start_operator(self) -> Process:
        return start_operator(
            self.namespace, self.logs, health_port="0", retention_seconds=str(RETENTION_SECONDS)
        )

    def restart_operator(self) -> None:
        self.operator.stop()
        self.operator = self.start_operator()

    def left(self, kinds: str) -> list[str]:
        """Objects icee made (not, say, the namespace's kube-root-ca.crt ConfigMap)."""
        return kubectl("get", kinds, "-n", self.namespace, "-l", OURS, "-o", "name").split()


@pytest.fixture(scope="module")
def stack(kubeconfig: str, process_logs: Path) -> Iterator[Stack]:
    namespace = f"icee-cleanup-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", namespace)
    s = Stack(namespace, process_logs)
    try:
        yield s
    finally:
        s.api.process.stop()
        s.operator.stop()
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@contextlib.asynccontextmanager
async def started(stack: Stack, code: str) -> AsyncIterator[LiveSession]:
    """A session whose program is running and has printed 'ready'."""
    sid = await stack.api.create(code)
    async with stack.api.connect(sid) as session:
        await session.until_stdout("ready", within=60)
        yield session


async def finishes_by_itself(stack: Stack) -> str:
    async with stack.api.live("print('done')") as s:
        final = (await s.finish()).final
    assert (final["state"], final["exitCode"]) == ("finished", 0), final
    return s.id


async def answered(stack: Stack) -> str:
    async with started(stack, WAIT_FOR_INPUT) as s:
        await s.input("hi\n")
        final = (await s.finish()).final
    assert final["state"] == "finished", final
    assert "HI" in s.transcript.stdout
    return s.id


async def terminated_by_client(stack: Stack) -> str:
    async with started(stack, WAIT_FOR_INPUT) as s:
        await s.send({"type": "terminate"})
        final = (await s.finish()).final
    assert (final["state"], final["reason"]) == ("terminated", "UserTerminated"), final
    return s.id


async def deleted_over_http(stack: Stack) -> str:
    async with started(stack, WAIT_FOR_INPUT) as s:
        async with stack.api.http() as http:
            assert (await http.delete(f"/session/{s.id}")).status_code == 202
        final = (await s.finish()).final
    assert final["state"] == "terminated", final
    return s.id


async def client_dropped(stack: Stack) -> str:
    sid = await stack.api.create(WAIT_FOR_INPUT)
    ws = await connect(f"{stack.api.ws_url}/ws/session/{sid}")
    session = LiveSession(sid, ws)
    await session.until_stdout("ready", within=60)
    # Gone without a close handshake, as when a browser tab is killed.
    ws.transport.abort()
    final = await stack.api.wait_ended(sid, within=60)
    assert final["reason"] == "ClientGone", final
    return sid


async def over_time(stack: Stack) -> str:
    async with stack.api.live(
        "while True: pass", timeouts={"executionSeconds": 3, "idleSeconds": 30}
    ) as s:
        final = (await s.finish()).final
    assert (final["state"], final["reason"]) == ("terminated", "TimeLimitExceeded"), final
    return s.id


async def across_operator_restart(stack: Stack) -> str:
    async with started(stack, WAIT_FOR_INPUT) as s:
        await asyncio.to_thread(stack.restart_operator)
        await s.input("after restart\n")
        final = (await s.finish(within=90)).final
    assert (final["state"], final["exitCode"]) == ("finished", 0), final
    assert "AFTER RESTART" in s.transcript.stdout
    return s.id


async def test_twenty_sessions_leave_nothing_behind(stack: Stack) -> None:
    kinds = [
        finishes_by_itself, answered, terminated_by_client, deleted_over_http,
        client_dropped, over_time,
    ]  # fmt: skip
    sessions = [kinds[i % len(kinds)] for i in range(19)]
    # Five at a time: a busy but not overloaded 2-core node.
    ids: list[str] = []
    for batch in range(0, len(sessions), 5):
        ids += await asyncio.gather(*(run(stack) for run in sessions[batch : batch + 5]))
    ids.append(await across_operator_restart(stack))
    assert len(set(ids)) == 20

    # Pods and ConfigMaps go as soon as a session ends; CodeSessions after retention.
    for kinds, within in (("pods,configmaps", 60), ("codesessions", RETENTION_SECONDS + 60)):
        await asyncio.to_thread(
            kubectl, "wait", "--for=delete", kinds, "-l", OURS, "-n", stack.namespace,
            f"--timeout={within}s", timeout=within + 10,
        )  # fmt: skip
        assert stack.left(kinds) == [], f"{kinds} left behind"
