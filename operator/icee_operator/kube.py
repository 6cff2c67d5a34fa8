"""The few Kubernetes calls the operator makes itself (kopf does the watching).

Objects travel as plain JSON dicts, as the API serves them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, cast

from icee_core import names
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

MERGE_PATCH = "application/merge-patch+json"


class Conflict(Exception):
    """The object changed since it was read (HTTP 409)."""


class Gone(Exception):
    """The object no longer exists (HTTP 404)."""


class QuotaExceeded(Exception):
    """The namespace's ResourceQuota refused a new object (HTTP 403 "exceeded quota")."""


class Kube:
    def __init__(self, api_client: Any, namespace: str) -> None:
        self._api_client = api_client
        # Untyped on purpose: the stubs want model objects, we pass and get JSON dicts.
        self._core: Any = client.CoreV1Api(api_client)
        self._custom: Any = client.CustomObjectsApi(api_client)
        self.namespace = namespace

    @classmethod
    async def connect(cls, namespace: str) -> Kube:
        """In-cluster service account when in a pod, else the kubeconfig."""
        configuration = client.Configuration()
        if "KUBERNETES_SERVICE_HOST" in os.environ:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            await config.load_kube_config(client_configuration=configuration)
        return cls(client.ApiClient(configuration), namespace)

    @property
    def api_client(self) -> Any:
        return self._api_client

    async def close(self) -> None:
        await self._api_client.close()

    # CodeSessions

    async def get_session(self, name: str) -> dict[str, Any] | None:
        try:
            found = await self._custom.get_namespaced_custom_object(
                names.GROUP, names.VERSION, self.namespace, names.PLURAL, name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return cast(dict[str, Any], found)

    async def list_sessions(self) -> list[dict[str, Any]]:
        """Every CodeSession in the namespace, as JSON."""
        found = await self._custom.list_namespaced_custom_object(
            names.GROUP, names.VERSION, self.namespace, names.PLURAL
        )
        return [item for item in cast(dict[str, Any], found).get("items") or []]

    async def patch_session_status(
        self, name: str, status: Mapping[str, Any], resource_version: str
    ) -> None:
        """Merge `status` in, only if the object is still at `resource_version`."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        try:
            await self._custom.patch_namespaced_custom_object_status(
                names.GROUP,
                names.VERSION,
                self.namespace,
                names.PLURAL,
                name,
                body,
                _content_type=MERGE_PATCH,
            )
        except ApiException as error:
            if error.status == 409:
                raise Conflict(name) from None
            if error.status == 404:
                raise Gone(name) from None
            raise

    async def delete_session(self, name: str) -> None:
        await _ignore_missing(
            self._custom.delete_namespaced_custom_object(
                names.GROUP,
                names.VERSION,
                self.namespace,
                names.PLURAL,
                name,
                propagation_policy="Background",
            )
        )

    # Owned objects

    async def create_pod(self, body: Mapping[str, Any]) -> None:
        await _ignore_existing(self._core.create_namespaced_pod(self.namespace, body))

    async def get_pod(self, name: str) -> dict[str, Any] | None:
        """The pod as JSON, or None when there is none."""
        try:
            pod = await self._core.read_namespaced_pod(name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return cast(dict[str, Any], self._api_client.sanitize_for_serialization(pod))

    async def patch_pod(self, name: str, patch: Mapping[str, Any]) -> dict[str, Any] | None:
        """Merge `patch` into the pod (a resourceVersion in it is a precondition).

        None when the pod is gone; Conflict when it changed since that version.
        """
        try:
            pod = await self._core.patch_namespaced_pod(
                name, self.namespace, patch, _content_type=MERGE_PATCH
            )
        except ApiException as error:
            if error.status == 404:
                return None
            if error.status == 409:
                raise Conflict(name) from None
            raise
        return cast(dict[str, Any], self._api_client.sanitize_for_serialization(pod))

    async def delete_pod(self, name: str, grace_seconds: int) -> None:
        await _ignore_missing(
            self._core.delete_namespaced_pod(
                name, self.namespace, grace_period_seconds=grace_seconds
            )
        )

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
        kwargs: dict[str, Any] = {"container": names.CONTAINER_NAME}
        if tail_lines is not None:
            kwargs["tail_lines"] = tail_lines
        if limit_bytes is not None:
            kwargs["limit_bytes"] = limit_bytes
        try:
            resp = await self._core.read_namespaced_pod_log(
                name, self.namespace, _preload_content=False, **kwargs
            )
        except ApiException as error:
            if error.status in (400, 404):
                return b""
            raise
        try:
            data = bytearray()
            while len(data) < max_bytes:
                chunk = await resp.content.read(max_bytes - len(data))
                if not chunk:
                    break
                data += chunk
            return bytes(data)
        finally:
            resp.release()


async def _ignore_missing(call: Any) -> None:
    try:
        await call
    except ApiException as error:
        if error.status != 404:
            raise


async def _ignore_existing(call: Any) -> None:
    try:
        await call
    except ApiException as error:
        if error.status == 403 and "exceeded quota" in str(error.body or ""):
            raise QuotaExceeded(str(error.body)[:500]) from None
        if error.status != 409:
            raise
