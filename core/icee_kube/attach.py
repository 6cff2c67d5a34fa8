"""The attach WebSocket to a sandbox container, spoken with ``websockets`` directly.

``wss://<apiserver>/api/v1/namespaces/<ns>/pods/<pod>/attach?...`` with the channel
protocol of :mod:`icee_kube.channel`. Buffers are bounded both ways: ``max_size`` per
frame, ``max_queue`` frames read ahead, ``write_limit`` bytes waiting to be sent; a
slow browser therefore slows the program down instead of growing memory here.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from icee_kube import channel
from icee_kube.channel import Channel, Frame
from icee_kube.client import KubeClient
from icee_kube.paths import pods_path


@dataclass(frozen=True, slots=True)
class AttachTarget:
    """Where and how to open the attach WebSocket (built from the same client config)."""

    url: str
    headers: dict[str, str]
    ssl: ssl.SSLContext | None
    server_hostname: str | None


def attach_url(host: str, namespace: str, pod: str, container: str) -> str:
    scheme, netloc, base, _, _ = urlsplit(host)
    ws_scheme = {"https": "wss", "http": "ws"}[scheme]
    query = urlencode({"container": container, "stdin": "true", "stdout": "true", "stderr": "true"})
    path = f"{base.rstrip('/')}{pods_path(namespace, pod, 'attach')}"
    return urlunsplit((ws_scheme, netloc, path, query, ""))


def attach_target(kube: KubeClient, namespace: str, pod: str, container: str) -> AttachTarget:
    """The attach WebSocket of one container, on the client's TLS context and credentials."""
    cfg = kube.config
    return AttachTarget(
        url=attach_url(cfg.server, namespace, pod, container),
        headers={k: v for k, v in kube.headers().items() if k == "Authorization"},
        ssl=kube.ssl,
        server_hostname=cfg.tls_server_name,
    )


class AttachClosed(Exception):
    """The attach connection is closed; nothing more reaches the program."""


class AttachError(RuntimeError):
    """The attach WebSocket could not be opened."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AttachRefused(AttachError):
    """The API server took the WebSocket, then the kubelet refused the attach.

    The API server (1.30+) upgrades the client's WebSocket before it connects to
    the kubelet; a kubelet that does not see the container running answers on the
    error channel ("unable to upgrade connection: container ... not found") before
    any output, and so does the API server when it cannot reach the kubelet at all
    (an InternalError: "error sending request: ... connection refused", the
    kubelet restarting). Nothing sent on such a stream reached the program.
    """


_REFUSED = "unable to upgrade connection"
_UNREACHABLE = "InternalError"


@dataclass(frozen=True, slots=True)
class AttachBuffers:
    max_frame_bytes: int = 1 << 20
    max_queue: int = 16
    write_limit: int = 1 << 16
    open_timeout: float = 10.0


class AttachStream:
    """One open attach connection."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self.subprotocol = ws.subprotocol

    async def send_stdin(self, data: bytes) -> None:
        await self._send(channel.encode(Channel.STDIN, data))

    async def _send(self, frame: bytes) -> None:
        try:
            await self._ws.send(frame)
        except ConnectionClosed as exc:
            raise AttachClosed(str(exc)) from exc

    async def frames(self) -> AsyncIterator[Frame]:
        """Frames until the remote end closes (the container exited or the pod went away).

        Raises AttachRefused if the kubelet refused the attach (see there).
        """
        output_seen = False
        try:
            async for message in self._ws:
                frame = channel.decode(message)
                if frame.channel is Channel.ERROR and not output_seen:
                    status = channel.parse_status(frame.data)
                    if not status.success and (
                        _REFUSED in status.message or status.reason == _UNREACHABLE
                    ):
                        raise AttachRefused(f"attach refused: {status.message}")
                elif frame.data:
                    output_seen = True
                yield frame
        except ConnectionClosed:
            return

    async def close(self) -> None:
        await self._ws.close()


@asynccontextmanager
async def open_attach(target: AttachTarget, buffers: AttachBuffers) -> AsyncIterator[AttachStream]:
    try:
        ws = await connect(
            target.url,
            subprotocols=[Subprotocol(p) for p in channel.SUBPROTOCOLS],
            additional_headers=target.headers,
            ssl=target.ssl,
            server_hostname=target.server_hostname,
            compression=None,
            open_timeout=buffers.open_timeout,
            max_size=buffers.max_frame_bytes,
            max_queue=buffers.max_queue,
            write_limit=buffers.write_limit,
            # No keepalive task per connection: the caller notices a peer that went
            # quiet or away (the api: its idle timeout and its watches).
            ping_interval=None,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        body = exc.response.body.decode("utf-8", "replace")[:500] if exc.response.body else ""
        raise AttachError(f"attach refused: HTTP {status} {body}", status) from exc
    except (InvalidHandshake, OSError, TimeoutError) as exc:
        raise AttachError(f"attach failed: {exc}") from exc
    if ws.subprotocol not in channel.SUBPROTOCOLS:
        await ws.close()
        raise AttachError(f"API server chose no channel subprotocol ({ws.subprotocol!r})")
    stream = AttachStream(ws)
    try:
        yield stream
    finally:
        await ws.close()
