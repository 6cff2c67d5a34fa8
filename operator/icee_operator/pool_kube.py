"""The Kubernetes calls of the pool controller, beside the session ones in `kube`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from icee_core import names
from icee_kube.client import MERGE_PATCH, KubeError
from icee_kube.paths import custom_path

from icee_operator.kube import Kube


class PoolKube(Kube):
    def _pools(self, name: str | None = None, sub: str | None = None) -> str:
        return custom_path(names.GROUP, names.VERSION, self.namespace, names.POOL_PLURAL, name, sub)

    async def _patch_unless_gone(self, path: str, patch: Mapping[str, Any]) -> None:
        try:
            await self.client.call("PATCH", path, body=patch, content_type=MERGE_PATCH)
        except KubeError as error:
            if error.status != 404:
                raise

    async def get_pool(self, name: str) -> dict[str, Any] | None:
        return await self._get(self._pools(name))

    async def list_pools(self) -> list[dict[str, Any]]:
        items, _ = await self.client.list_all(self._pools())
        return items

    async def set_finalizers(self, name: str, finalizers: list[str]) -> None:
        patch = {"metadata": {"finalizers": finalizers or None}}
        await self._patch_unless_gone(self._pools(name), patch)

    async def patch_pool_status(self, name: str, status: Mapping[str, Any]) -> None:
        await self._patch_unless_gone(self._pools(name, "status"), {"status": status})

    async def list_pods(self, selector: str) -> list[dict[str, Any]]:
        """Pods matching `selector`, as JSON, straight from the apiserver."""
        items, _ = await self.client.list_all(self._pods(), {"labelSelector": selector})
        return items
