"""A small Kubernetes REST client of our own: JSON over HTTP on one ``aiohttp`` session.

Every object is read as the JSON dict the API server sends, so a generated client
(and its ~45 MB of model classes) would buy nothing. It knows the API server's
REST conventions (lists in pages, watches as JSON lines, ``kind: Status`` errors)
and nothing about what the objects mean: that is for its callers.

Errors, all from one place (:class:`KubeError`)::

    KubeError          the API server refused a call (``status`` set) or was unreachable
     ├── WatchExpired  a watch's resourceVersion is too old (410 Gone, as an ERROR
     │                 event or when opening the watch): list again
     └── QuotaExceeded the namespace's ResourceQuota refused a new object
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from icee_kube import kubeconfig
from icee_kube.kubeconfig import KubeConfig, TokenSource

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
# A watch event is one JSON line; etcd caps an object at 1.5 MiB, escaping may double it.
MAX_WATCH_LINE = 8 << 20
_CALL_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=10)
_TLS_CLOSE_SECONDS = 0.25


class KubeError(RuntimeError):
    """The Kubernetes API refused or failed a call (or was unreachable)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class WatchExpired(KubeError):
    """The resourceVersion a watch resumed from is too old (410 Gone): list again."""


class QuotaExceeded(KubeError):
    """The namespace's ResourceQuota refused a new object (403 exceeded quota)."""


# What a call may raise when the API server is unreachable or goes away mid-response.
_TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)


# -- pure parts: query strings, errors, watch lines ----------------------------------


def watch_query(
    resource_version: str | None,
    seconds: float,
    label_selector: str | None = None,
    field_selector: str | None = None,
) -> dict[str, str]:
    query = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": str(int(seconds))}
    if resource_version:
        query["resourceVersion"] = resource_version
    if label_selector:
        query["labelSelector"] = label_selector
    if field_selector:
        query["fieldSelector"] = field_selector
    return query


def status_message(status: int, body: bytes) -> str:
    """``<code> <reason>: <message>`` from a ``kind: Status`` error body (or its text)."""
    try:
        obj = json.loads(body)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and obj.get("kind") == "Status":
        return f"{status} {obj.get('reason') or ''}: {obj.get('message') or ''}".strip(": ")
    text = body.decode("utf-8", "replace").strip()[:300]
    return f"{status} {text}" if text else str(status)


# The event type a watch yields for a line it could not decode (logged, then skipped).
UNDECODABLE = "UNDECODABLE"


def watch_event(line: bytes) -> tuple[str, dict[str, Any]] | None:
    """One watch line as (type, object); raises on an ERROR event; None for a blank line.

    A line that is not a JSON watch event is ``(UNDECODABLE, {})``: one bad line
    must not end the watch of everything else.
    """
    if not line.strip():
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return UNDECODABLE, {}
    obj = event.get("object") if isinstance(event, dict) else None
    if not isinstance(obj, dict):
        return UNDECODABLE, {}
    kind = str(event.get("type"))
    if kind == "ERROR":
        if obj.get("code") == 410:
            raise WatchExpired(str(obj.get("message")), 410)
        raise KubeError(f"watch failed: {obj.get('code')} {obj.get('message')}", obj.get("code"))
    return kind, obj


# -- the client -------------------------------------------------------------------------


