"""Kubernetes access for the api: the CodeSession resource, its pod, logs, attach.

A small REST client of our own on one ``aiohttp`` session: the api makes a handful
of calls and reads every object as the JSON dict the API server sends, so a
generated client (and its ~45 MB of model classes) would buy nothing. The api only
ever creates CodeSessions, reads them and their pods, and patches
``spec.termination``; the operator owns status and pod deletion (docs/design.md).

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
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import aiohttp
from icee_core import names
from icee_core.models import FINAL_PHASES, CodeSessionSpec, codesession_manifest

from icee_api import kubeconfig
from icee_api.kubeconfig import KubeConfig, TokenSource

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
# A watch event is one JSON line; etcd caps an object at 1.5 MiB, escaping may double it.
MAX_WATCH_LINE = 8 << 20
_CALL_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=10)
_TLS_CLOSE_SECONDS = 0.25


class KubeError(RuntimeError):
    """The Kubernetes API refused or failed a call the api needed (or was unreachable)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class WatchExpired(KubeError):
    """The resourceVersion a watch resumed from is too old (410 Gone): list again."""


class QuotaExceeded(KubeError):
    """The namespace's ResourceQuota refused a new object (403 exceeded quota)."""


# What a call may raise when the API server is unreachable or goes away mid-response.
_TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)


# -- pure parts: paths, query strings, objects ------------------------------------------


def codesessions_path(namespace: str, name: str | None = None) -> str:
    path = f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{quote(namespace)}/{names.PLURAL}"
    return f"{path}/{quote(name)}" if name else path


def pods_path(namespace: str, name: str | None = None, sub: str | None = None) -> str:
    path = f"/api/v1/namespaces/{quote(namespace)}/pods"
    if name:
        path += f"/{quote(name)}"
        if sub:
            path += f"/{sub}"
    return path


def pools_path(namespace: str) -> str:
    return f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{quote(namespace)}/{names.POOL_PLURAL}"


def events_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{quote(namespace)}/events"


# The kubelet's "Started" event: StartContainer returned, the container runs. It is
# posted at once, while the pod status says running only after the kubelet's next
# relist (PLEG, every second) and a status write.
STARTED_EVENTS = "involvedObject.kind=Pod,reason=Started"
# Warm pods: the pods of every SandboxPool, claimed or not.
WARM = f"{names.MANAGED_SELECTOR},{names.LABEL_POOL}"


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


def attach_url(host: str, namespace: str, pod: str, container: str) -> str:
    scheme, netloc, base, _, _ = urlsplit(host)
    ws_scheme = {"https": "wss", "http": "ws"}[scheme]
    query = urlencode({"container": container, "stdin": "true", "stdout": "true", "stderr": "true"})
    path = f"{base.rstrip('/')}{pods_path(namespace, pod, 'attach')}"
    return urlunsplit((ws_scheme, netloc, path, query, ""))


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


@dataclass(frozen=True, slots=True)
class ContainerState:
    """The sandbox container's state as the pod reports it."""

    kind: Literal["absent", "waiting", "running", "terminated"]
    reason: str = ""
    exit_code: int | None = None
    # The pod is being deleted (the operator ends sessions that way).
    deleting: bool = False


def container_state(pod: Mapping[str, Any], container: str) -> ContainerState:
    """Pure reading of ``status.containerStatuses`` for one container."""
    deleting = bool((pod.get("metadata") or {}).get("deletionTimestamp"))
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") != container:
            continue
        state = status.get("state") or {}
        if "terminated" in state:
            term = state["terminated"] or {}
            reason, code = term.get("reason") or "", term.get("exitCode")
            return ContainerState("terminated", reason, code, deleting)
        if "running" in state:
            return ContainerState("running", deleting=deleting)
        if "waiting" in state:
            reason = (state["waiting"] or {}).get("reason") or ""
            return ContainerState("waiting", reason, deleting=deleting)
    return ContainerState("absent", deleting=deleting)


@dataclass(frozen=True, slots=True)
class AttachTarget:
    """Where and how to open the attach WebSocket (built from the same client config)."""

    url: str
    headers: dict[str, str]
    ssl: ssl.SSLContext | None
    server_hostname: str | None


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
                raise KubeError(status_message(resp.status, detail), resp.status)
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


