"""``WS /ws/session/{id}``: the live stream of one session (protocol in messages.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse
from icee_core import names
from icee_core.models import Reason
from icee_kube.client import KubeError

from icee_api.auth import AuthError, selected_subprotocol
from icee_api.deps import ServicesDep, identify
from icee_api.origin import origin_allowed
from icee_api.services import Services
from icee_api.session import messages
from icee_api.session.bridge import ClientGone
from icee_api.session.messages import CloseCode
from icee_api.session.streaming import Opening, SessionStream

router = APIRouter(tags=["stream"])
log = logging.getLogger(__name__)


# Called once when the client stopped reading (a send timed out), with a message.
OnStalled = Callable[[str], Awaitable[None]]


class WebSocketClient:
    """A Starlette WebSocket as the bridge's ClientLink.

    A send waits while the socket's write buffer is full (the server's flow
    control); a client that reads nothing for ``send_timeout`` seconds is given up:
    ``on_stalled`` ends its session with a stated reason, and the send raises
    ClientGone. So a client that stops reading pins at most one write buffer.
    """

    def __init__(
        self, ws: WebSocket, send_timeout: float = 10.0, on_stalled: OnStalled | None = None
    ) -> None:
        self._ws = ws
        # Output, errors and the watchdog send from different tasks; frames must not interleave.
        self._send_lock = asyncio.Lock()
        self._gone = False
        self._send_timeout = send_timeout
        self.on_stalled = on_stalled

    async def send(self, message: dict[str, Any]) -> None:
        if self._gone:
            raise ClientGone
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
        try:
            async with asyncio.timeout(self._send_timeout), self._send_lock:
                await self._ws.send_text(text)
        except TimeoutError:
            self._gone = True
            if self.on_stalled is not None:
                stalled, self.on_stalled = self.on_stalled, None
                await stalled(
                    f"the client stopped reading its output (nothing read for "
                    f"{self._send_timeout:g} s)"
                )
            raise ClientGone from None
        except Exception as exc:  # starlette/uvicorn raise several kinds once the peer is gone
            self._gone = True
            raise ClientGone from exc

    async def receive(self) -> str | bytes | None:
        if self._gone:
            return None
        try:
            msg = await self._ws.receive()
        except Exception:
            msg = {"type": "websocket.disconnect"}
        if msg["type"] == "websocket.disconnect":
            self._gone = True
            return None
        text = msg.get("text")
        if text is not None:
            return str(text)
        return bytes(msg.get("bytes") or b"")

    async def close(self, code: int, reason: str) -> None:
        if self._gone:
            return
        self._gone = True
        try:
            await self._ws.close(code, reason[:120])
        except Exception as exc:  # already closed by the peer
            log.debug("close after disconnect: %s", exc)


@router.websocket("/ws/session/{session_id}")
async def stream_session(ws: WebSocket, session_id: str, services: ServicesDep) -> None:
    refusal = handshake_refusal(ws, services)
    if refusal is not None:
        why, status_code, detail = refusal
        services.metrics.websockets_rejected.labels(why).inc()
        await ws.send_denial_response(JSONResponse({"detail": detail}, status_code=status_code))
        return
    await ws.accept(subprotocol=selected_subprotocol(ws.scope.get("subprotocols") or ()))
    client = WebSocketClient(ws, services.settings.ws_send_timeout_seconds)
    code, reason = await serve(session_id, client, services)
    await client.close(code, reason)


def handshake_refusal(ws: WebSocket, services: Services) -> tuple[str, int, str] | None:
    """Why the handshake is refused (metric label, HTTP status, detail), or None."""
    if services.live.draining:
        # A socket opened now would be cut at the end of the drain; the client
        # reconnects (through the Service, to a replica that stays).
        return "draining", 503, "the server is shutting down; connect again"
    origin = ws.headers.get("origin")
    if not origin_allowed(origin, ws.headers.get("host"), services.settings.allowed_origins):
        shown = (origin or "")[:100]
        return "origin", 403, f"origin {shown!r} may not open icee WebSockets"
    try:
        identify(ws, services, ws.scope.get("subprotocols") or ())
    except AuthError as exc:
        return ("unauthorized" if exc.status == 401 else "forbidden"), exc.status, exc.detail
    return None


async def serve(session_id: str, client: WebSocketClient, services: Services) -> tuple[int, str]:
    if not names.is_session_id(session_id):
        return CloseCode.NOT_FOUND, "not a session id"
    try:
        obj = await services.cluster.get_session(session_id)
    except KubeError as exc:
        await _send_quietly(client, messages.error(str(exc)))
        return CloseCode.TRY_AGAIN_LATER, "kubernetes unavailable"
    if obj is None:
        return CloseCode.NOT_FOUND, "no such session"
    opening = Opening.of(obj, services.languages)
    uid = str((obj.get("metadata") or {}).get("uid") or "")
    claimed = claimed_pod(obj)
    language = str((obj.get("spec") or {}).get("language") or "")
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
    )
    if services.live.draining:
        # Accepted just before the drain began: not this server's any more. The
        # session goes on; the client reconnects elsewhere.
        await _send_quietly(client, messages.error("the server is shutting down; connect again"))
        return CloseCode.TRY_AGAIN_LATER, "shutting down"
    if not services.live.claim(session_id, stream):
        return CloseCode.ALREADY_ATTACHED, "session already has a client"
    if opening.outcome is None:
        # The claim across replicas. An ended session is only replayed (no stdin, no
        # attach): any number of late clients may read it.
        try:
            held = await services.claims.claim(session_id, uid)
        except KubeError as exc:
            services.live.release(session_id)
            await _send_quietly(client, messages.error(str(exc)))
            return CloseCode.TRY_AGAIN_LATER, "kubernetes unavailable"
        if not held:
            services.live.release(session_id)
            return CloseCode.ALREADY_ATTACHED, "session already has a client"
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
            pools = services.watches.warm
            claimed = await pools.claim(session_id, language, opening.limits) if pools else None
            services.metrics.session_starts.labels("warm" if claimed else "cold").inc()
            if claimed is not None:
                services.cluster.claimed_pods[session_id] = claimed
            try:
                await services.cluster.mark_connected(session_id, datetime.now(UTC), claimed)
            except KubeError as exc:
                if exc.status == 404:
                    return CloseCode.NOT_FOUND, "no such session"
                log.warning("session %s: cannot start it: %s", session_id, exc)
                await _send_quietly(client, messages.error(str(exc)))
                return CloseCode.TRY_AGAIN_LATER, "kubernetes unavailable"
        return await stream.run(opening)
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
        services.cluster.claimed_pods.pop(session_id, None)
        services.claims.release(session_id)
        services.live.release(session_id)
        services.metrics.active_streams.dec()


def claimed_pod(obj: dict[str, Any]) -> str | None:
    """The warm pod claimed for the session (spec.start.podName), if any."""
    start = (obj.get("spec") or {}).get("start") or {}
    name = start.get("podName") if isinstance(start, dict) else None
    return name if isinstance(name, str) and name else None


async def _send_quietly(client: WebSocketClient, message: dict[str, Any]) -> None:
    with contextlib.suppress(ClientGone):
        await client.send(message)
