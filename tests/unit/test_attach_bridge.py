"""The bridge's stream-side rules, with in-memory client and attach ends.

The real attach stream and Kubernetes are exercised by tests/integration; here
only the bridge's own decisions: relaying, limits, idle, termination, bad input.
"""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from icee_api.attach import AttachClosed
from icee_api.bridge import Bridge, BridgeEnd, ClientGone, StreamLimits
from icee_api.channel import Channel, Frame
from icee_api.session import Session

_END = object()


class FakeClient:
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.gone = False

    async def send(self, message: dict[str, Any]) -> None:
        if self.gone:
            raise ClientGone
        self.sent.append(message)

    async def receive(self) -> str | bytes | None:
        return await self.inbox.get()

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["type"] == kind]


class FakeAttach:
    def __init__(self, v5: bool = True) -> None:
        self.outbox: asyncio.Queue[object] = asyncio.Queue()
        self.stdin: list[bytes] = []
        self.stdin_closed = False
        self.closed = False
        self._v5 = v5

    @property
    def can_close_stdin(self) -> bool:
        return self._v5

    async def send_stdin(self, data: bytes) -> None:
        if self.closed:
            raise AttachClosed("closed")
        self.stdin.append(data)

    async def close_stdin(self) -> None:
        self.stdin_closed = True

    def emit(self, channel: Channel, data: bytes) -> None:
        self.outbox.put_nowait(Frame(channel, data))

    def end(self) -> None:
        self.outbox.put_nowait(_END)

    async def frames(self) -> AsyncIterator[Frame]:
        while (item := await self.outbox.get()) is not _END:
            assert isinstance(item, Frame)
            yield item


class Harness:
    def __init__(self, **limits: Any) -> None:
        defaults: dict[str, Any] = {
            "output_bytes": 1 << 20,
            "stdin_bytes": 1 << 20,
            "idle_seconds": 30.0,
            "termination_timeout": 5.0,
        }
        self.session = Session("s")
        self.session.start()
        self.client = FakeClient()
        self.attach = FakeAttach(v5=limits.pop("v5", True))
        self.terminations: list[tuple[str, str]] = []
        self.bridge = Bridge(
            self.session,
            self.client,
            self.attach,
            StreamLimits(**(defaults | limits)),
            self._terminate,
        )

    async def _terminate(self, reason: str, message: str) -> None:
        self.terminations.append((reason, message))
        self.attach.end()  # the operator deletes the pod: attach closes

    def start(self) -> asyncio.Task[BridgeEnd]:
        return asyncio.create_task(self.bridge.run())

    async def settle(self) -> None:
        for _ in range(20):
            await asyncio.sleep(0)


async def test_output_is_relayed_by_stream_and_program_end_ends_the_bridge() -> None:
    h = Harness()
    run = h.start()
    h.attach.emit(Channel.STDOUT, b"Hello ")
    h.attach.emit(Channel.STDERR, b"warn\n")
    h.attach.emit(Channel.STDOUT, b"World\n")
    h.attach.emit(Channel.STDOUT, b"")  # empty frames carry nothing
    h.attach.end()
    assert await run is BridgeEnd.PROGRAM_ENDED
    assert h.client.sent == [
        {"type": "stdout", "data": "Hello "},
        {"type": "stderr", "data": "warn\n"},
        {"type": "stdout", "data": "World\n"},
    ]


async def test_utf8_split_across_frames() -> None:
    h = Harness()
    run = h.start()
    data = "→é".encode()
    for i in range(len(data)):
        h.attach.emit(Channel.STDOUT, data[i : i + 1])
    h.attach.end()
    await run
    assert "".join(m["data"] for m in h.client.of_type("stdout")) == "→é"


async def test_input_and_eof_reach_stdin() -> None:
    h = Harness()
    run = h.start()
    h.client.inbox.put_nowait('{"type": "input", "data": "Ada\\n"}')
    h.client.inbox.put_nowait('{"type": "eof"}')
    await h.settle()
    assert h.attach.stdin == [b"Ada\n"]
    assert h.attach.stdin_closed
    h.client.inbox.put_nowait('{"type": "input", "data": "late"}')
    await h.settle()
    assert h.client.of_type("error")[-1]["message"] == "stdin is already closed"
    h.attach.end()
    await run