class Cluster:
    """The Kubernetes calls the api makes, bound to one namespace."""

    def __init__(self, kube: KubeClient, namespace: str) -> None:
        self.namespace = namespace
        self.kube = kube
        # Sessions streaming from this process on a claimed warm pod: its name.
        self.claimed_pods: dict[str, str] = {}

    def pod_name(self, session_id: str) -> str:
        """The session's pod: its claimed warm pod, else the one the operator creates."""
        return self.claimed_pods.get(session_id) or names.pod_name(session_id)

    @classmethod
    async def connect(
        cls, kubeconfig_path: str | None, namespace: str, max_connections: int
    ) -> Cluster:
        try:
            cfg = kubeconfig.load(kubeconfig_path)
        except kubeconfig.KubeConfigError as exc:
            raise KubeError(str(exc)) from exc
        return cls(KubeClient(cfg, max_connections), namespace)

    async def close(self) -> None:
        await self.kube.close()

    # -- CodeSession -------------------------------------------------------------------

    async def check(self) -> None:
        """Can we reach the API server and read CodeSessions? (readiness)"""
        timeout = aiohttp.ClientTimeout(total=5)
        try:
            await self.kube.call(
                "GET",
                codesessions_path(self.namespace),
                query={"limit": "1"},
                client_timeout=timeout,
            )
        except KubeError as exc:
            raise KubeError(f"cannot list codesessions: {exc}", exc.status) from exc

    async def create_session(
        self, session_id: str, spec: CodeSessionSpec, client: str | None = None
    ) -> None:
        """Create the CodeSession; QuotaExceeded if the namespace's ResourceQuota is full."""
        body = codesession_manifest(session_id, spec, self.namespace, client)
        try:
            await self.kube.call("POST", codesessions_path(self.namespace), body=body)
        except KubeError as exc:
            if exc.status == 403 and "exceeded quota" in str(exc):
                raise QuotaExceeded(str(exc), exc.status) from exc
            raise KubeError(f"cannot create the CodeSession: {exc}", exc.status) from exc

    async def mark_connected(
        self, session_id: str, at: datetime, pod_name: str | None = None
    ) -> None:
        """Set ``spec.start``: the client connected, the operator may start the sandbox.

        ``pod_name``: the warm pod claimed for the session, which the operator adopts
        instead of creating one. Set once (a CRD rule refuses a change): a second
        call is a no-op (a pod claimed by it is deleted by its pool, never used).
        """
        stamp = at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        start = {"at": stamp} | ({"podName": pod_name} if pod_name else {})
        patch = {"spec": {"start": start}}
        path = codesessions_path(self.namespace, session_id)
        try:
            obj = await self.kube.call("PATCH", path, body=patch, content_type=MERGE_PATCH)
        except KubeError as exc:
            if exc.status == 422 and "immutable" in str(exc):
                return  # already marked (by an earlier connection)
            raise KubeError(f"cannot mark the session connected: {exc}", exc.status) from exc
        written = (obj.get("spec") or {}).get("start") or {}
        if pod_name and written.get("podName") != pod_name:
            raise KubeError(
                "the CodeSession CRD has no spec.start.podName (warm pools): "
                "apply charts/icee/crds/codesession.yaml"
            )
        if not written:
            # An older CRD prunes the unknown field silently: nothing would ever start.
            raise KubeError(
                "the CodeSession CRD has no spec.start (lazy start): "
                "apply charts/icee/crds/codesession.yaml"
            )

    async def get_session(self, session_id: str) -> dict[str, Any] | None:
        try:
            return await self.kube.call("GET", codesessions_path(self.namespace, session_id))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise KubeError(f"cannot read the CodeSession: {exc}", exc.status) from exc

    async def request_termination(self, session_id: str, reason: str, message: str) -> bool:
        """Ask the operator to end the session; the first reason written wins.

        The patch carries the resourceVersion read just before, so two writers racing
        (the user's DELETE and an idle timeout) cannot overwrite each other's reason.
        Returns False if the session is gone, already ended or already asked to end.
        """
        for _ in range(3):
            obj = await self.get_session(session_id)
            if obj is None:
                return False
            if (obj.get("spec") or {}).get("termination"):
                return False
            if (obj.get("status") or {}).get("phase") in FINAL_PHASES:
                return False
            patch = {
                "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
                "spec": {"termination": {"reason": reason, "message": message}},
            }
            path = codesessions_path(self.namespace, session_id)
            try:
                await self.kube.call("PATCH", path, body=patch, content_type=MERGE_PATCH)
            except KubeError as exc:
                if exc.status == 409:
                    continue
                if exc.status == 404:
                    return False
                raise KubeError(f"cannot patch the CodeSession: {exc}", exc.status) from exc
            return True
        return False

    async def list_sessions(self) -> tuple[list[dict[str, Any]], str]:
        """Every CodeSession in the namespace and the list's resourceVersion."""
        return await self.kube.list_all(codesessions_path(self.namespace))

    async def list_pods(self) -> tuple[list[dict[str, Any]], str]:
        """Every sandbox pod in the namespace, like ``list_sessions``."""
        query = {"labelSelector": names.MANAGED_SELECTOR}
        return await self.kube.list_all(pods_path(self.namespace), query)

    async def list_started(self) -> tuple[list[dict[str, Any]], str]:
        """The kubelet's "Started" events in the namespace, like ``list_sessions``."""
        query = {"fieldSelector": STARTED_EVENTS}
        return await self.kube.list_all(events_path(self.namespace), query)

    def watch_sessions(
        self, resource_version: str | None, seconds: float
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Every CodeSession in the namespace: (event type, object), for ``seconds``.

        Without a resourceVersion the watch starts with ADDED for what exists now.
        """
        query = watch_query(resource_version, seconds)
        return self.kube.watch(codesessions_path(self.namespace), query, seconds)

    def watch_pods(
        self, resource_version: str | None, seconds: float
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Every sandbox pod in the namespace (label selector), like ``watch_sessions``."""
        query = watch_query(resource_version, seconds, names.MANAGED_SELECTOR)
        return self.kube.watch(pods_path(self.namespace), query, seconds)

    def watch_started(
        self, resource_version: str | None, seconds: float
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """The kubelet's "Started" events for pods in the namespace, like ``watch_sessions``."""
        query = watch_query(resource_version, seconds, field_selector=STARTED_EVENTS)
        return self.kube.watch(events_path(self.namespace), query, seconds)

    # -- warm pools (issue 12; icee_api.warm) --

    async def list_warm_pods(self) -> tuple[list[dict[str, Any]], str]:
        return await self.kube.list_all(pods_path(self.namespace), {"labelSelector": WARM})

    def watch_warm_pods(
        self, resource_version: str | None, seconds: float
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        query = watch_query(resource_version, seconds, WARM)
        return self.kube.watch(pods_path(self.namespace), query, seconds)

    async def list_pools(self) -> tuple[list[dict[str, Any]], str]:
        return await self.kube.list_all(pools_path(self.namespace))

    def watch_pools(
        self, resource_version: str | None, seconds: float
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        query = watch_query(resource_version, seconds)
        return self.kube.watch(pools_path(self.namespace), query, seconds)

    async def claim_pod(self, pod: str, resource_version: str, session_id: str, at: str) -> None:
        """Claim a warm pod for a session with one conditional write (KubeError 409:
        the pod changed since ``resource_version``, e.g. another api claimed it)."""
        patch = {
            "metadata": {
                # The precondition: the write fails if anyone changed the pod since.
                "resourceVersion": resource_version,
                "labels": {names.LABEL_SESSION: names.validate_session_id(session_id)},
                "annotations": {names.ANNOTATION_CLAIMED_AT: at},
            }
        }
        path = pods_path(self.namespace, pod)
        await self.kube.call("PATCH", path, body=patch, content_type=MERGE_PATCH)

    async def read_log(self, session_id: str, limit_bytes: int) -> AsyncIterator[bytes]:
        """The container's log (stdout and stderr interleaved), in chunks."""
        query = {"container": names.CONTAINER_NAME, "limitBytes": str(limit_bytes)}
        path = pods_path(self.namespace, self.pod_name(session_id), "log")
        try:
            async for chunk in self.kube.stream(path, query, 60):
                yield chunk
        except KubeError as exc:
            raise KubeError(f"cannot read the pod log: {exc}", exc.status) from exc

    def attach_target(self, session_id: str) -> AttachTarget:
        cfg = self.kube.config
        return AttachTarget(
            url=attach_url(
                cfg.server, self.namespace, self.pod_name(session_id), names.CONTAINER_NAME
            ),
            headers={k: v for k, v in self.kube.headers().items() if k == "Authorization"},
            ssl=self.kube.ssl,
            server_hostname=cfg.tls_server_name,
        )
