"""The bridge's stream-side rules, with in-memory client and attach ends.

The real attach stream, the runner and Kubernetes are exercised by
tests/integration; here only the bridge's own decisions: the runner protocol both
ways, relaying, limits, idle, termination, bad input.
"""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from icee_api.session.bridge import Bridge, BridgeEnd, ClientGone, StreamLimits
from icee_api.session.state import Session, State
from icee_core import runner_protocol as rp
from icee_kube.attach import AttachClosed
from icee_kube.channel import Channel, Frame

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


def x_frame(stage: str, exit_code: int, signal: int = 0) -> bytes:
    payload = f"stage={stage} exit={exit_code} signal={signal} cpu_ms=5 mem_bytes=7 wall_ms=9"
    return rp.frame("x", payload.encode())


USAGE = {"exitCode": 0, "signal": 0, "cpuMillis": 5, "memoryBytes": 7, "wallMillis": 9}


class FakeAttach:
    """The attach stream with a runner behind it: frames on stdout, diagnostics on stderr."""

    def __init__(self) -> None:
        self.outbox: asyncio.Queue[object] = asyncio.Queue()
        self.stdin: list[bytes] = []
        self.closed = False

    async def send_stdin(self, data: bytes) -> None:
        if self.closed:
            raise AttachClosed("closed")
        self.stdin.append(data)

    def emit(self, channel: Channel, data: bytes) -> None:
        self.outbox.put_nowait(Frame(channel, data))

    def out(self, data: bytes, kind: str = "o") -> None:
        self.emit(Channel.STDOUT, rp.frame(kind, data))

    def event(self, kind: str, payload: str = "") -> None:
        self.emit(Channel.STDOUT, rp.frame(kind, payload.encode()))

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
        tty = limits.pop("tty", False)
        self.attach = FakeAttach()
        self.terminations: list[tuple[str, str]] = []
        # Set when the operator's status says the session was ended.
        self.operator_ended = asyncio.Event()
        self.bridge = Bridge(
            self.session,
            self.client,
            self.attach,
            StreamLimits(**(defaults | limits)),
            self._terminate,
            tty=tty,
            operator_ended=self.operator_ended.wait,
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
    h.attach.out(b"Hello ")
    h.attach.out(b"warn\n", "e")
    h.attach.out(b"World\n")
    h.attach.out(b"")  # empty frames carry nothing
    h.attach.end()
    assert await run is BridgeEnd.PROGRAM_ENDED
    assert h.client.sent == [
        {"type": "stdout", "data": "Hello "},
        {"type": "stderr", "data": "warn\n"},
        {"type": "stdout", "data": "World\n"},
    ]
    assert h.bridge.outcome is None  # no q frame: the operator's status decides
    assert h.bridge.heard_runner


async def test_an_attach_that_carries_nothing_did_not_hear_the_runner() -> None:
    # Attached to a container that had already ended: the stream replays its log.
    h = Harness()
    run = h.start()
    h.attach.end()
    await run
    assert not h.bridge.heard_runner


async def test_an_attach_that_ends_without_the_final_frame_broke_off() -> None:
    # The runner spoke, then the stream ended with no q frame: the runner was killed
    # with its container, or the stream broke (kubelet, runtime): the stream decides.
    h = Harness()
    run = h.start()
    h.attach.out(b"ready\n")
    h.attach.end()
    assert await run is BridgeEnd.PROGRAM_ENDED
    assert h.bridge.broke_off


async def test_an_attach_that_ends_after_the_final_frame_did_not_break_off() -> None:
    h = Harness()
    run = h.start()
    h.attach.out(b"ready\n")
    h.attach.emit(Channel.STDOUT, x_frame("run", 0) + rp.frame("q", b"result=completed"))
    h.attach.end()
    await run
    assert not h.bridge.broke_off


async def test_frames_split_anywhere_across_attach_chunks() -> None:
    h = Harness()
    run = h.start()
    data = rp.frame("o", "→é".encode()) + rp.frame("e", b"!") + rp.frame("w")
    for i in range(len(data)):
        h.attach.emit(Channel.STDOUT, data[i : i + 1])
    h.attach.end()
    await run
    assert "".join(m["data"] for m in h.client.of_type("stdout")) == "→é"
    assert h.client.of_type("stderr") == [{"type": "stderr", "data": "!"}]
    assert h.client.of_type("state") == [{"type": "state", "state": "waiting"}]


async def test_runner_diagnostics_are_logged_never_shown() -> None:
    h = Harness()
    run = h.start()
    h.attach.emit(Channel.STDERR, b"icee-runner: something odd\n")
    h.attach.end()
    await run
    assert h.client.sent == []


async def test_waiting_and_running_follow_the_runner() -> None:
    h = Harness()
    run = h.start()
    h.attach.out(b"Name? ")
    h.attach.event("w")
    await h.settle()
    assert h.session.state is State.WAITING
    h.client.inbox.put_nowait('{"type": "input", "data": "Ada\\n"}')
    h.attach.event("r")
    h.attach.event("r")  # a second r while running is no news
    await h.settle()
    assert h.session.state is State.RUNNING
    h.attach.end()
    await run
    assert [m["state"] for m in h.client.of_type("state")] == ["waiting", "running"]


async def test_final_report_is_the_outcome_at_once() -> None:
    h = Harness()
    run = h.start()
    h.attach.event("b", "stage=run")
    h.attach.emit(Channel.STDOUT, x_frame("run", 3) + rp.frame("q", b"result=error"))
    # No attach end: the q frame alone ends the bridge.
    assert await asyncio.wait_for(run, 2) is BridgeEnd.PROGRAM_ENDED
    outcome = h.bridge.outcome
    assert outcome is not None
    assert (outcome.state, outcome.exit_code, outcome.reason) == (State.FINISHED, 3, "Error")
    assert outcome.usage == {"run": USAGE | {"exitCode": 3}}


async def test_completed_and_compile_error_outcomes() -> None:
    h = Harness()
    run = h.start()
    h.attach.emit(Channel.STDOUT, x_frame("compile", 0) + x_frame("run", 0))
    h.attach.event("q", "result=completed")
    await run
    assert h.bridge.outcome is not None
    assert (h.bridge.outcome.exit_code, h.bridge.outcome.reason) == (0, "Completed")
    assert h.bridge.outcome.usage == {"compile": USAGE, "run": USAGE}

    h = Harness()
    run = h.start()
    h.attach.out(b"main.cpp:1: error\n", "e")
    h.attach.emit(Channel.STDOUT, x_frame("compile", 1))
    h.attach.event("q", "result=compile-error")
    await run
    assert h.bridge.outcome is not None
    assert (h.bridge.outcome.exit_code, h.bridge.outcome.reason) == (1, "CompilationError")


async def test_killed_program_reports_128_plus_signal() -> None:
    h = Harness()
    run = h.start()
    h.attach.emit(Channel.STDOUT, x_frame("run", -1, signal=2))
    h.attach.event("q", "result=signaled")
    await run
    assert h.bridge.outcome is not None
    assert (h.bridge.outcome.exit_code, h.bridge.outcome.reason) == (130, "Error")


async def test_a_requested_termination_wins_over_the_runner_report() -> None:
    h = Harness()
    h.bridge._terminate = _noop  # the pod stays a moment
    run = h.start()
    h.client.inbox.put_nowait('{"type": "terminate"}')
    await h.settle()
    h.attach.emit(Channel.STDOUT, x_frame("run", -1, signal=15))
    h.attach.event("q", "result=signaled")
    assert await run is BridgeEnd.PROGRAM_ENDED
    assert h.bridge.outcome is None  # the operator will say UserTerminated


async def test_an_operator_ending_the_session_wins_over_the_runner_report() -> None:
    # The execution deadline: the operator deletes the pod, the runner forwards SIGTERM.
    h = Harness()
    h.bridge._ended_elsewhere = lambda: True
    run = h.start()
    h.attach.emit(Channel.STDOUT, x_frame("run", 143))
    h.attach.event("q", "result=error")
    await run
    assert h.bridge.outcome is None


@pytest.mark.parametrize(
    ("stage_end", "result"),
    [
        # Perhaps the OOM killer (under runc the runner survives it): MemoryLimitExceeded.
        pytest.param(x_frame("run", -1, signal=9), "signaled", id="sigkill"),
        # The deadline's SIGTERM reaches the runner before the status reaches our watch.
        pytest.param(x_frame("run", -1, signal=15), "stopped", id="stopped-from-outside"),
        pytest.param(None, "setup-failed", id="setup-failed"),
    ],
)
async def test_reports_the_operator_names_are_left_to_it(
    stage_end: bytes | None, result: str
) -> None:
    h = Harness()
    run = h.start()
    if stage_end is not None:
        h.attach.emit(Channel.STDOUT, stage_end)
    h.attach.event("q", f"result={result}")
    await run
    assert h.bridge.outcome is None


@pytest.mark.parametrize("garbage", [b"hello\n", b"o 5\nabcdefgh", b"x 9\nstage=run\n", b"Q 0\n\n"])
async def test_garbage_from_the_runner_ends_the_stream_with_an_error(garbage: bytes) -> None:
    h = Harness()
    run = h.start()
    h.attach.emit(Channel.STDOUT, garbage)
    assert await asyncio.wait_for(run, 2) is BridgeEnd.PROGRAM_ENDED
    assert h.bridge.protocol_error
    assert h.bridge.outcome is None
    assert "output stream is broken" in h.client.of_type("error")[0]["message"]


async def test_input_eof_signal_and_resize_become_frames() -> None:
    h = Harness(tty=True)
    run = h.start()
    h.client.inbox.put_nowait('{"type": "input", "data": "Ada\\n"}')
    h.client.inbox.put_nowait('{"type": "signal", "signal": "SIGINT"}')
    h.client.inbox.put_nowait('{"type": "resize", "cols": 100, "rows": 30}')
    h.client.inbox.put_nowait('{"type": "eof"}')
    h.client.inbox.put_nowait('{"type": "input", "data": "more"}')  # a terminal reads on
    await h.settle()
    assert h.attach.stdin == [
        b"I 4\nAda\n\n",
        b"S 6\nSIGINT\n",
        b"Z 16\ncols=100 rows=30\n",
        b"E 0\n\n",
        b"I 4\nmore\n",
    ]
    h.attach.end()
    await run


async def test_pipe_mode_closes_stdin_and_refuses_resize() -> None:
    h = Harness()
    run = h.start()
    h.client.inbox.put_nowait('{"type": "resize", "cols": 100, "rows": 30}')
    h.client.inbox.put_nowait('{"type": "eof"}')
    h.client.inbox.put_nowait('{"type": "input", "data": "late"}')
    await h.settle()
    assert h.attach.stdin == [b"E 0\n\n"]
    assert [m["message"] for m in h.client.of_type("error")] == [
        "resize needs a tty session",
        "stdin is already closed",
    ]
    h.attach.end()
    await run


async def test_output_limit_cuts_at_the_cap_and_asks_the_operator() -> None:
    h = Harness(output_bytes=10)
    run = h.start()
    h.attach.out(b"12345678")
    h.attach.out(b"abcdef", "e")
    h.attach.out(b"dropped")
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
    assert h.attach.stdin == [b"I 3\nabc\n"]
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
        h.attach.out(b".")
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
    bad = [
        "{oops",
        b"\x00binary",
        '{"type": "dance"}',
        '{"type": "input"}',
        '{"type": "signal", "signal": "SIGSTOP"}',
        '{"type": "resize", "cols": 0, "rows": 10}',
    ]
    for raw in bad:
        h.client.inbox.put_nowait(raw)
    h.client.inbox.put_nowait('{"type": "input", "data": "fine\\n"}')
    await h.settle()
    assert len(h.client.of_type("error")) == len(bad)
    assert h.attach.stdin == [b"I 5\nfine\n\n"]
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


async def test_the_operators_end_reaches_the_client_without_waiting_for_the_kubelet() -> None:
    # The execution deadline on a loaded node: the status is final, but the kubelet
    # has not stopped the container yet; the program's output so far is relayed.
    h = Harness(final_output_grace=0.05)
    run = h.start()
    h.attach.out(b"looping\n")
    await h.settle()
    h.operator_ended.set()
    assert await asyncio.wait_for(run, 2) is BridgeEnd.ENDED_BY_OPERATOR
    assert h.client.sent == [{"type": "stdout", "data": "looping\n"}]
    assert h.bridge.outcome is None  # the operator's status is the answer


async def test_the_runners_last_frame_within_the_grace_ends_the_bridge_as_usual() -> None:
    h = Harness(final_output_grace=5.0)
    run = h.start()
    h.operator_ended.set()
    h.attach.out(b"last words\n")
    h.attach.emit(Channel.STDOUT, x_frame("run", -1, signal=15))
    h.attach.event("q", "result=stopped")
    assert await asyncio.wait_for(run, 2) is BridgeEnd.PROGRAM_ENDED
    assert h.client.sent == [{"type": "stdout", "data": "last words\n"}]
    assert h.bridge.outcome is None


async def test_a_broken_attach_says_how_much_output_it_relayed_per_stream() -> None:
    # After a broken attach the stream replays the container's log past these counts
    # (what the runner relayed before the break is not sent twice).
    h = Harness(output_bytes=8)
    run = h.start()
    h.attach.out(b"12345")
    h.attach.out(b"err\n", "e")
    h.attach.out(b"6789")  # past the cap: counted, not sent
    h.attach.end()
    await run
    assert h.bridge.broke_off
    assert h.bridge.relayed == {"stdout": 9, "stderr": 4}
    assert h.bridge.output.exceeded
