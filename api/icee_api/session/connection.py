"""One client connection to one session, from the WebSocket route to the stream's end.

Read the CodeSession, claim the stream (one client per session), start the session
lazily (a warm pod if one fits, else a cold one: ``spec.start``), then run its
:class:`~icee_api.session.streaming.SessionStream`; returns the close code and
reason. The route (icee_api.routes.stream) only does the WebSocket handshake and
hands over a :class:`StreamClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from icee_core import names
from icee_core.models import Reason
from icee_kube.client import KubeError

from icee_api.session import messages
from icee_api.session.bridge import ClientGone, ClientLink
from icee_api.session.messages import CloseCode
from icee_api.session.start_clock import StartClock
from icee_api.session.streaming import ColdStart, Opening, SessionStream, StartNotRecorded

if TYPE_CHECKING:
    from icee_api.services import Services

log = logging.getLogger(__name__)

# Called once when the client stopped reading (a send timed out), with a message.
OnStalled = Callable[[str], Awaitable[None]]


class StreamClient(ClientLink, Protocol):
    """The client's socket as the stream sees it, plus the hook for a stalled reader."""

    on_stalled: OnStalled | None


async def serve(session_id: str, client: StreamClient, services: Services) -> tuple[int, str]:
    if not names.is_session_id(session_id):
        return CloseCode.NOT_FOUND, "not a session id"
    clock = StartClock(services.metrics.start_marks)
    try:
        obj = await services.cluster.get_session(session_id)
    except KubeError as exc:
        await _send_quietly(client, messages.error(str(exc)))
        return CloseCode.TRY_AGAIN_LATER, "kubernetes unavailable"
    if obj is None:
        return CloseCode.NOT_FOUND, "no such session"
    clock.mark("read")
    opening = Opening.of(obj, services.languages)
    uid = str((obj.get("metadata") or {}).get("uid") or "")
    claimed = claimed_pod(obj)
    language = str((obj.get("spec") or {}).get("language") or "")
    # Who created it (admission's client label): whose turn its start takes.
    client_label = str(
        ((obj.get("metadata") or {}).get("labels") or {}).get(names.LABEL_CLIENT, "")
    )
    connected = bool((obj.get("spec") or {}).get("start"))
    del obj  # a few KiB (managedFields, code) per idle client otherwise
    stream = SessionStream(
        session_id,
        client,
        services.cluster,
        services.live,
        services.termination,
        services.watches,
        services.metrics,
        services.stream_timeouts,
        services.attach_buffers,
        clock,
    )
    if services.live.draining:
        # Accepted just before the drain began: not this server's any more. The
        # session goes on; the client reconnects elsewhere.
        await _send_quietly(client, messages.error("the server is shutting down; connect again"))
        return CloseCode.TRY_AGAIN_LATER, "shutting down"
    if not services.live.claim(session_id, stream):
        return CloseCode.ALREADY_ATTACHED, "session already has a client"
    warm_claim: asyncio.Task[str | None] | None = None
    pools = services.watches.warm
    if not connected and opening.outcome is None and pools is not None:
        # Lazy start, warm: the pod is claimed while the stream claim below is written
        # (two writes at once instead of one after the other). Should the stream claim
        # fail (another replica's client won), the pod is left claimed and unadopted,
        # and its pool deletes it (docs/design.md, warm pools): a pod, never a user's.
        warm_claim = asyncio.create_task(pools.claim(session_id, language, opening.limits))
    if opening.outcome is None:
        # The claim across replicas. An ended session is only replayed (no stdin, no
        # attach): any number of late clients may read it.
        try:
            held = await services.claims.claim(session_id, uid)
        except KubeError as exc:
            services.live.release(session_id)
            await _settle(warm_claim)
            await _send_quietly(client, messages.error(str(exc)))
            return CloseCode.TRY_AGAIN_LATER, "kubernetes unavailable"
        if not held:
            services.live.release(session_id)
            await _settle(warm_claim)
            return CloseCode.ALREADY_ATTACHED, "session already has a client"
        clock.mark("stream_claimed")
    services.metrics.active_streams.inc()
    if claimed is not None:
        services.cluster.claimed_pods[session_id] = claimed

    async def stalled(message: str) -> None:
        services.metrics.clients_too_slow.inc()
        await services.termination.end(session_id, Reason.CLIENT_GONE, message)

    client.on_stalled = stalled
    try:
        if not connected and opening.outcome is None:
            # Lazy start: the client is here, now the session gets its sandbox: a
            # warm pod if one fits (issue 12; the operator adopts it), else a cold one.
            claimed = await warm_claim if warm_claim is not None else None
            clock.how = "warm" if claimed else "cold"
            clock.mark("pod_claimed")
            services.metrics.session_starts.labels(clock.how).inc()
            if claimed is None:
                # The operator makes the pod once spec.start is written, which waits
                # for this client's turn at the start gate (start_gate.py).
                cold = ColdStart(
                    lambda: _record_start(services, session_id, None, clock),
                    services.start_gate,
                    client_label,
                    services.settings.start_gate_max_wait_seconds,
                )
                return await stream.run(opening, cold=cold)
            start = _record_start(services, session_id, claimed, clock)
            # A warm pod runs already: the attach opens while spec.start is
            # written; the request (the user's program) goes out only once it is.
            services.cluster.claimed_pods[session_id] = claimed
            return await stream.run(opening, warm=asyncio.ensure_future(start))
        return await stream.run(opening)
    except StartNotRecorded as exc:
        if exc.status == 404:
            return CloseCode.NOT_FOUND, "no such session"
        log.warning("session %s: cannot start it: %s", session_id, exc)
        await _send_quietly(client, messages.error(str(exc)))
        return CloseCode.TRY_AGAIN_LATER, "kubernetes unavailable"
    except Exception:
        log.exception("session %s: stream failed", session_id)
        await _send_quietly(client, messages.error("internal error; the session is being ended"))
        try:
            await services.termination.end(
                session_id, Reason.CLIENT_GONE, "the api lost the stream"
            )
        except Exception as exc:  # the cluster may be what failed; nothing more to do here
            log.warning("session %s: could not end it: %s", session_id, exc)
        return CloseCode.INTERNAL_ERROR, "internal error"
    finally:
        clock.report()
        if services.start_gate is not None:
            services.start_gate.leave(session_id)  # a slot still held: its client went
        services.cluster.claimed_pods.pop(session_id, None)
        services.claims.release(session_id)
        services.live.release(session_id)
        services.metrics.active_streams.dec()


