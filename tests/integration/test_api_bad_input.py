"""Bad input gets a clear 4xx or WebSocket error, and disturbs nothing else."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

if TYPE_CHECKING:
    from conftest import ApiServer

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"language": "brainfuck", "code": "+"}, 422, "unknown language 'brainfuck'"),
        ({"language": "python", "code": ""}, 422, "code is empty"),
        ({"language": "python", "code": "x" * 70_000}, 413, "at most 65536"),
        ({"language": "python", "code": 42}, 422, "code"),
        ({"code": "print(1)"}, 422, "language"),
    ],
)
async def test_bad_post(api: ApiServer, body: Any, status: int, says: str) -> None:
    async with api.http() as http:
        r = await http.post("/session", json=body)
    assert r.status_code == status
    assert says in r.json()["detail"]


async def test_malformed_json(api: ApiServer) -> None:
    async with api.http() as http:
        r = await http.post("/session", content=b'{"language": "python", code',
                            headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 400
    assert "malformed JSON" in r.json()["detail"]


@pytest.mark.parametrize("sid", [str(uuid.uuid4()), "not-a-uuid"])
async def test_unknown_session(api: ApiServer, sid: str) -> None:
    async with api.http() as http:
        assert (await http.get(f"/session/{sid}")).status_code == 404
        assert (await http.delete(f"/session/{sid}")).status_code == 404
    async with connect(f"{api.ws_url}/ws/session/{sid}") as ws:
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 4404


async def test_bad_websocket_messages_get_errors_and_the_session_goes_on(api: ApiServer) -> None:
    async with api.live("print('got', input())") as s:
        await s.until_state("running")
        for bad in ["{nope", '{"type": "sing"}', '{"type": "input", "data": 1}', "[]"]:
            await s.send(bad)
            msg = await s.until(lambda m: m["type"] == "error")
            assert msg["message"]
        await s.ws.send(b"\x00binary")
        assert "binary" in (await s.until(lambda m: m["type"] == "error"))["message"]
        await s.input("fine\n")
        t = await s.finish()
    assert t.stdout == "got fine\n"
    assert t.final["reason"] == "Completed"


async def test_second_client_is_refused(api: ApiServer) -> None:
    async with api.live("print('one', input())") as first:
        await first.until_state("running")
        code, reason = await api.refused(first.id)
        assert code == 4409
        assert "already" in (reason or "")
        # The first client is undisturbed.
        await first.input("still here\n")
        t = await first.finish()
    assert t.stdout == "one still here\n"


async def test_bad_input_does_not_disturb_a_running_session(api: ApiServer) -> None:
    code = "import time\nprint('a')\ntime.sleep(2)\nprint('b')\n"

    async def noise() -> None:
        async with api.http() as http:
            for _ in range(5):
                await http.post("/session", content=b"garbage")
                await http.post("/session", json={"language": "nope", "code": "x"})
                await http.get("/session/zzz")
                await asyncio.sleep(0.1)

    t, _ = await asyncio.gather(api.run(code), noise())
    assert (t.stdout, t.final["reason"]) == ("a\nb\n", "Completed")


async def test_a_client_dropping_its_post_mid_body_is_no_server_error(api: ApiServer) -> None:
    """A POST whose client goes away mid-body is no 500 with a traceback in the api's
    log, and the api serves the next request."""
    before = api.process.log.read_text(errors="replace")
    _, writer = await asyncio.open_connection("127.0.0.1", api.port)
    writer.write(
        b"POST /session HTTP/1.1\r\nHost: icee\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"language": "python", "code": "pri'
    )
    await writer.drain()
    await asyncio.sleep(0.5)  # the api is reading the body now
    writer.close()
    await writer.wait_closed()
    async with api.http() as http:
        r = await http.post("/session", json={"language": "python", "code": "print(1)"})
        assert r.status_code == 201, r.text
        await http.delete(f"/session/{r.json()['sessionId']}")
    log = api.process.log.read_text(errors="replace")[len(before) :]
    assert "Traceback" not in log, log
    assert "ClientDisconnect" not in log, log
