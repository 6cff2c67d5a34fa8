"""Claiming a warm pod (issue 12): the api's side of the warm pools.

Two informers keep, per api process, the warm pods (from the same pod list and
watch as the session pods) and each SandboxPool's current template hash. When a
session's client connects, `WarmPods.claim` picks a ready, unclaimed pod of the
session's language and current template whose pod-level limits fit, and claims
it with ONE conditional write: a merge patch carrying the resourceVersion the
cache saw, which adds the session's label. Two api replicas (or two sessions in
one) racing for the same pod: one write wins, the other gets 409 and tries the
next pod. No pod (pool empty or off, limits that do not fit, caches not in sync):
None, and the session starts cold exactly as before.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from icee_core import names
from icee_core.models import Limits
from icee_core.pools import limits_from_annotations, pod_limits_match
from icee_kube.client import KubeError
from icee_kube.informer import Informer, supervise

from icee_api.session.cluster import Cluster

log = logging.getLogger(__name__)

# Conflicts tolerated per claim before starting cold (each is another api's claim).
MAX_CLAIM_TRIES = 4


@dataclass(frozen=True, slots=True)
class WarmCandidate:
    name: str
    pool: str
    language: str
    template_hash: str
    resource_version: str
    limits: Limits | None
    ready: bool
    claimed: bool
    terminating: bool


def candidate_of(pod: Mapping[str, Any]) -> WarmCandidate:
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    status = pod.get("status") or {}
    ready = status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )
    return WarmCandidate(
        name=str(metadata.get("name") or ""),
        pool=str(labels.get(names.LABEL_POOL) or ""),
        language=str(labels.get(names.LABEL_LANGUAGE) or ""),
        template_hash=str(labels.get(names.LABEL_TEMPLATE_HASH) or ""),
        resource_version=str(metadata.get("resourceVersion") or ""),
        limits=limits_from_annotations(metadata.get("annotations") or {}),
        ready=ready,
        claimed=names.LABEL_SESSION in labels,
        terminating=metadata.get("deletionTimestamp") is not None,
    )


@dataclass(frozen=True, slots=True)
class PoolTemplate:
    language: str
    template_hash: str


def pool_template_of(pool: Mapping[str, Any]) -> PoolTemplate:
    return PoolTemplate(
        language=str((pool.get("spec") or {}).get("language") or ""),
        template_hash=str((pool.get("status") or {}).get("templateHash") or ""),
    )


def pick(
    candidates: Iterable[WarmCandidate],
    templates: Mapping[str, PoolTemplate],
    language: str,
    limits: Limits,
    rng: random.Random | None = None,
) -> list[WarmCandidate]:
    """The pods a session may claim, in the order to try them (shuffled, so that
    api replicas claiming at the same moment mostly try different pods)."""
    fit = []
    for c in candidates:
        template = templates.get(c.pool)
        if (
            c.ready
            and not c.claimed
            and not c.terminating
            and c.resource_version
            and c.language == language
            and template is not None
            and template.language == language
            and template.template_hash
            and c.template_hash == template.template_hash
            and c.limits is not None
            and pod_limits_match(limits, c.limits)
        ):
            fit.append(c)
    (rng or random).shuffle(fit)
    return fit


def _warm_pod_name(obj: Mapping[str, Any]) -> str | None:
    metadata = obj.get("metadata") or {}
    if names.LABEL_POOL not in (metadata.get("labels") or {}):
        return None
    return str(metadata.get("name") or "") or None


def _pool_name(obj: Mapping[str, Any]) -> str | None:
    return str((obj.get("metadata") or {}).get("name") or "") or None


class _Index:
    """Every warm pod the pod informer saw (an informer observer)."""

    def __init__(self) -> None:
        self.pods: dict[str, WarmCandidate] = {}
        self._relisted: dict[str, WarmCandidate] | None = None

    def begin_relist(self) -> None:
        self._relisted = {}

    def apply(self, key: str, obj: dict[str, Any] | None) -> None:
        target = self._relisted if self._relisted is not None else self.pods
        if obj is None:
            target.pop(key, None)
        else:
            target[key] = candidate_of(obj)

    def end_relist(self) -> None:
        if self._relisted is not None:
            self.pods, self._relisted = self._relisted, None


class WarmPods:
    """The warm pod and pool caches, and the claim; ``start()`` in the app's lifespan."""

    def __init__(self, cluster: Cluster, watch_seconds: float = 290.0) -> None:
        self._cluster = cluster
        # Optional: without the RBAC (or the CRD) the api starts every session cold.
        self.pods: Informer[bool] = Informer(
            "warm pod",
            cluster.list_warm_pods,
            cluster.watch_warm_pods,
            _warm_pod_name,
            lambda _: True,
            optional=True,
            watch_seconds=watch_seconds,
        )
        self.pools: Informer[PoolTemplate] = Informer(
            "sandboxpool",
            cluster.list_pools,
            cluster.watch_pools,
            _pool_name,
            pool_template_of,
            optional=True,
            watch_seconds=watch_seconds,
        )
        self._index = _Index()
        self.pods.observers.append(self._index)
        self._pool_names: set[str] = set()
        self.pools.observers.append(_Names(self._pool_names))

    def start(self) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(supervise(self.pods), name="informer warm pods"),
            asyncio.create_task(supervise(self.pools), name="informer sandboxpools"),
        ]

    def candidates(self, language: str, limits: Limits) -> list[WarmCandidate]:
        templates = {
            name: t for name in self._pool_names if (t := self.pools.get(name)) is not None
        }
        return pick(self._index.pods.values(), templates, language, limits)

    async def claim(self, session_id: str, language: str, limits: Limits) -> str | None:
        """Claim a warm pod for the session: its name, or None to start cold."""
        if not (self.pods.synced and self.pools.synced):
            return None
        stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        for candidate in self.candidates(language, limits)[:MAX_CLAIM_TRIES]:
            try:
                await self._cluster.claim_pod(
                    candidate.name, candidate.resource_version, session_id, stamp
                )
            except KubeError as exc:
                self._index.pods.pop(candidate.name, None)
                if exc.status in (404, 409):
                    continue  # taken or gone meanwhile: the next one
                log.warning("session %s: cannot claim %s: %s", session_id, candidate.name, exc)
                return None
            self._index.pods.pop(candidate.name, None)
            log.info("session %s: claimed warm pod %s", session_id, candidate.name)
            return candidate.name
        return None


class _Names:
    """The set of pool names the pool informer holds (an informer observer)."""

    def __init__(self, into: set[str]) -> None:
        self._names = into
        self._relisted: set[str] | None = None

    def begin_relist(self) -> None:
        self._relisted = set()

    def apply(self, key: str, obj: dict[str, Any] | None) -> None:
        target = self._relisted if self._relisted is not None else self._names
        if obj is None:
            target.discard(key)
        else:
            target.add(key)

    def end_relist(self) -> None:
        if self._relisted is not None:
            self._names.clear()
            self._names.update(self._relisted)
            self._relisted = None
