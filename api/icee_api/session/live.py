"""The sessions this api process streams right now.

- one client per session in this process (checked here first, before the claim
  in the cluster that holds across replicas: claims.py);
- graceful shutdown: refuse new sessions, let attached ones finish within the grace
  period, then end the rest with ServerShutdown.

A session nobody connects to is not this process's business: the client may come
to another replica, and the operator ends it ClientGone after its idle timeout.
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

_CREATED_KEPT_SECONDS = 600.0

# Ends a session (icee_api.session.termination.Termination.end): (id, reason, message).
Terminate = Callable[[str, str, str], Awaitable[object]]


class LiveSessions:
    def __init__(self, terminate: Terminate) -> None:
        self._terminate = terminate
        # When sessions were created here (monotonic), for the start-time metrics only.
        self._created: dict[str, float] = {}
        self._streams: dict[str, StreamHandle] = {}
        self._no_streams = asyncio.Event()
        self._no_streams.set()
        self.draining = False

    def __len__(self) -> int:
        return len(self._streams)

    def created(self, session_id: str) -> None:
        """A session was created here (its client may connect here or elsewhere)."""
        now = time.monotonic()
        self._created[session_id] = now
        # Oldest first: forget the stamps of sessions nobody connected to here.
        while self._created:
            old, stamp = next(iter(self._created.items()))
            if now - stamp < _CREATED_KEPT_SECONDS:
                break
            del self._created[old]

    def created_at(self, session_id: str) -> float | None:
        return self._created.get(session_id)

    def claim(self, session_id: str, handle: StreamHandle) -> bool:
        if session_id in self._streams:
            return False
        self._streams[session_id] = handle
        self._no_streams.clear()
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
        ending = list(self._streams)
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
