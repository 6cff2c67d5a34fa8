"""The sessions this api process is responsible for right now.

- one client per session: the first WebSocket claims it, later ones are refused;
- a session created here that no client attaches to within its idle timeout is
  ended (ClientGone): its program is held until attach, so nobody would ever see it;
- graceful shutdown: refuse new sessions, let attached ones finish within the grace
  period, then end the rest with ServerShutdown.

One api process, one table; running several api replicas would need the claim to
live in the cluster (a lease), which is later work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from icee_core.models import Reason

from icee_api.session.termination import StreamHandle

log = logging.getLogger(__name__)

# Ends a session (icee_api.session.termination.Termination.end): (id, reason, message).
Terminate = Callable[[str, str, str], Awaitable[object]]


class LiveSessions:
    def __init__(self, terminate: Terminate) -> None:
        self._terminate = terminate
        self._created: dict[str, float] = {}
        self._deadlines: dict[str, asyncio.TimerHandle] = {}
        self._streams: dict[str, StreamHandle] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._no_streams = asyncio.Event()
        self._no_streams.set()
        self.draining = False

    def __len__(self) -> int:
        return len(self._streams)

    def created(self, session_id: str, connect_timeout: float) -> None:
        """A session was created here; end it if no client attaches in time."""
        self._created[session_id] = time.monotonic()
        loop = asyncio.get_running_loop()
        self._deadlines[session_id] = loop.call_later(
            connect_timeout, self._no_client, session_id, connect_timeout
        )

    def created_at(self, session_id: str) -> float | None:
        return self._created.get(session_id)

    def claim(self, session_id: str, handle: StreamHandle) -> bool:
        if session_id in self._streams:
            return False
        self._streams[session_id] = handle
        self._no_streams.clear()
        timer = self._deadlines.pop(session_id, None)
        if timer is not None:
            timer.cancel()
        return True

    def release(self, session_id: str) -> None:
        self._streams.pop(session_id, None)
        self._created.pop(session_id, None)
        if not self._streams:
            self._no_streams.set()

    def stream(self, session_id: str) -> StreamHandle | None:
        """The stream serving the session here, if any."""
        return self._streams.get(session_id)

    async def drain(self, grace: float, settle: float) -> None:
        """Graceful shutdown: wait up to ``grace`` s, then ServerShutdown for the rest."""
        self.draining = True
        log.info("draining: %d attached session(s), grace %g s", len(self._streams), grace)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._no_streams.wait(), grace)
        message = "the server is shutting down"
        unattached = list(self._deadlines)
        for timer in self._deadlines.values():
            timer.cancel()
        self._deadlines.clear()
        ending = [*unattached, *self._streams]
        pending = [self._terminate(sid, Reason.SERVER_SHUTDOWN, message) for sid in ending]
        results = await asyncio.gather(*pending, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.warning("could not end a session on shutdown: %s", result)
        # Give the streams time to pass the operator's final state on to their clients.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._no_streams.wait(), settle)
        # No final status came for the rest (operator slow or down): the server that
        # stops says so itself, so no client sees its socket close without a final state.
        left = list(self._streams.values())
        if left:
            log.info("draining: %d session(s) without a final status; ending them", len(left))
        results = await asyncio.gather(
            *(h.shut_down(message) for h in left), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                log.warning("could not tell a client about the shutdown: %s", result)

    def _no_client(self, session_id: str, timeout: float) -> None:
        self._deadlines.pop(session_id, None)
        self._created.pop(session_id, None)
        message = f"no client attached within {timeout:g} s"
        task = asyncio.create_task(self._end_quietly(session_id, message))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _end_quietly(self, session_id: str, message: str) -> None:
        try:
            await self._terminate(session_id, Reason.CLIENT_GONE, message)
        except Exception as exc:  # a background timer has nobody to report to
            log.warning("could not end unattached session %s: %s", session_id, exc)
