"""Warm pools, the acting part: keep one SandboxPool at its size (`keep`).

Level-triggered: each run reads the pool and its pods as they are now and
creates or deletes pods towards `pool.plan`; a daemon per pool runs it every
few seconds and at once when one of the pool's pods changes (a claim, a pod
that became ready or went away), so a claimed pod is replaced immediately.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from icee_core import names
from icee_core.languages import LanguageRegistry
from pydantic import ValidationError

from icee_operator.pool import (
    PoolSpec,
    build_warm_pod,
    plan,
    pool_selector,
    template_hash,
    warm_pod_of,
)
from icee_operator.pool_kube import PoolKube
from icee_operator.settings import OperatorSettings

logger = logging.getLogger(__name__)

KOPF_FINALIZER = f"{names.GROUP}/operator"


@dataclass
class PoolContext:
    settings: OperatorSettings
    languages: LanguageRegistry
    kube: PoolKube
    # One wake-up per pool: set by events of its pods, waited on by its daemon.
    wakeups: dict[str, asyncio.Event] = field(default_factory=dict)

    def wakeup(self, pool: str) -> asyncio.Event:
        return self.wakeups.setdefault(pool, asyncio.Event())


async def keep(ctx: PoolContext, name: str) -> None:
    """One level-triggered pass over pool `name`."""
    body = await ctx.kube.get_pool(name)
    if body is None:
        return
    finalizers = (body.get("metadata") or {}).get("finalizers") or []
    if KOPF_FINALIZER in finalizers:
        # An earlier version's kopf daemon added it; it would block the pool's deletion.
        await ctx.kube.set_finalizers(name, [f for f in finalizers if f != KOPF_FINALIZER])
    if (body.get("metadata") or {}).get("deletionTimestamp"):
        return  # its pods go with it (owner references)
    try:
        spec = PoolSpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        await ctx.kube.patch_pool_status(name, {"message": f"invalid spec: {error}"[:1024]})
        return
    if spec.language not in ctx.languages:
        spec = spec.model_copy(update={"replicas": 0})
        message = f"unknown language {spec.language!r}: no warm pods"
    else:
        message = ""
    language = ctx.languages.get(spec.language) if not message else None
    current = template_hash(language, ctx.settings) if language is not None else ""
    pods = [warm_pod_of(p) for p in await ctx.kube.list_pods(pool_selector(name))]
    todo = plan(spec, current, pods, datetime.now(UTC))
    for pod_name in todo.delete:
        logger.info("pool %s: replacing %s", name, pod_name)
        await ctx.kube.delete_pod(pod_name, ctx.settings.termination_grace_seconds)
    if language is not None and todo.create > 0:
        new = [build_warm_pod(name, spec, language, ctx.settings, body) for _ in range(todo.create)]
        await asyncio.gather(*(ctx.kube.create_pod(pod) for pod in new))
        logger.info("pool %s: %d warm pod(s) started", name, todo.create)
    status = {
        "replicas": todo.replicas + max(todo.create, 0),
        "ready": todo.ready,
        "inUse": todo.in_use,
        "templateHash": current,
        "selector": pool_selector(name),
        "message": message,
    }
    if status != {k: (body.get("status") or {}).get(k) for k in status}:
        await ctx.kube.patch_pool_status(name, status)
