"""kopf handlers of warm pools: one loop keeps every SandboxPool, woken by events.

- operator running               -> `run_pools` keeps each pool at its size
                                    (`pool_controller.keep`) every POOL_INTERVAL_SECONDS
                                    and at once when woken
- SandboxPool changed (scale)    -> wake
- a pool's Pod changed or gone   -> wake (a claim starts the refill at once)

A plain task rather than a kopf daemon or timer per pool: those put a finalizer
on the pool, which would block its deletion (and `helm uninstall`, and the
namespace's) whenever the operator is gone first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, cast

import kopf
from icee_core import names
from icee_core.languages import LanguageRegistry

from icee_operator.pool_controller import PoolContext, keep
from icee_operator.pool_kube import PoolKube
from icee_operator.settings import OperatorSettings

SANDBOXPOOLS = (names.GROUP, names.VERSION, names.POOL_PLURAL)
# How often every pool is looked at even without events (max age, missed events).
POOL_INTERVAL_SECONDS = 5.0

logger = logging.getLogger(__name__)


def pool_context(memo: kopf.Memo) -> PoolContext:
    return cast(PoolContext, memo["pools"])


@kopf.on.startup()
async def pools_startup(memo: kopf.Memo, **_: Any) -> None:
    config = cast(OperatorSettings, memo["settings"])  # main.py read them
    languages = cast(LanguageRegistry, memo["languages"])
    # kopf logs every event handler's success at INFO: one line per pod event otherwise.
    objects_log = logging.getLogger("kopf.objects")
    if _quiet_pool_events not in objects_log.filters:
        objects_log.addFilter(_quiet_pool_events)
    ctx = PoolContext(
        settings=config,
        languages=languages,
        kube=cast(PoolKube, await PoolKube.connect(config.namespace)),
    )
    memo["pools"] = ctx
    memo["pools_task"] = asyncio.create_task(run_pools(ctx), name="warm pools")


def _quiet_pool_events(record: logging.LogRecord) -> bool:
    return not (
        record.levelno <= logging.INFO
        and record.getMessage().startswith(("Handler 'pool_pod_changed'", "Handler 'pool_changed'"))
    )


@kopf.on.cleanup()
async def pools_cleanup(memo: kopf.Memo, **_: Any) -> None:
    task = cast(asyncio.Task[None], memo["pools_task"])
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await pool_context(memo).kube.close()


async def run_pools(ctx: PoolContext) -> None:
    """Keep every pool, until cancelled; a failure is logged and tried again."""
    wakeup = ctx.wakeup("")
    while True:
        wakeup.clear()
        try:
            for pool in await ctx.kube.list_pools():
                name = pool["metadata"]["name"]
                try:
                    await keep(ctx, name)
                except Exception as error:  # the next pass tries again
                    logger.warning("pool %s: %r", name, error)
        except Exception as error:
            logger.warning("warm pools: %r", error)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), POOL_INTERVAL_SECONDS)


@kopf.on.event(*SANDBOXPOOLS)
async def pool_changed(memo: kopf.Memo, **_: Any) -> None:
    pool_context(memo).wakeup("").set()


@kopf.on.event("", "v1", "pods", labels={names.LABEL_POOL: kopf.PRESENT})
async def pool_pod_changed(memo: kopf.Memo, **_: Any) -> None:
    pool_context(memo).wakeup("").set()