async def test_eof_without_v5_is_an_error_not_a_crash() -> None:
    h = Harness(v5=False)
    run = h.start()
    h.client.inbox.put_nowait('{"type": "eof"}')
    await h.settle()
    assert "v4" in h.client.of_type("error")[0]["message"]
    assert not h.attach.stdin_closed
    h.attach.end()
    await run


async def test_output_limit_cuts_at_the_cap_and_asks_the_operator() -> None:
    h = Harness(output_bytes=10)
    run = h.start()
    h.attach.emit(Channel.STDOUT, b"12345678")
    h.attach.emit(Channel.STDERR, b"abcdef")
    h.attach.emit(Channel.STDOUT, b"dropped")
    assert await run is BridgeEnd.PROGRAM_ENDED
    outputs = [m["data"] for m in h.client.sent if m["type"] in ("stdout", "stderr")]
    assert outputs == ["12345678", "ab"]
    assert [r for r, _ in h.terminations] == ["OutputLimitExceeded"]
    assert "output limit" in h.client.of_type("error")[0]["message"]


async def test_stdin_limit_refuses_the_message_and_ends_the_session() -> None:
    h = Harness(stdin_bytes=5)
    run = h.start()
    h.client.inbox.put_nowait('{"type": "input", "data": "abc"}')
    h.client.inbox.put_nowait('{"type": "input", "data": "defg"}')
    assert await run is BridgeEnd.PROGRAM_ENDED
    assert h.attach.stdin == [b"abc"]
    assert [r for r, _ in h.terminations] == ["StdinLimitExceeded"]
    assert "stdin limit" in h.client.of_type("error")[0]["message"]


async def test_idle_timeout_when_nothing_moves_either_way() -> None:
    h = Harness(idle_seconds=0.2)
    run = h.start()
    assert await asyncio.wait_for(run, 2) is BridgeEnd.PROGRAM_ENDED
    assert [r for r, _ in h.terminations] == ["IdleTimeout"]
    assert "idle timeout" in h.client.of_type("error")[0]["message"]


async def test_io_keeps_the_session_from_going_idle() -> None:
    h = Harness(idle_seconds=0.3)
    run = h.start()
    for _ in range(5):
        await asyncio.sleep(0.1)
        h.attach.emit(Channel.STDOUT, b".")
    assert h.terminations == []
    h.attach.end()
    assert await run is BridgeEnd.PROGRAM_ENDED


async def test_terminate_message_is_user_terminated_once() -> None:
    h = Harness()
    run = h.start()
    h.client.inbox.put_nowait('{"type": "terminate"}')
    h.client.inbox.put_nowait('{"type": "terminate"}')
    assert await run is BridgeEnd.PROGRAM_ENDED
    assert [r for r, _ in h.terminations] == ["UserTerminated"]
    assert h.client.of_type("error") == []


async def test_bad_messages_get_errors_and_the_stream_stays_usable() -> None:
    h = Harness()
    run = h.start()
    for raw in ["{oops", b"\x00binary", '{"type": "dance"}', '{"type": "input"}']:
        h.client.inbox.put_nowait(raw)
    h.client.inbox.put_nowait('{"type": "input", "data": "fine\\n"}')
    await h.settle()
    assert len(h.client.of_type("error")) == 4
    assert h.attach.stdin == [b"fine\n"]
    h.attach.end()
    await run


async def test_client_gone_ends_the_bridge() -> None:
    h = Harness()
    run = h.start()
    h.client.inbox.put_nowait(None)
    assert await run is BridgeEnd.CLIENT_GONE


async def test_stuck_when_the_pod_never_goes_away() -> None:
    h = Harness(termination_timeout=0.1)
    h.bridge._terminate = _noop  # the operator is not there
    run = h.start()
    h.client.inbox.put_nowait('{"type": "terminate"}')
    assert await asyncio.wait_for(run, 2) is BridgeEnd.STUCK


async def _noop(reason: str, message: str) -> None:
    return None


@pytest.mark.parametrize("reason", ["ServerShutdown", "UserTerminated"])
async def test_external_termination_goes_through_the_bridge(reason: str) -> None:
    h = Harness()
    run = h.start()
    await h.bridge.request_termination(reason, "from outside")
    await h.bridge.request_termination("IdleTimeout", "second")
    assert await run is BridgeEnd.PROGRAM_ENDED
    assert h.terminations == [(reason, "from outside")]
