"""One client WebSocket for one session, from ``pending`` to the final state.

pending:  watch the pod ``run-<id>`` until its container runs (and the CodeSession,
          in case the session ends before it ever starts);
running:  open attach, send the runner its request (files, commands, terminal;
          nothing runs before that), bridge;
final:    the runner's final report when it is the answer (the program ended by
          itself), else the operator's final status on the CodeSession.
A container that already ended when the client comes is replayed from its log
(the runner's frames: stdout and stderr stay apart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from icee_core import runner_protocol as rp
from icee_core.languages import LanguageRegistry
from icee_core.models import CodeSessionSpec, Limits, Reason, Timeouts
from icee_kube.attach import AttachBuffers, AttachClosed, AttachError, open_attach
from icee_kube.client import KubeError
from pydantic import ValidationError

from icee_api.metrics import Metrics
from icee_api.session import messages
from icee_api.session.bridge import Bridge, BridgeEnd, ClientGone, ClientLink, StreamLimits
from icee_api.session.cluster import Cluster
from icee_api.session.decoding import StreamDecoder
from icee_api.session.limits import ByteBudget
from icee_api.session.live import LiveSessions
from icee_api.session.messages import CloseCode, MessageError, Terminate, parse_client_message
from icee_api.session.run_request import build_request
from icee_api.session.start_clock import StartClock
from icee_api.session.state import Outcome, Session, State, outcome_of, status_of
from icee_api.session.termination import Termination
from icee_api.session.watches import Watches
from icee_api.start_gate import StartGate

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# After the attach broke off: how long the pod may take to show that the program
# ended (its kubelet reports a container's end within a relist, about a second,
# more under load).
STREAM_LOSS_GRACE_SECONDS = 10.0

# An attach refused while the pod says the program runs (its kubelet restarting):
# tried again every ATTACH_RETRY_SECONDS, this many times.
ATTACH_RETRIES = 10
ATTACH_RETRY_SECONDS = 2.0


class StartNotRecorded(KubeError):
    """spec.start could not be written: the session must not start (nothing was sent)."""


@dataclass(frozen=True, slots=True)
class ColdStart:
    """A lazy start without a warm pod: the operator creates one once ``record``
    wrote spec.start. With a ``gate``, that waits for a start slot first (in the
    client's turn, at most ``max_wait`` s); ``client`` is admission's client label."""

    record: Callable[[], Awaitable[None]]
    gate: StartGate | None = None
    client: str = ""
    max_wait: float = 60.0


# Client frames read (and kept for the program) while a session waits for a start
# slot: reading is how a disconnect is noticed; beyond this, reading pauses.
READ_AHEAD_FRAMES = 8


@dataclass(frozen=True, slots=True)
class StreamTimeouts:
    start: float
    final_status: float
    termination: float


@dataclass(frozen=True, slots=True)
class Opening:
    """What a stream needs from the CodeSession it serves (not the whole object)."""

    limits: Limits
    timeouts: Timeouts
    outcome: Outcome | None
    # The runner's request, encoded; None when the spec cannot run here (the
    # operator ends such a session as InvalidSpec).
    request: bytes | None = None
    tty: bool = False

    @classmethod
    def of(cls, obj: dict[str, Any], languages: LanguageRegistry) -> Opening:
        spec = obj.get("spec") or {}
        request, tty = None, False
        try:
            parsed = CodeSessionSpec.model_validate(spec)
            request = rp.request(build_request(parsed, languages.get(parsed.language)))
            tty = parsed.tty
        except (ValidationError, KeyError, ValueError) as exc:
            log.info("session spec cannot be run: %s", str(exc)[:200])
        return cls(
            limits=Limits.model_validate(spec.get("limits") or {}),
            timeouts=Timeouts.model_validate(spec.get("timeouts") or {}),
            outcome=outcome_of(status_of(obj)),
            request=request,
            tty=tty,
        )


@dataclass(frozen=True, slots=True)
class _Started:
    """The container is running (attach) or already terminated (replay its log).

    ``early``: known from the kubelet's Started event, before the pod status says so.
    """

    running: bool
    early: bool = False


class SessionStream:
    """Serves one client WebSocket; LiveSessions can end it through ``terminate``."""

    def __init__(
        self,
        session_id: str,
        client: ClientLink,
        cluster: Cluster,
        live: LiveSessions,
        termination: Termination,
        watches: Watches,
        metrics: Metrics,
        timeouts: StreamTimeouts,
        buffers: AttachBuffers,
        clock: StartClock | None = None,
    ) -> None:
        self.session = Session(session_id)
        self._clock = clock
        self._recording: asyncio.Future[None] | None = None
        self._client = _UntilFinal(client)
        self._cluster = cluster
        self._live = live
        self._termination = termination
        self._watches = watches
        self._metrics = metrics
        self._timeouts = timeouts
        self._buffers = buffers
        self._bridge: Bridge | None = None
        # The operator's final status once this stream has seen it: the CodeSession
        # (and so the informer's entry) may be gone by the time the stream finishes.
        self._seen_outcome: Outcome | None = None
        self._since = live.created_at(session_id) or time.monotonic()
        self._first_output = True

    @property
    def id(self) -> str:
        return self.session.id

    async def terminate(self, reason: str, message: str) -> None:
        """End the session (called by Termination.end); the first reason counts."""
        if self._bridge is not None:
            await self._bridge.request_termination(reason, message)
        elif not self.session.ended and self.session.request_termination(reason, message):
            await self._ask_operator(reason, message)

    async def shut_down(self, message: str) -> None:
        """The server stops before the session's final status came: say so ourselves."""
        if self._client.final_sent:
            return
        with contextlib.suppress(ClientGone):
            await self._finish(Outcome(State.TERMINATED, None, Reason.SERVER_SHUTDOWN, message))

    async def run(
        self,
        opening: Opening,
        warm: asyncio.Future[None] | None = None,
        cold: ColdStart | None = None,
    ) -> tuple[int, str]:
        """Stream the session; returns the close code and reason for the client.

        ``warm``: the session claimed a warm pod, ready in the api's cache when it was
        claimed, and this is the write of its ``spec.start``: the attach opens at once
        (the claim's own watch event is not awaited) and the request waits for the
        write (StartNotRecorded if it failed). ``cold``: the session starts now without
        a warm pod (through the start gate, if any).
        """
        self._recording = warm
        limits, outcome = opening.limits, opening.outcome
        try:
            if outcome is not None:
                await self._replay_log(limits.output_bytes)
                return await self._finish(outcome)
            await self._client.send(messages.state(State.PENDING))
            if cold is not None and not await self._start_cold(cold):
                # Never started: ended while it waited, or it waited too long.
                return await self._finish_from_status()
            started: _Started | Outcome | None
            if warm is not None:
                started = _Started(running=True, early=True)
            else:
                started = await self._reading_client(
                    self._wait_for_start(), "the client disconnected while its sandbox started"
                )
            self._mark("pod_running")
            if isinstance(started, Outcome):
                return await self._finish(started)
            if started is None:
                await self.terminate(
                    Reason.IDLE_TIMEOUT,
                    f"the session did not start within {self._timeouts.start:g} s",
                )
                await self._client.send(messages.error("the session did not start in time"))
                return await self._finish_from_status()
            if started.running and opening.request is None:
                await self._client.send(messages.error("the session's spec cannot be run"))
            elif started.running:
                assert opening.request is not None
                end = await self._attach_and_bridge(opening, started.early)
                if end is BridgeEnd.CLIENT_GONE:
                    return CloseCode.NORMAL, "client gone"
                if end is BridgeEnd.STUCK:
                    await self._client.send(
                        messages.error("the session did not end after it was asked to")
                    )
                    return CloseCode.INTERNAL_ERROR, "session did not end"
                if self.session.ended and self.session.outcome is not None:
                    return await self._finish(self.session.outcome)
            else:
                await self._replay_log(limits.output_bytes)
            return await self._finish_from_status()
        except ClientGone:
            await self._recorded()
            if not self.session.ended:
                await self.terminate(Reason.CLIENT_GONE, "the client disconnected")
            return CloseCode.NORMAL, "client gone"
        finally:
            if warm is not None and not warm.done():
                # Only when run() failed before its request: the write is left to end.
                with contextlib.suppress(Exception):
                    await warm

    async def _recorded(self) -> None:
        """Wait until the warm start's spec.start is written (StartNotRecorded if not)."""
        if self._recording is not None:
            await self._recording

    # -- pending -------------------------------------------------------------------

    async def _start_cold(self, cold: ColdStart) -> bool:
        """Write spec.start, in the client's turn at the start gate; False if the
        session did not start (it ended while waiting, or waited too long: then it
        is being ended StartFailed).

        Waiting, the client's frames are read ahead (kept for the program): a client
        that leaves is out of the queue at once (ClientGone), a terminate is asked
        for at once. spec.start is written only with a slot, so the operator's start
        timeout never counts the wait; its connect deadline spares a session whose
        client holds the stream claim (it waits here).
        """
        gate = cold.gate
        if gate is not None:
            joined = time.monotonic()
            ticket = gate.join(self.id, cold.client)
            try:
                granted = await self._queued(ticket, cold.max_wait)
            except BaseException:
                gate.leave(self.id)
                raise
            finally:
                self._metrics.start_gate_wait.observe(time.monotonic() - joined)
            if granted is None:
                gate.leave(self.id)
                message = (
                    f"no start slot within {cold.max_wait:g} s: the node is busy starting "
                    f"other sessions ({gate.waiting} waiting for {gate.slots} slots)"
                )
                await self.terminate(Reason.START_FAILED, message)
                await self._client.send(messages.error(message))
                return False
            if not granted:
                return False  # the session ended while it waited
            if self.session.termination is not None:
                gate.leave(self.id)  # asked to end while it waited: no sandbox for it
                return False
        await cold.record()
        return True

    async def _queued(self, ticket: asyncio.Future[bool], max_wait: float) -> bool | None:
        """Until the gate answers (True: a slot, False: the session ended) or
        ``max_wait`` s pass (None); ClientGone if the client leaves meanwhile."""
        if ticket.done():
            return ticket.result()
        try:
            async with asyncio.timeout(max_wait):
                return await self._reading_client(
                    ticket, "the client disconnected while the session waited for a start slot"
                )
        except TimeoutError:
            return None

    async def _reading_client(self, work: Awaitable[_T], gone: str) -> _T:
        """Await ``work`` while reading the client's frames ahead (kept for the
        program; a terminate is asked for at once): a client that leaves first ends
        the session ClientGone (``gone`` says when) and raises ClientGone. Without
        this nobody would notice a client leaving before its program runs.
        """
        task = asyncio.ensure_future(work)
        reader = asyncio.ensure_future(self._client.read_ahead(READ_AHEAD_FRAMES, self._stop))
        try:
            done, _ = await asyncio.wait({task, reader}, return_when=asyncio.FIRST_COMPLETED)
            if reader in done and not reader.result():
                await self.terminate(Reason.CLIENT_GONE, gone)
                raise ClientGone
            return await task
        finally:
            for pending in (task, reader):
                pending.cancel()
            await asyncio.gather(task, reader, return_exceptions=True)

    async def _stop(self) -> None:
        await self.terminate(Reason.USER_TERMINATED, "terminated by the client")

    async def _wait_for_start(self, events: bool = True) -> _Started | Outcome | None:
        """Until the container runs or ended, the session ended, or the start timeout.

        One wait on the shared feeds (pod status, CodeSession, and with ``events`` the
        kubelet's Started event), woken by any of them: no task, timer or poll per
        waiting session besides the timeout.
        """
        changed = asyncio.Event()
        w = self._watches
        existed = deleted = False
        with (
            w.pods.subscribe(self.id, changed) as pod,
            w.outcomes.subscribe(self.id, changed) as status,
            w.started.subscribe(self.id, changed if events else None) as event,
            contextlib.suppress(TimeoutError),
        ):
            async with asyncio.timeout(self._timeouts.start):
                while True:
                    await changed.wait()
                    changed.clear()
                    if status.value is not None:
                        return status.value
                    container = pod.value
                    if container is not None and container.kind == "terminated":
                        return _Started(running=False)
                    if container is not None and container.kind == "running":
                        return _Started(running=True)
                    if events and event.value:
                        return _Started(running=True, early=True)
                    if container is not None:
                        existed = True
                    elif existed:
                        deleted = True  # before it ran: the operator ended it
                        break
        if deleted:
            return await self._final_outcome(self._timeouts.final_status)
        return None

    # -- running -------------------------------------------------------------------

    async def _attach_and_bridge(
        self, opening: Opening, early: bool, retries: int = ATTACH_RETRIES
    ) -> BridgeEnd:
        try:
            return await self._bridge_through_attach(opening)
        except AttachError as exc:
            self._bridge = None
            if early:
                # Attached on the Started event (or to a warm pod the cache showed
                # ready) and the kubelet did not agree (yet): nothing reached the
                # program. Wait for the pod status instead, once the start is recorded
                # (the operator follows the claimed pod from then on).
                await self._recorded()
                log.info("early attach %s refused (%s); waiting for the pod status", self.id, exc)
                started = await self._wait_for_start(events=False)
                if isinstance(started, _Started) and started.running:
                    return await self._attach_and_bridge(opening, early=False)
            else:
                self._metrics.attach_failures.inc()
                log.info("attach %s failed: %s", self.id, exc)
                # The kubelet or the runtime that carries attach may be restarting
                # while the program waits for its request: try again while it runs.
                if retries > 0 and await self._still_running(ATTACH_RETRY_SECONDS):
                    return await self._attach_and_bridge(opening, False, retries - 1)
            # The container may have ended between the watch and attach: read its log.
            await self._replay_log(opening.limits.output_bytes)
            return BridgeEnd.PROGRAM_ENDED

    async def _bridge_through_attach(self, opening: Opening) -> BridgeEnd:
        limits, timeouts = opening.limits, opening.timeouts
        assert opening.request is not None
        target = self._cluster.attach_target(self.id)
        async with open_attach(target, self._buffers) as attach:
            self._mark("attached")
            await self._recorded()  # the session is the pod's before its program goes in
            try:
                await attach.send_stdin(opening.request)
            except AttachClosed as exc:  # the kubelet or runtime went away at once
                raise AttachError(f"attach closed before the request went out: {exc}") from exc
            self._mark("request_sent")
            if self.session.state is State.PENDING:
                self.session.start()
                self._metrics.session_start.observe(time.monotonic() - self._since)
                await self._client.send(messages.state(State.RUNNING))
            bridge = Bridge(
                self.session,
                self._client,
                attach,
                StreamLimits(
                    output_bytes=limits.output_bytes,
                    stdin_bytes=limits.stdin_bytes,
                    idle_seconds=timeouts.idle_seconds,
                    termination_timeout=self._timeouts.termination,
                ),
                self._ask_operator,
                self._count_output,
                tty=opening.tty,
                ended_elsewhere=self._ended_elsewhere,
                operator_ended=self._operator_ended,
                on_stage=lambda _stage: self._mark("stage_began"),
            )
            self._bridge = bridge
            end = await bridge.run()
            if end is BridgeEnd.CLIENT_GONE:
                await bridge.request_termination(Reason.CLIENT_GONE, "the client disconnected")
            elif bridge.outcome is not None and not self.session.ended:
                # The runner's final report: the program ended by itself. Passed on now;
                # the operator still writes the CodeSession's status from the pod.
                self.session.end(bridge.outcome)
            elif not bridge.heard_runner and bridge.protocol_error is None:
                # Attached to a container that had already ended (the pod status lags):
                # what it wrote is in its log.
                await self._replay_log(limits.output_bytes)
            elif end is BridgeEnd.PROGRAM_ENDED and bridge.broke_off:
                if await self._still_running(STREAM_LOSS_GRACE_SECONDS):
                    # The stream broke, the program did not end: no new attach can
                    # reach it (stdinOnce), so nobody could end it but its deadline.
                    await bridge.request_termination(
                        Reason.CLIENT_GONE,
                        "the stream to the sandbox broke (its node's kubelet or container"
                        " runtime went away); the program could no longer be reached",
                    )
                elif not bridge.output.exceeded:
                    # The attach ended before the runner's last frame and the program
                    # ended too: what it wrote after the break is in the container's
                    # log (the runner's frames), past what the attach relayed.
                    log.info(
                        "session %s: the attach ended before the runner's last frame;"
                        " the rest of the output comes from the log",
                        self.id,
                    )
                    await self._replay_log(
                        limits.output_bytes, skip=dict(bridge.relayed), budget=bridge.output
                    )
            return end

    async def _operator_ended(self) -> None:
        """Until the operator's status says something ended the session.

        Not a Finished status: the program ended by itself, and all it wrote comes
        through the attach stream, which ends right after.
        """
        with self._watches.outcomes.subscribe(self.id) as status:
            while True:
                outcome = await status.get()
                if outcome is not None:
                    self._seen_outcome = outcome
                if outcome is not None and outcome.state is State.TERMINATED:
                    return

    async def _still_running(self, grace: float) -> bool:
        """Whether the pod still shows the program running, and no final status came,
        ``grace`` s from now (False as soon as either says it ended: a container
        killed by a limit or a deletion leaves no final frame either)."""
        changed = asyncio.Event()
        w = self._watches
        with (
            w.pods.subscribe(self.id, changed) as pod,
            w.outcomes.subscribe(self.id, changed) as status,
        ):
            try:
                async with asyncio.timeout(grace):
                    while True:
                        await changed.wait()
                        changed.clear()
                        container = pod.value
                        if status.value is not None or self.session.termination is not None:
                            return False
                        if container is None or container.kind != "running" or container.deleting:
                            return False
            except TimeoutError:
                return True

    def _ended_elsewhere(self) -> bool:
        """The operator is ending the session: its status is final or the pod is going."""
        if self._watches.outcomes.get(self.id) is not None:
            return True
        pod = self._watches.pods.get(self.id)
        return pod is not None and (pod.deleting or pod.reason == "OOMKilled")

    def _count_output(self, stream: str, size: int) -> None:
        self._metrics.output_bytes.labels(stream).inc(size)
        if self._first_output:
            self._first_output = False
            self._metrics.first_output.observe(time.monotonic() - self._since)
            if self._clock is not None:
                self._clock.mark("first_output")
                self._clock.report()

    def _mark(self, name: str) -> None:
        if self._clock is not None:
            self._clock.mark(name)

    async def _ask_operator(self, reason: str, message: str) -> None:
        try:
            await self._termination.request(self.id, reason, message)
        except KubeError as exc:
            log.warning("session %s: cannot request %s: %s", self.id, reason, exc)

    # -- ended ---------------------------------------------------------------------

    async def _replay_log(
        self,
        output_bytes: int,
        skip: dict[str, int] | None = None,
        budget: ByteBudget | None = None,
    ) -> None:
        """Send what an already ended container wrote, from the runner's frames in its log.

        ``skip``: bytes of each stream's output already relayed (by a broken attach),
        left out; ``budget``: the output budget they were counted against.
        """
        budget = budget if budget is not None else ByteBudget(output_bytes)
        skipping = dict(skip or {})
        decoder = rp.Decoder(log=True)
        texts = {"stdout": StreamDecoder(), "stderr": StreamDecoder()}
        # Frames add a header per piece of output; the log may be larger than the output.
        limit = 2 * output_bytes + (64 << 10)
        try:
            async for chunk in self._cluster.read_log(self.id, limit):
                for event in decoder.feed(chunk):
                    if isinstance(event, rp.Output) and not budget.exceeded:
                        data = event.data
                        left_out = min(len(data), skipping.get(event.stream, 0))
                        if left_out:
                            skipping[event.stream] -= left_out
                            data = data[left_out:]
                            if not data:
                                continue
                        allowed = budget.take(len(data))
                        text = texts[event.stream].decode(data[:allowed])
                        if text:
                            await self._client.send(messages.output(event.stream, text))
                    elif isinstance(event, rp.Diagnostic):
                        log.info("session %s: %s", self.id, event.text[:300])
        except KubeError as exc:
            log.info("session %s: no log to replay: %s", self.id, exc)
            return
        except rp.RunnerProtocolError as exc:
            log.warning("session %s: log replay: %s", self.id, exc)
            await self._client.send(messages.error(f"the session's log could not be read: {exc}"))
        for stream, text_decoder in texts.items():
            tail = text_decoder.flush()
            if tail:
                await self._client.send(messages.output(stream, tail))
        if budget.exceeded:
            await self._client.send(messages.error("output truncated at the output limit"))

    async def _final_outcome(self, seconds: float) -> Outcome | None:
        if self._seen_outcome is not None:
            return self._seen_outcome
        with self._watches.outcomes.subscribe(self.id) as status, contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    outcome = await status.get()
                    if outcome is not None:
                        self._seen_outcome = outcome
                        return outcome
        return None

    async def _finish_from_status(self) -> tuple[int, str]:
        outcome = await self._final_outcome(self._timeouts.final_status)
        if outcome is None and not self.session.ended:
            # Once this socket closes nobody streams the session: it must not run on
            # unseen until its deadline.
            await self.terminate(
                Reason.CLIENT_GONE, "the api stopped waiting for the session's final status"
            )
            outcome = await self._final_outcome(self._timeouts.termination)
        if outcome is None:
            await self._client.send(
                messages.error(
                    "the session's final status did not arrive (is the operator running?)"
                )
            )
            return CloseCode.INTERNAL_ERROR, "no final status"
        return await self._finish(outcome)

    async def _finish(self, outcome: Outcome) -> tuple[int, str]:
        if self._client.final_sent:  # the server's shutdown already told the client
            return CloseCode.NORMAL, self.session.state.value
        if not self.session.ended:
            self.session.end(outcome)
        self._metrics.sessions_ended.labels(outcome.reason or "Unknown").inc()
        await self._client.send_final(messages.final_state(outcome))
        log.info("session %s: %s %s", self.id, outcome.state.value, outcome.reason or "")
        return CloseCode.NORMAL, outcome.state.value


class _UntilFinal:
    """The client link, closed to every message after the final state.

    The final state may come from the stream or from the server's shutdown: once
    one is sent, the other (and any late output) is not. Frames read ahead (while
    the session waited for its start) come first on ``receive``.
    """

    def __init__(self, client: ClientLink) -> None:
        self._client = client
        self.final_sent = False
        self._ahead: deque[str | bytes] = deque()
        self._left = False

    async def read_ahead(self, limit: int, on_terminate: Callable[[], Awaitable[None]]) -> bool:
        """Read and keep the client's frames until cancelled; False once the client
        left, True when ``limit`` frames are kept (reading then pauses). A terminate
        message is acted on at once instead of being kept."""
        while len(self._ahead) < limit:
            raw = await self._client.receive()
            if raw is None:
                self._left = True
                return False
            if isinstance(raw, str) and _is_terminate(raw):
                # Shielded: the wait may end (and cancel this) while the request is
                # being written; it must still reach the operator.
                await asyncio.shield(on_terminate())
                continue
            self._ahead.append(raw)
        return True

    async def send(self, message: dict[str, Any]) -> None:
        if self.final_sent:
            raise ClientGone
        await self._client.send(message)

    async def send_final(self, message: dict[str, Any]) -> None:
        if self.final_sent:
            raise ClientGone
        self.final_sent = True
        await self._client.send(message)

    async def receive(self) -> str | bytes | None:
        if self._ahead:
            return self._ahead.popleft()
        if self._left:
            return None
        return await self._client.receive()


def _is_terminate(raw: str) -> bool:
    try:
        return isinstance(parse_client_message(raw), Terminate)
    except MessageError:
        return False  # kept: the bridge answers it
