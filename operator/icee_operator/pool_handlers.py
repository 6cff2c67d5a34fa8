"""kopf handlers of warm pools: a daemon per SandboxPool, woken by its pods' events.

- SandboxPool exists            -> its daemon keeps it at its size (`pool_controller.keep`)
                                   every POOL_INTERVAL_SECONDS, and at once when woken
- SandboxPool changed (scale)   -> its daemon wakes
- a pool's Pod changed or gone  -> its daemon wakes (a claim starts the refill at once)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, cast

import kopf
from icee_core import names
from icee_core.languages import LanguageConfigError, LanguageRegistry, load_registry

from icee_operator.pool_controller import PoolContext, keep
from icee_operator.pool_kube import PoolKube
from icee_operator.settings import OperatorSettings

SANDBOXPOOLS = (names.GROUP, names.VERSION, names.POOL_PLURAL)
# How often each pool is looked at even without events (max age, missed events).
POOL_INTERVAL_SECONDS = 5.0

logger = logging.getLogger(__name__)


def pool_context(memo: kopf.Memo) -> PoolContext:
    return cast(PoolContext, memo["pools"])


@kopf.on.startup()
async def pools_startup(memo: kopf.Memo, **_: Any) -> None:
    config = cast(OperatorSettings, memo.get("settings") or OperatorSettings())
    try:
        languages = memo.get("languages") or load_registry(config.languages_file)
    except LanguageConfigError as error:
        raise kopf.PermanentError(str(error)) from None
    # kopf logs every event handler's success at INFO: one line per pod event otherwise.
    objects_log = logging.getLogger("kopf.objects")
    if _quiet_pool_events not in objects_log.filters:
        objects_log.addFilter(_quiet_pool_events)
    memo["pools"] = PoolContext(
        settings=config,
        languages=cast(LanguageRegistry, languages),
        kube=cast(PoolKube, await PoolKube.connect(config.namespace)),
    )


def _quiet_pool_events(record: logging.LogRecord) -> bool:
    return not (
        record.levelno <= logging.INFO
        and record.getMessage().startswith(("Handler 'pool_pod_changed'", "Handler 'pool_changed'"))
    )


@kopf.on.cleanup()
async def pools_cleanup(memo: kopf.Memo, **_: Any) -> None:
    await pool_context(memo).kube.close()


@kopf.daemon(*SANDBOXPOOLS, backoff=1.0, cancellation_timeout=5)
async def pool_kept(name: str, stopped: kopf.DaemonStopped, memo: kopf.Memo, **_: Any) -> None:
    ctx = pool_context(memo)
    wakeup = ctx.wakeup(name)
    try:
        while not stopped:
            wakeup.clear()
            try:
                await keep(ctx, name)
            except Exception as error:  # the next pass tries again
                logger.warning("pool %s: %r", name, error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), POOL_INTERVAL_SECONDS)
    finally:
        ctx.wakeups.pop(name, None)


@kopf.on.event(*SANDBOXPOOLS)
async def pool_changed(name: str, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    if type != "DELETED" and name in pool_context(memo).wakeups:
        pool_context(memo).wakeup(name).set()


@kopf.on.event("", "v1", "pods", labels={names.LABEL_POOL: kopf.PRESENT})
async def pool_pod_changed(labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    pool = labels.get(names.LABEL_POOL)
    ctx = pool_context(memo)
    if pool and pool in ctx.wakeups:
        ctx.wakeup(pool).set()
