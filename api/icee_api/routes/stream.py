"""``WS /ws/session/{id}``: the live stream of one session (protocol in messages.py)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse

from icee_api.auth import AuthError, selected_subprotocol
from icee_api.deps import ServicesDep, identify
from icee_api.origin import origin_allowed
from icee_api.services import Services
from icee_api.session.bridge import ClientGone
from icee_api.session.connection import OnStalled, serve

router = APIRouter(tags=["stream"])
log = logging.getLogger(__name__)


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
