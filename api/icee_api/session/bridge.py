"""The live bridge between one client WebSocket and one attach stream.

Two pumps, pod -> client and client -> pod, plus a watchdog for the idle timeout
and a watch on the operator's status, run under ``asyncio.wait(FIRST_COMPLETED)``;
whichever ends first decides how the bridge ends and the others are cancelled.
Stream-side limits (output, stdin, idle) are checked here because only the stream
sees the bytes; when one trips the bridge asks the operator to end the session and
keeps draining the attach stream until the pod goes away or the operator's status
says the session ended, so the final status can follow.

The attach stream speaks the runner protocol (docs/runner.md): client messages
become I/E/S/Z frames, the runner's stdout frames become output, ``waiting`` /
``running`` states and, with its final ``q`` frame, the session's outcome, which
is passed on at once (:attr:`Bridge.outcome`) unless the api asked for the
session to end (then the operator's reason is the answer). The runner's stderr
(attach channel 2) is its diagnostics: logged, never shown as program output.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from icee_core import runner_protocol as rp
from icee_core.models import Reason
from icee_kube.attach import AttachClosed
from icee_kube.channel import Channel, ChannelProtocolError, Frame, parse_status

from icee_api.session import messages
from icee_api.session.decoding import StreamDecoder
from icee_api.session.limits import ByteBudget, IdleClock
from icee_api.session.messages import (
    Eof,
    Input,
    MessageError,
    Resize,
    SendSignal,
    Terminate,
    parse_client_message,
)
from icee_api.session.state import Outcome, Session, State

log = logging.getLogger(__name__)


class ClientGone(Exception):
    """The client's WebSocket is closed; nothing more can be sent to it."""


class ClientLink(Protocol):
    async def send(self, message: dict[str, Any]) -> None:
        """Send one JSON message; raise ClientGone if the client is gone."""

    async def receive(self) -> str | bytes | None:
        """The next frame, or None once the client disconnected."""


class AttachLink(Protocol):
    """The program side; sends raise AttachClosed once the attach connection is gone."""

    async def send_stdin(self, data: bytes) -> None: ...

    def frames(self) -> AsyncIterator[Frame]: ...