async def _record_start(
    services: Services, session_id: str, claimed: str | None, clock: StartClock
) -> None:
    """Write spec.start (with the claimed warm pod); StartNotRecorded if that failed."""
    try:
        await services.cluster.mark_connected(session_id, datetime.now(UTC), claimed)
    except KubeError as exc:
        raise StartNotRecorded(str(exc), exc.status) from exc
    clock.mark("start_marked")


async def _settle(task: asyncio.Task[str | None] | None) -> None:
    """Wait for a warm claim the connection no longer uses (its pod goes to waste)."""
    if task is None:
        return
    try:
        wasted = await task
    except Exception as exc:  # the claim's own failure; nothing was claimed
        log.info("warm claim failed: %s", exc)
        return
    if wasted is not None:
        log.info("warm pod %s claimed, then not used: its pool deletes it", wasted)


def claimed_pod(obj: dict[str, Any]) -> str | None:
    """The warm pod claimed for the session (spec.start.podName), if any."""
    start = (obj.get("spec") or {}).get("start") or {}
    name = start.get("podName") if isinstance(start, dict) else None
    return name if isinstance(name, str) and name else None


async def _send_quietly(client: StreamClient, message: dict[str, Any]) -> None:
    with contextlib.suppress(ClientGone):
        await client.send(message)
