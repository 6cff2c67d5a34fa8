"""Kubernetes access for the api: the CodeSession resource, its pod, logs, attach.

The api only ever creates CodeSessions, reads them and their pods, and patches
``spec.termination``; the operator owns status and pod deletion (docs/design.md).
Watches are read as raw JSON lines into dicts: no model deserialisation and no
extra client per watch, since one runs for every starting session.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, Literal, cast
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
from icee_core import names
from icee_core.models import FINAL_PHASES, CodeSessionSpec, codesession_manifest
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)


class KubeError(RuntimeError):
    """The Kubernetes API refused or failed a call the api needed (or was unreachable)."""


class WatchExpired(KubeError):
    """The resourceVersion a watch resumed from is too old (410 Gone): list again."""


# What a call may raise when the API server is unreachable or goes away mid-response.
_TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, OSError)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True, slots=True)
class ContainerState:
    """The sandbox container's state as the pod reports it."""

    kind: Literal["absent", "waiting", "running", "terminated"]
    reason: str = ""
    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class PodEvent:
    deleted: bool
    phase: str
    container: ContainerState


def container_state(pod: dict[str, Any], container: str) -> ContainerState:
    """Pure reading of ``status.containerStatuses`` for one container."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") != container:
            continue
        state = status.get("state") or {}
        if "terminated" in state:
            term = state["terminated"] or {}
            return ContainerState("terminated", term.get("reason") or "", term.get("exitCode"))
        if "running" in state:
            return ContainerState("running")
        if "waiting" in state:
            return ContainerState("waiting", (state["waiting"] or {}).get("reason") or "")
    return ContainerState("absent")


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
    path = f"{base.rstrip('/')}/api/v1/namespaces/{namespace}/pods/{pod}/attach"
    return urlunsplit((ws_scheme, netloc, path, query, ""))


def ssl_context(cfg: client.Configuration) -> ssl.SSLContext | None:
    """The TLS settings of the loaded kube config as an SSLContext for ``websockets``."""
    if not str(cfg.host).startswith("https"):
        return None
    ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    if cfg.cert_file:
        ctx.load_cert_chain(cfg.cert_file, keyfile=cfg.key_file)
    if not cfg.verify_ssl:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def load_configuration(kubeconfig: str | None, max_connections: int) -> client.Configuration:
    """In-cluster service account if there is one, else the kubeconfig."""
    cfg = client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        path = kubeconfig or os.environ.get("KUBECONFIG") or None
        await config.load_kube_config(
            config_file=path, client_configuration=cfg, persist_config=False
        )
    cfg.connection_pool_maxsize = max_connections
    return cfg


class Cluster:
    """The Kubernetes calls the api makes, bound to one namespace."""

    def __init__(self, cfg: client.Configuration, namespace: str) -> None:
        self.namespace = namespace
        self._cfg = cfg
        self._api = client.ApiClient(cfg)
        self._core = client.CoreV1Api(self._api)
        self._custom = client.CustomObjectsApi(self._api)
        # Built once: loading CA and client cert per attach would cost memory and time.
        self._ssl = ssl_context(cfg)

    @classmethod
    async def connect(cls, kubeconfig: str | None, namespace: str, max_connections: int) -> Cluster:
        return cls(await load_configuration(kubeconfig, max_connections), namespace)

    async def close(self) -> None:
        await self._api.close()

    # -- CodeSession -------------------------------------------------------------------

    async def check(self) -> None:
        """Can we reach the API server and read CodeSessions? (readiness)"""
        try:
            await self._custom.list_namespaced_custom_object(
                names.GROUP, names.VERSION, self.namespace, names.PLURAL,
                limit=1, _request_timeout=5,
            )  # fmt: skip
        except (ApiException, *_TRANSPORT_ERRORS) as exc:
            raise KubeError(f"cannot list codesessions: {_describe(exc)}") from exc

    async def create_session(self, session_id: str, spec: CodeSessionSpec) -> None:
        body = codesession_manifest(session_id, spec, self.namespace)
        try:
            await self._custom.create_namespaced_custom_object(
                names.GROUP, names.VERSION, self.namespace, names.PLURAL, body
            )
        except (ApiException, *_TRANSPORT_ERRORS) as exc:
            raise KubeError(f"cannot create the CodeSession: {_describe(exc)}") from exc

    async def get_session(self, session_id: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = await self._custom.get_namespaced_custom_object(
                names.GROUP, names.VERSION, self.namespace, names.PLURAL, session_id
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeError(f"cannot read the CodeSession: {_describe(exc)}") from exc
        except _TRANSPORT_ERRORS as exc:
            raise KubeError(f"cannot read the CodeSession: {_describe(exc)}") from exc
        return obj

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
            try:
                await self._custom.patch_namespaced_custom_object(
                    names.GROUP, names.VERSION, self.namespace, names.PLURAL,
                    session_id, patch, _content_type="application/merge-patch+json",
                )  # type: ignore[call-arg]  # fmt: skip
            except ApiException as exc:
                if exc.status == 409:
                    continue
                if exc.status == 404:
                    return False
                raise KubeError(f"cannot patch the CodeSession: {_describe(exc)}") from exc
            except _TRANSPORT_ERRORS as exc:
                raise KubeError(f"cannot patch the CodeSession: {_describe(exc)}") from exc
            return True
        return False

    async def watch_sessions(
        self, resource_version: str | None, seconds: float
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Every CodeSession in the namespace: (event type, object), for ``seconds``.

        Without a resourceVersion the watch starts with ADDED for what exists now.
        """
        call = self._custom.list_namespaced_custom_object(
            names.GROUP, names.VERSION, self.namespace, names.PLURAL,
            **_watch_args(resource_version, seconds),
        )  # fmt: skip
        async for event in _watch(cast(Awaitable[aiohttp.ClientResponse], call)):
            yield event

    async def watch_pods(
        self, resource_version: str | None, seconds: float
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Every sandbox pod in the namespace (label selector), like ``watch_sessions``."""
        call = self._core.list_namespaced_pod(
            self.namespace, label_selector=names.MANAGED_SELECTOR,
            **_watch_args(resource_version, seconds),
        )  # fmt: skip
        async for event in _watch(cast(Awaitable[aiohttp.ClientResponse], call)):
            yield event

    async def read_log(self, session_id: str, limit_bytes: int) -> AsyncIterator[bytes]:
        """The container's log (stdout and stderr interleaved), in chunks."""
        try:
            resp: aiohttp.ClientResponse = await self._core.read_namespaced_pod_log(  # type: ignore[assignment]
                names.pod_name(session_id), self.namespace, container=names.CONTAINER_NAME,
                limit_bytes=limit_bytes, _preload_content=False, _request_timeout=60,
            )  # fmt: skip
        except (ApiException, *_TRANSPORT_ERRORS) as exc:
            raise KubeError(f"cannot read the pod log: {_describe(exc)}") from exc
        try:
            async for chunk in resp.content.iter_any():
                yield chunk
        except _TRANSPORT_ERRORS as exc:
            raise KubeError(f"pod log cut off: {_describe(exc)}") from exc
        finally:
            resp.release()

    async def attach_target(self, session_id: str) -> AttachTarget:
        headers: dict[str, str] = {}
        token = await self._cfg.get_api_key_with_prefix("BearerToken")
        if token:
            headers["Authorization"] = token
        return AttachTarget(
            url=attach_url(
                str(self._cfg.host),
                self.namespace,
                names.pod_name(session_id),
                names.CONTAINER_NAME,
            ),
            headers=headers,
            ssl=self._ssl,
            server_hostname=self._cfg.tls_server_name,
        )


def _watch_args(resource_version: str | None, seconds: float) -> dict[str, Any]:
    args: dict[str, Any] = {
        "watch": True,
        "allow_watch_bookmarks": True,
        "timeout_seconds": int(seconds),
        "_preload_content": False,
        "_request_timeout": seconds + 10,
    }
    if resource_version:
        args["resource_version"] = resource_version
    return args


async def _watch(
    call: Awaitable[aiohttp.ClientResponse],
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Raw watch events (type, object) from a ``watch=True`` list call."""
    try:
        resp = await call
    except (ApiException, *_TRANSPORT_ERRORS) as exc:
        raise KubeError(f"cannot watch: {_describe(exc)}") from exc
    try:
        async for line in _lines(resp):
            if not line.strip():
                continue
            event = json.loads(line)
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise WatchExpired(str(obj.get("message")))
                raise KubeError(f"watch failed: {obj.get('code')} {obj.get('message')}")
            yield kind, obj
    finally:
        resp.release()


async def _lines(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for line in resp.content:
            yield line
    except _TRANSPORT_ERRORS as exc:
        raise KubeError(f"watch cut off: {_describe(exc)}") from exc
