"""The Kubernetes calls the api makes for sessions, bound to one namespace.

The api only ever creates CodeSessions, reads them and their pods, patches
``spec.start`` and ``spec.termination`` and claims warm pods; the operator owns
status and pod deletion (docs/design.md). The HTTP is :class:`icee_kube.client.KubeClient`'s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
from icee_core import names
from icee_core.models import FINAL_PHASES, CodeSessionSpec, codesession_manifest
from icee_kube.attach import AttachTarget, attach_target
from icee_kube.client import MERGE_PATCH, KubeClient, KubeError, QuotaExceeded, watch_query
from icee_kube.paths import custom_path, events_path, pods_path

# The kubelet's "Started" event: StartContainer returned, the container runs. It is
# posted at once, while the pod status says running only after the kubelet's next
# relist (PLEG, every second) and a status write.
STARTED_EVENTS = "involvedObject.kind=Pod,reason=Started"
# Warm pods: the pods of every SandboxPool, claimed or not.
WARM = f"{names.MANAGED_SELECTOR},{names.LABEL_POOL}"


def codesessions_path(namespace: str, name: str | None = None) -> str:
    return custom_path(names.GROUP, names.VERSION, namespace, names.PLURAL, name)


def pools_path(namespace: str) -> str:
    return custom_path(names.GROUP, names.VERSION, namespace, names.POOL_PLURAL)


class Cluster:
    """The session calls of the api, bound to one namespace."""

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
        return cls(KubeClient.from_kubeconfig(kubeconfig_path, max_connections), namespace)

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
        except QuotaExceeded:
            raise
        except KubeError as exc:
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

    # -- warm pools (issue 12; icee_api.session.warm) --

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
        return attach_target(
            self.kube, self.namespace, self.pod_name(session_id), names.CONTAINER_NAME
        )