Terminator = Callable[[str, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class StreamLimits:
    output_bytes: int
    stdin_bytes: int
    idle_seconds: float
    termination_timeout: float
    # Once the operator's status says the session was ended (a deadline, a limit):
    # how long the program's last output may still come before the bridge ends.
    final_output_grace: float = 0.5


_SIGKILL = 9
# A runner diagnostic line is logged up to this many characters.
_DIAGNOSTIC_LOG_CHARS = 300


class BridgeEnd(Enum):
    PROGRAM_ENDED = "program ended"  # attach closed: the container exited or the pod went away
    ENDED_BY_OPERATOR = "ended by the operator"  # its status is final; the pod is going
    CLIENT_GONE = "client gone"
    STUCK = "termination not honoured"  # asked to end, but the pod stayed


class Bridge:
    def __init__(
        self,
        session: Session,
        client: ClientLink,
        attach: AttachLink,
        limits: StreamLimits,
        terminate: Terminator,
        on_output: Callable[[str, int], None] | None = None,
        *,
        tty: bool = False,
        ended_elsewhere: Callable[[], bool] | None = None,
        operator_ended: Callable[[], Awaitable[object]] | None = None,
        on_stage: Callable[[str], None] | None = None,
    ) -> None:
        self.session = session
        self._client = client
        self._attach = attach
        self._limits = limits
        self._terminate = terminate
        self._on_output = on_output
        self._on_stage = on_stage  # the runner's "stage began" frames (start timing)
        self.output = ByteBudget(limits.output_bytes)
        self.stdin = ByteBudget(limits.stdin_bytes)
        self.idle = IdleClock(limits.idle_seconds)
        self._ending = asyncio.Event()
        self._stdin_closed = False
        self._tty = tty
        # True when the operator is ending the session (its status is final or the pod
        # is being deleted): then its reason, not the runner's report, is the answer.
        self._ended_elsewhere = ended_elsewhere or (lambda: False)
        # Returns once the operator's status says the session was ended (not by the
        # program itself): the client is told then, not when the kubelet gets round
        # to stopping the container.
        self._operator_ended = operator_ended
        self._decoder = rp.Decoder()
        self._stages: dict[str, rp.StageEnded] = {}
        # The outcome the runner reported (its q frame), when it is the answer.
        self.outcome: Outcome | None = None
        # Set when the runner's stream broke the protocol (the operator's status decides).
        self.protocol_error: str | None = None
        # Whether the runner said anything: an attach to a container that had already
        # ended carries nothing (its output is in the log).
        self.heard_runner = False
        # Bytes of the program's output per stream received from the runner (before the
        # output cap): where a replay of the log picks up after a broken attach.
        self.relayed: Counter[str] = Counter()
        self._quit_seen = False

    async def run(self) -> BridgeEnd:
        tasks = {
            asyncio.create_task(self._pod_to_client(), name="pod->client"),
            asyncio.create_task(self._client_to_pod(), name="client->pod"),
            asyncio.create_task(self._watchdog(), name="watchdog"),
        }
        if self._operator_ended is not None:
            tasks.add(asyncio.create_task(self._ended_by_operator(), name="operator"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        # Several may finish in the same loop turn; the program ending wins (it has a status).
        ends = [t.result() for t in done]
        for end in BridgeEnd:
            if end in ends:
                return end
        raise AssertionError("unreachable")  # pragma: no cover

    @property
    def broke_off(self) -> bool:
        """The attach ended mid-session: the runner spoke, but sent no final frame.

        Either the runner was killed with its container (a limit, a deletion: the
        pod says so), or the stream itself broke (the kubelet or the container
        runtime that carried it went away) while the program runs on.
        """
        return self.heard_runner and not self._quit_seen and self.protocol_error is None

    async def request_termination(self, reason: str, message: str) -> None:
        """End the session for ``reason``; only the first reason is sent to the operator."""
        if self.session.ended or not self.session.request_termination(reason, message):
            return
        self._ending.set()
        await self._terminate(reason, message)

    async def _trip(self, reason: str, message: str) -> None:
        """A stream-side limit tripped: tell the client why, then end the session."""
        if self.session.termination is None:
            await self._client_send_quietly(messages.error(message))
        await self.request_termination(reason, message)

    async def _client_send_quietly(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(ClientGone):
            await self._client.send(message)

    async def _pod_to_client(self) -> BridgeEnd:
        decoders = {"stdout": StreamDecoder(), "stderr": StreamDecoder()}
        try:
            async for frame in self._attach.frames():
                if frame.channel is Channel.STDOUT:
                    self.heard_runner = self.heard_runner or bool(frame.data)
                    if await self._runner_output(frame.data, decoders):
                        break
                elif frame.channel is Channel.STDERR:
                    self._diagnostic(frame.data)
                elif frame.channel is Channel.ERROR:
                    status = parse_status(frame.data)
                    if not status.success:
                        log.info("attach %s: %s %s", self.session.id, status.reason, status.message)
            for stream, decoder in decoders.items():
                tail = decoder.flush()
                if tail and not self.output.exceeded:
                    await self._client.send(messages.output(stream, tail))
        except ClientGone:
            return BridgeEnd.CLIENT_GONE
        except ChannelProtocolError as exc:
            log.warning("attach %s: %s", self.session.id, exc)
        except rp.RunnerProtocolError as exc:
            # Untrusted (the runner runs as the session's uid): stop reading, say why,
            # and let the operator's status decide how the session ended.
            self.protocol_error = str(exc)
            log.warning("session %s: runner protocol error: %s", self.session.id, exc)
            await self._client_send_quietly(
                messages.error(f"the sandbox's output stream is broken ({exc}); ending it")
            )
        return BridgeEnd.PROGRAM_ENDED

    async def _runner_output(self, data: bytes, decoders: dict[str, StreamDecoder]) -> bool:
        """Pass one attach frame's runner events on; True after the final ``q`` frame."""
        for event in self._decoder.feed(data):
            if isinstance(event, rp.Output):
                self.relayed[event.stream] += len(event.data)
                await self._relay_output(event.stream, event.data, decoders[event.stream])
            elif isinstance(event, rp.Waiting):
                if self.session.state is State.RUNNING:
                    self.session.wait()
                    await self._client.send(messages.state(State.WAITING))
            elif isinstance(event, rp.Running):
                if self.session.state is State.WAITING:
                    self.session.resume()
                    await self._client.send(messages.state(State.RUNNING))
            elif isinstance(event, rp.StageBegan):
                if self._on_stage is not None:
                    self._on_stage(event.stage.value)
            elif isinstance(event, rp.StageEnded):
                self._stages[event.stage.value] = event
            elif isinstance(event, rp.Quit):
                self._quit_seen = True
                self.outcome = self._runner_outcome(event.result)
                return True
        return False

    def _runner_outcome(self, result: rp.Result) -> Outcome | None:
        """The final state the runner's report implies; None when the operator must say.

        A termination the api asked for wins (the runner then only saw a signal), so
        does one the operator is carrying out (an execution deadline: the pod is
        deleted, the runner forwards SIGTERM); a SIGKILL may be the memory limit's
        (OOM killer) and a setup failure is the operator's to name (StartFailed).
        """
        if self.session.termination is not None or self.session.ended:
            return None
        if self._ended_elsewhere():
            return None
        usage = {stage: ended.usage() for stage, ended in self._stages.items()}
        run = self._stages.get(rp.Stage.RUN.value)
        compile_ = self._stages.get(rp.Stage.COMPILE.value)
        if result is rp.Result.COMPLETED and run is not None and run.exit_code == 0:
            return Outcome(State.FINISHED, 0, Reason.COMPLETED, usage=usage)
        if result in (rp.Result.ERROR, rp.Result.SIGNALED) and run is not None:
            if run.signal == _SIGKILL:
                return None
            code = run.exit_code if run.signal == 0 else 128 + run.signal
            return Outcome(State.FINISHED, code, Reason.ERROR, usage=usage)
        if result is rp.Result.COMPILE_ERROR and compile_ is not None and run is None:
            code = compile_.exit_code if compile_.signal == 0 else 128 + compile_.signal
            return Outcome(
                State.FINISHED,
                code,
                Reason.COMPILATION_ERROR,
                "the program did not compile",
                usage=usage,
            )
        return None

    def _diagnostic(self, data: bytes) -> None:
        text = data.decode("utf-8", "replace").rstrip("\n")
        log.info("session %s: %s", self.session.id, text[:_DIAGNOSTIC_LOG_CHARS])

    async def _relay_output(self, stream: str, data: bytes, decoder: StreamDecoder) -> None:
        if not data or self.output.exceeded:
            return  # after the cap: drain and drop until the operator ends the pod
        self.idle.touch()
        allowed = self.output.take(len(data))
        text = decoder.decode(data[:allowed])
        if text:
            await self._client.send(messages.output(stream, text))
            if self._on_output is not None:
                self._on_output(stream, allowed)
        if self.output.exceeded:
            await self._trip(
                Reason.OUTPUT_LIMIT_EXCEEDED,
                f"output limit exceeded: more than {self.output.limit} bytes of stdout+stderr",
            )

    async def _client_to_pod(self) -> BridgeEnd:
        while True:
            raw = await self._client.receive()
            if raw is None:
                return BridgeEnd.CLIENT_GONE
            try:
                await self._handle_client_frame(raw)
            except ClientGone:
                return BridgeEnd.CLIENT_GONE
            except AttachClosed:
                # The program side is gone; the pod -> client pump ends the bridge.
                await self._client_send_quietly(messages.error("the program is no longer running"))

    async def _handle_client_frame(self, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            await self._client.send(
                messages.error("binary frames are not supported; send JSON text")
            )
            return
        try:
            msg = parse_client_message(raw)
        except MessageError as exc:
            await self._client.send(messages.error(str(exc)))
            return
        if isinstance(msg, Terminate):
            await self.request_termination(Reason.USER_TERMINATED, "terminated by the client")
        elif self.session.termination is not None:
            await self._client.send(messages.error("the session is ending; input ignored"))
        elif isinstance(msg, SendSignal):
            self.idle.touch()
            await self._attach.send_stdin(rp.signal(msg.signal))
        elif isinstance(msg, Resize):
            if not self._tty:
                await self._client.send(messages.error("resize needs a tty session"))
                return
            await self._attach.send_stdin(rp.resize(rp.TerminalSize(msg.cols, msg.rows)))
        elif self._stdin_closed:
            await self._client.send(messages.error("stdin is already closed"))
        elif isinstance(msg, Input):
            await self._send_input(msg.data.encode("utf-8"))
        elif isinstance(msg, Eof):
            # A terminal reads on after Ctrl-D (the runner sends VEOF); a pipe is closed.
            self._stdin_closed = not self._tty
            self.idle.touch()
            await self._attach.send_stdin(rp.eof())

    async def _send_input(self, data: bytes) -> None:
        if not data:
            return
        if not self.stdin.fits(len(data)):
            await self._trip(
                Reason.STDIN_LIMIT_EXCEEDED,
                f"stdin limit exceeded: more than {self.stdin.limit} bytes of input",
            )
            return
        self.idle.touch()
        for frame in rp.input_frames(data):
            await self._attach.send_stdin(frame)

    async def _ended_by_operator(self) -> BridgeEnd:
        assert self._operator_ended is not None
        await self._operator_ended()
        log.info("session %s: ended by the operator; its pod is going", self.session.id)
        # The pod is being deleted: what the program wrote before is in flight and
        # usually arrives with the runner's last frame (which ends the bridge first);
        # on a loaded node the kubelet may take seconds to stop the container.
        await asyncio.sleep(self._limits.final_output_grace)
        return BridgeEnd.ENDED_BY_OPERATOR

    async def _watchdog(self) -> BridgeEnd:
        # Sleeps until the earliest moment the session could be idle; no polling.
        while not self._ending.is_set():
            remaining = self.idle.remaining()
            if remaining <= 0:
                seconds = f"{self._limits.idle_seconds:g}"
                await self._trip(
                    Reason.IDLE_TIMEOUT, f"idle timeout: no input or output for {seconds} s"
                )
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ending.wait(), remaining)
        await asyncio.sleep(self._limits.termination_timeout)
        return BridgeEnd.STUCK
