"""The Kubernetes calls of the pool controller, beside the session ones in `kube`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from icee_core import names
from kubernetes_asyncio.client.exceptions import ApiException

from icee_operator.kube import MERGE_PATCH, Kube


class PoolKube(Kube):
    async def get_pool(self, name: str) -> dict[str, Any] | None:
        try:
            found = await self._custom.get_namespaced_custom_object(
                names.GROUP, names.VERSION, self.namespace, names.POOL_PLURAL, name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return cast(dict[str, Any], found)

    async def list_pools(self) -> list[dict[str, Any]]:
        listed = await self._custom.list_namespaced_custom_object(
            names.GROUP, names.VERSION, self.namespace, names.POOL_PLURAL
        )
        return cast(list[dict[str, Any]], listed.get("items") or [])

    async def set_finalizers(self, name: str, finalizers: list[str]) -> None:
        try:
            await self._custom.patch_namespaced_custom_object(
                names.GROUP,
                names.VERSION,
                self.namespace,
                names.POOL_PLURAL,
                name,
                {"metadata": {"finalizers": finalizers or None}},
                _content_type=MERGE_PATCH,
            )
        except ApiException as error:
            if error.status != 404:
                raise

    async def patch_pool_status(self, name: str, status: Mapping[str, Any]) -> None:
        try:
            await self._custom.patch_namespaced_custom_object_status(
                names.GROUP,
                names.VERSION,
                self.namespace,
                names.POOL_PLURAL,
                name,
                {"status": status},
                _content_type=MERGE_PATCH,
            )
        except ApiException as error:
            if error.status != 404:
                raise

    async def list_pods(self, selector: str) -> list[dict[str, Any]]:
        """Pods matching `selector`, as JSON, straight from the apiserver."""
        listed = await self._core.list_namespaced_pod(self.namespace, label_selector=selector)
        serialized = self._api_client.sanitize_for_serialization(listed)
        return cast(list[dict[str, Any]], serialized.get("items") or [])
