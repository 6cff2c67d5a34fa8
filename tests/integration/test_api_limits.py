"""Every limit ends its own session with a stated reason (real cluster, real sandbox)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import ApiServer

pytestmark = pytest.mark.cluster


def _terminated(final: dict[str, object], reason: str) -> None:
    assert final["type"] == "state"
    assert (final["state"], final["reason"]) == ("terminated", reason), final


async def test_output_limit(api: ApiServer) -> None:
    code = "while True:\n    print('x' * 99)\n"
    t = await api.run(code, limits={"outputBytes": 10_000})
    _terminated(t.final, "OutputLimitExceeded")
    assert len((t.stdout + t.stderr).encode()) == 10_000  # exactly up to the cap
    assert any("output limit" in e for e in t.errors)


async def test_idle_timeout(api: ApiServer) -> None:
    started = time.monotonic()
    async with api.live("input()", timeouts={"idleSeconds": 2}) as s:
        t = await s.finish()
    _terminated(t.final, "IdleTimeout")
    assert any("idle timeout" in e for e in t.errors)
    assert time.monotonic() - started < 20


async def test_output_keeps_a_session_from_idling(api: ApiServer) -> None:
    code = "import time\nfor i in range(4):\n    print(i)\n    time.sleep(1)\n"
    t = await api.run(code, timeouts={"idleSeconds": 2})
    assert t.final["reason"] == "Completed"


async def test_stdin_limit(api: ApiServer) -> None:
    async with api.live("while True:\n    input()\n", limits={"stdinBytes": 10}) as s:
        await s.until_state("running")
        await s.input("12345\n")
        await s.input("123456789\n")
        t = await s.finish()
    _terminated(t.final, "StdinLimitExceeded")
    assert any("stdin limit" in e for e in t.errors)


async def test_execution_time_limit(api: ApiServer) -> None:
    # (A program that floods its output: the client gets everything it printed
    # before the final state, so when that arrives depends on how fast the client
    # reads. The deadline's timing is asserted with quiet loops in
    # test_language_sessions.py.)
    t = await api.run(
        "while True:\n    print('.', end='', flush=True)\n", timeouts={"executionSeconds": 3}
    )
    _terminated(t.final, "TimeLimitExceeded")


async def test_memory_limit(api: ApiServer) -> None:
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(10 * 1024 * 1024))\n"
    t = await api.run(code)
    _terminated(t.final, "MemoryLimitExceeded")


async def test_terminate_message(api: ApiServer) -> None:
    async with api.live("input()") as s:
        await s.until_state("running")
        await s.send({"type": "terminate"})
        t = await s.finish()
    _terminated(t.final, "UserTerminated")
    assert t.errors == []


async def test_delete_ends_a_live_session(api: ApiServer) -> None:
    async with api.live("input()") as s:
        await s.until_state("running")
        async with api.http() as http:
            r = await http.delete(f"/session/{s.id}")
        assert r.status_code == 202
        t = await s.finish()
    _terminated(t.final, "UserTerminated")


async def test_dropped_client_ends_the_session_and_its_pod(api: ApiServer) -> None:
    async with api.live("input()") as s:
        await s.until_state("running")
        session_id = s.id
    # The WebSocket is closed: the session must end (ClientGone), the pod must go.
    body = await api.wait_ended(session_id)
    assert (body["state"], body["reason"]) == ("terminated", "ClientGone")
    await api.wait_pod_gone(session_id)


async def test_a_session_nobody_attaches_to_ends(api: ApiServer) -> None:
    session_id = await api.create("print(1)", timeouts={"idleSeconds": 2})
    body = await api.wait_ended(session_id)
    assert (body["state"], body["reason"]) == ("terminated", "ClientGone")


async def test_a_limit_ends_only_its_own_session(api: ApiServer) -> None:
    bomb = api.run("while True:\n    print('x' * 999)\n", limits={"outputBytes": 50_000})
    normal = api.run("import time\ntime.sleep(2)\nprint('fine')\n")
    bombed, fine = await asyncio.gather(bomb, normal)
    _terminated(bombed.final, "OutputLimitExceeded")
    assert (fine.stdout, fine.final["reason"]) == ("fine\n", "Completed")
