"""The one owner of "end this session with reason X" in the api.

The rule:

- A decision made outside a stream (the user's ``DELETE``, the drain at shutdown,
  the WebSocket route giving up on a client that stopped reading or on a stream
  that failed) calls :meth:`Termination.end`. (No client at all is the operator's
  connect deadline: the client may come to any replica.)
- ``end`` passes it to the session's stream when this process streams it (its
  :class:`~icee_api.session.state.Session` records the first reason, so the client
  is told and the runner's own report cannot override it); otherwise it writes the
  request at once.
- Inside a stream, the stream decides (a limit trips in the bridge, the start
  timeout, the client went away): the first reason is recorded in its ``Session``,
  then sent with :meth:`Termination.request`.
- :meth:`Termination.request` is the only writer of ``spec.termination``: a
  conditional patch, so the first reason written wins across writers and replicas.
  The operator does the ending and writes the final status; the api never deletes
  anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from icee_core.models import Reason

from icee_api.metrics import Metrics
from icee_api.session.cluster import Cluster

# The limits only a stream can see: counted when they end a session.
STREAM_LIMITS = frozenset(
    {Reason.IDLE_TIMEOUT, Reason.OUTPUT_LIMIT_EXCEEDED, Reason.STDIN_LIMIT_EXCEEDED}
)


class StreamHandle(Protocol):
    """A stream this process serves (icee_api.session.streaming.SessionStream)."""

    async def terminate(self, reason: str, message: str) -> None: ...

    async def shut_down(self, message: str) -> None:
        """Tell the client the session ended (ServerShutdown) unless it was told already."""


class Termination:
    def __init__(
        self,
        cluster: Callable[[], Cluster],
        stream_of: Callable[[str], StreamHandle | None],
        metrics: Metrics,
    ) -> None:
        self._cluster = cluster
        self._stream_of = stream_of
        self._metrics = metrics

    async def end(self, session_id: str, reason: str, message: str) -> None:
        """End a session, through its stream if this process serves one (KubeError)."""
        stream = self._stream_of(session_id)
        if stream is not None:
            await stream.terminate(reason, message)
        else:
            await self.request(session_id, reason, message)

    async def request(self, session_id: str, reason: str, message: str) -> bool:
        """Ask the operator to end the session; False if it is gone or already ending."""
        if reason in STREAM_LIMITS:
            self._metrics.limit_trips.labels(reason).inc()
        return await self._cluster().request_termination(session_id, reason, message)
