"""The few Kubernetes calls the operator makes itself (kopf does the watching).

On the same client as the api (:class:`icee_kube.client.KubeClient`); objects
travel as plain JSON dicts, as the API serves them. Errors other than the ones
named here are :class:`icee_kube.client.KubeError` (kopf retries the handler).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from icee_core import names
from icee_kube.client import MERGE_PATCH, KubeClient, KubeError, QuotaExceeded
from icee_kube.paths import core_path, custom_path, leases_path

__all__ = ["MERGE_PATCH", "Conflict", "Gone", "Kube", "QuotaExceeded"]


class Conflict(Exception):
    """The object changed since it was read (HTTP 409)."""


class Gone(Exception):
    """The object no longer exists (HTTP 404)."""


class Kube:
    def __init__(self, client: KubeClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    @classmethod
    async def connect(cls, namespace: str) -> Kube:
        """In-cluster service account when in a pod, else the kubeconfig."""
        return cls(KubeClient.from_kubeconfig(None), namespace)

    async def close(self) -> None:
        await self.client.close()

    def _sessions(self, name: str | None = None, sub: str | None = None) -> str:
        return custom_path(names.GROUP, names.VERSION, self.namespace, names.PLURAL, name, sub)

    def _pods(self, name: str | None = None, sub: str | None = None) -> str:
        return core_path(self.namespace, "pods", name, sub)

    async def _get(self, path: str) -> dict[str, Any] | None:
        try:
            return await self.client.call("GET", path)
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    async def _delete(self, path: str, options: Mapping[str, Any]) -> None:
        body = {"apiVersion": "v1", "kind": "DeleteOptions", **options}
        try:
            await self.client.call("DELETE", path, body=body)
        except KubeError as error:
            if error.status != 404:
                raise

    # CodeSessions

    async def get_session(self, name: str) -> dict[str, Any] | None:
        return await self._get(self._sessions(name))

    async def list_sessions(self) -> list[dict[str, Any]]:
        """Every CodeSession in the namespace, as JSON."""
        items, _ = await self.client.list_all(self._sessions())
        return items

    async def patch_session_status(
        self, name: str, status: Mapping[str, Any], resource_version: str
    ) -> None:
        """Merge `status` in, only if the object is still at `resource_version`."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        try:
            await self.client.call(
                "PATCH", self._sessions(name, "status"), body=body, content_type=MERGE_PATCH
            )
        except KubeError as error:
            if error.status == 409:
                raise Conflict(name) from None
            if error.status == 404:
                raise Gone(name) from None
            raise

    async def delete_session(self, name: str) -> None:
        await self._delete(self._sessions(name), {"propagationPolicy": "Background"})

    # Stream claims of the api replicas (icee_core.claims)

    def _leases(self, name: str | None = None) -> str:
        return leases_path(self.namespace, name)

    async def list_leases(self, label_selector: str) -> list[dict[str, Any]]:
        items, _ = await self.client.list_all(self._leases(), {"labelSelector": label_selector})
        return items

    async def delete_lease(self, name: str, uid: str) -> None:
        """Delete the lease if it is still the object with ``uid`` (gone: fine)."""
        try:
            await self._delete(self._leases(name), {"preconditions": {"uid": uid}})
        except KubeError as error:
            if error.status != 409:  # replaced meanwhile: not ours to delete
                raise

    # Owned objects

    async def create_pod(self, body: Mapping[str, Any]) -> None:
        """Create the pod (one that exists already is fine); QuotaExceeded if refused."""
        try:
            await self.client.call("POST", self._pods(), body=body)
        except QuotaExceeded:
            raise
        except KubeError as error:
            if error.status != 409:
                raise

    async def get_pod(self, name: str) -> dict[str, Any] | None:
        """The pod as JSON, or None when there is none."""
        return await self._get(self._pods(name))

    async def patch_pod(self, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        """Merge `patch` into the pod (a resourceVersion in it is a precondition).

        None when the pod is gone; Conflict when it changed since that version.
        """
        try:
            return await self.client.call(
                "PATCH", self._pods(name), body=patch, content_type=MERGE_PATCH
            )
        except KubeError as error:
            if error.status == 404:
                return None
            if error.status == 409:
                raise Conflict(name) from None
            raise

    async def delete_pod(self, name: str, grace_seconds: int) -> None:
        await self._delete(self._pods(name), {"gracePeriodSeconds": grace_seconds})

    async def read_log(
        self,
        name: str,
        max_bytes: int,
        *,
        tail_lines: int | None = None,
        limit_bytes: int | None = None,
    ) -> bytes:
        """The sandbox container's log (or its last lines), at most ``max_bytes`` of it.

        Empty when the pod or its log is gone.
        """
        query = {"container": names.CONTAINER_NAME}
        if tail_lines is not None:
            query["tailLines"] = str(tail_lines)
        if limit_bytes is not None:
            query["limitBytes"] = str(limit_bytes)
        try:
            return await self.client.read(self._pods(name, "log"), query, max_bytes)
        except KubeError as error:
            if error.status in (400, 404):
                return b""
            raise