class KubeClient:
    """JSON over HTTP to one API server, on one connection pool and one TLS context."""

    def __init__(self, cfg: KubeConfig, max_connections: int = 100) -> None:
        self.config = cfg
        # Built once and shared by the pool and every attach WebSocket.
        self.ssl = kubeconfig.ssl_context(cfg)
        self._token = TokenSource(cfg)
        self._http: aiohttp.ClientSession | None = None
        self._max_connections = max_connections

    @classmethod
    def from_kubeconfig(cls, path: str | None, max_connections: int = 100) -> KubeClient:
        """A client for the in-cluster service account, else the kubeconfig at ``path``."""
        try:
            cfg = kubeconfig.load(path)
        except kubeconfig.KubeConfigError as exc:
            raise KubeError(str(exc)) from exc
        return cls(cfg, max_connections)

    def _session(self) -> aiohttp.ClientSession:
        # Made on first use, inside the running loop (aiohttp binds to it).
        if self._http is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, ssl=self.ssl if self.ssl is not None else True
            )
            self._http = aiohttp.ClientSession(
                connector=connector, timeout=_CALL_TIMEOUT, raise_for_status=False
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
            # aiohttp closes TLS transports asynchronously (the close_notify exchange):
            # give them the loop turns they need, or their sockets outlive the loop and
            # leak (aiohttp's documented graceful-shutdown pause).
            await asyncio.sleep(_TLS_CLOSE_SECONDS)

    def headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        auth = self._token.authorization()
        if auth:
            headers["Authorization"] = auth
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    @asynccontextmanager
    async def open(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        client_timeout: aiohttp.ClientTimeout | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A response with a 2xx status, its body unread; KubeError for anything else."""
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        try:
            resp = await self._session().request(
                method,
                self.config.server + path,
                params=query,
                data=data,
                headers=self.headers(content_type if data is not None else None),
                timeout=client_timeout or _CALL_TIMEOUT,
                server_hostname=self.config.tls_server_name,
            )
        except _TRANSPORT_ERRORS as exc:
            raise KubeError(f"{type(exc).__name__}: {exc}") from exc
        try:
            if resp.status >= 400:
                try:
                    detail = await resp.content.read(64 << 10)
                except _TRANSPORT_ERRORS:
                    detail = b""
                message = status_message(resp.status, detail)
                if resp.status == 403 and "exceeded quota" in message:
                    raise QuotaExceeded(message, resp.status)
                raise KubeError(message, resp.status)
            yield resp
        finally:
            resp.release()

    async def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """One request, its JSON response as a dict."""
        async with self.open(method, path, **kwargs) as resp:
            try:
                raw = await resp.read()
            except _TRANSPORT_ERRORS as exc:
                raise KubeError(f"response cut off: {type(exc).__name__}: {exc}") from exc
        obj = json.loads(raw) if raw else {}
        if not isinstance(obj, dict):
            raise KubeError(f"{method} {path}: expected a JSON object")
        return obj

    async def watch(
        self, path: str, query: Mapping[str, str], seconds: float
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Watch events (type, object) from a ``watch=true`` list, read as raw JSON lines."""
        timeout = aiohttp.ClientTimeout(total=seconds + 10, sock_connect=10)
        try:
            async with self.open("GET", path, query=query, client_timeout=timeout) as resp:
                async for line in _lines(resp, MAX_WATCH_LINE):
                    event = watch_event(line)
                    if event is not None:
                        yield event
        except KubeError as exc:
            # The other form of "too old": refused when opening the watch.
            if exc.status == 410 and not isinstance(exc, WatchExpired):
                raise WatchExpired(str(exc), 410) from exc
            raise

    async def list_all(
        self, path: str, query: Mapping[str, str] | None = None, page: int = 500
    ) -> tuple[list[dict[str, Any]], str]:
        """Every object of a list (in pages), and the list's resourceVersion."""
        items: list[dict[str, Any]] = []
        params = {**(query or {}), "limit": str(page)}
        while True:
            body = await self.call("GET", path, query=params)
            items.extend(i for i in body.get("items") or [] if isinstance(i, dict))
            meta = body.get("metadata") or {}
            if not meta.get("continue"):
                return items, str(meta.get("resourceVersion") or "")
            params = {**(query or {}), "limit": str(page), "continue": str(meta["continue"])}

    async def read(
        self, path: str, query: Mapping[str, str], max_bytes: int, seconds: float = 30
    ) -> bytes:
        """A response body, at most its first ``max_bytes`` (the rest is never read)."""
        timeout = aiohttp.ClientTimeout(total=seconds, sock_connect=10)
        data = bytearray()
        async with self.open("GET", path, query=query, client_timeout=timeout) as resp:
            try:
                while len(data) < max_bytes:
                    chunk = await resp.content.read(max_bytes - len(data))
                    if not chunk:
                        break
                    data += chunk
            except _TRANSPORT_ERRORS as exc:
                raise KubeError(f"cut off: {type(exc).__name__}: {exc}") from exc
        return bytes(data)

    async def stream(
        self, path: str, query: Mapping[str, str], seconds: float
    ) -> AsyncIterator[bytes]:
        """A response body in chunks as they arrive (a pod log)."""
        timeout = aiohttp.ClientTimeout(total=seconds, sock_connect=10)
        async with self.open("GET", path, query=query, client_timeout=timeout) as resp:
            try:
                async for chunk in resp.content.iter_any():
                    yield chunk
            except _TRANSPORT_ERRORS as exc:
                raise KubeError(f"cut off: {type(exc).__name__}: {exc}") from exc


async def _lines(resp: aiohttp.ClientResponse, max_line: int) -> AsyncIterator[bytes]:
    """Newline-separated lines of a body (aiohttp's readline caps lines at 128 KiB)."""
    buf = bytearray()
    try:
        async for chunk in resp.content.iter_any():
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                if buf:
                    buf += chunk[start:end]
                    yield bytes(buf)
                    buf.clear()
                else:
                    yield chunk[start:end]
                start = end + 1
            buf += chunk[start:]
            if len(buf) > max_line:
                raise KubeError(f"watch event over {max_line} bytes")
    except _TRANSPORT_ERRORS as exc:
        raise KubeError(f"watch cut off: {type(exc).__name__}: {exc}") from exc
    if buf:
        yield bytes(buf)
