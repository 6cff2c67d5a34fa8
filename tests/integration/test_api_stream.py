"""Live streams through the real api, operator, attach and gVisor sandbox."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from icee_api.session.start_clock import MARKS, start_marks

if TYPE_CHECKING:
    from conftest import ApiServer

pytestmark = pytest.mark.cluster


async def test_hello_world_streams_then_finishes_with_exit_0(api: ApiServer) -> None:
    t = await api.run("print('Hello World')")
    assert t.stdout == "Hello World\n"
    assert t.states == ["pending", "running", "finished"]
    usage = t.final.pop("usage")
    assert t.final == {"type": "state", "state": "finished", "exitCode": 0, "reason": "Completed"}
    assert set(usage) == {"run"}
    assert usage["run"]["exitCode"] == 0
    assert t.close_code == 1000
    # Output came before the final state.
    assert t.messages.index(t.of("stdout")[0]) < t.messages.index(t.final)


async def test_two_input_lines_round_trip(api: ApiServer) -> None:
    code = "a = input('name? ')\nprint('hello', a)\nb = input()\nprint('then', b)\n"
    async with api.live(code) as s:
        await s.until_stdout("name? ")
        await s.input("Ada\n")
        await s.until_stdout("hello Ada\n")
        await s.input("Grace\n")
        t = await s.finish()
    assert t.stdout == "name? hello Ada\nthen Grace\n"
    assert t.final["exitCode"] == 0


async def test_10000_lines_printed_before_reading_all_arrive(api: ApiServer) -> None:
    code = "for i in range(10000):\n    print(i)\nx = input()\nprint('read', x)\n"
    async with api.live(code) as s:
        await s.until_stdout("9999\n", within=60)
        await s.input("done\n")
        t = await s.finish()
    assert t.stdout == "".join(f"{i}\n" for i in range(10000)) + "read done\n"
    assert t.final["reason"] == "Completed"


async def test_stderr_and_exit_code(api: ApiServer) -> None:
    t = await api.run("import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)")
    assert (t.stdout, t.stderr) == ("out\n", "err\n")
    t.final.pop("usage")
    assert t.final == {"type": "state", "state": "finished", "exitCode": 3, "reason": "Error"}


async def test_eof_closes_stdin(api: ApiServer) -> None:
    code = "import sys\ndata = sys.stdin.read()\nprint(len(data.splitlines()), 'lines')\n"
    async with api.live(code) as s:
        await s.until_state("running")
        await s.input("one\ntwo\n")
        await s.input("three\n")
        await s.send({"type": "eof"})
        t = await s.finish()
    assert t.stdout == "3 lines\n"
    assert t.final["exitCode"] == 0


async def test_unicode_survives_the_stream(api: ApiServer) -> None:
    code = "s = input()\nprint(s[::-1])\nprint('héllo → 世界 🎉' * 2000)\n"
    async with api.live(code) as s:
        await s.until_state("running")
        await s.input("añb🎉\n")
        t = await s.finish()
    first, second = t.stdout.split("\n")[:2]
    assert first == "🎉bña"
    assert second == "héllo → 世界 🎉" * 2000


async def test_sessions_run_side_by_side(api: ApiServer) -> None:
    results = await asyncio.gather(*(api.run(f"print({i} * {i})") for i in range(4)))
    assert [t.stdout for t in results] == [f"{i * i}\n" for i in range(4)]


async def test_get_session_reports_the_outcome(api: ApiServer) -> None:
    async with api.live("print(1)") as s:
        await s.finish()
    # The stream's final state comes from the runner at once; the operator's status
    # (what GET reads) follows when the kubelet has seen the exit.
    body = await api.wait_ended(s.id)
    assert body["state"] == "finished"
    assert (body["exitCode"], body["reason"]) == (0, "Completed")
    assert all(body[k] for k in ("createdAt", "startedAt", "finishedAt"))
    assert body["usage"]["run"]["exitCode"] == 0


async def test_metrics_count_sessions(api: ApiServer) -> None:
    await api.run("print(1)")
    async with api.http() as http:
        text = (await http.get("/metrics")).text
    assert 'icee_sessions_created_total{language="python"}' in text
    assert "icee_first_output_seconds_count" in text
    assert 'icee_sessions_ended_total{reason="Completed"}' in text
    # Every step of its (cold) start was clocked (icee_api.session.start_clock).
    assert start_marks(text, "cold") == set(MARKS)
