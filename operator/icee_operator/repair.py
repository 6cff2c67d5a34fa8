"""Level-triggered repair: what the operator does on a timer, not on an event.

Events can be missed or their handling can fail (kopf drops a failed
``@kopf.on.event``): a pod's final event whose status write was refused would leave
the session ``Running`` with its pod alive. So every CodeSession is also listed
periodically and brought in line with what exists now (``keep_repairing``), and the
execution deadline is a timer of the operator's own (``arm_execution_deadline``),
not only the kubelet's ``activeDeadlineSeconds``, which it checks on its own sync.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from icee_core.models import Phase, Reason, Timeouts

from icee_operator.observation import Observation
from icee_operator.sessions import Context, advance, end, reconcile, status_of

logger = logging.getLogger(__name__)

_NOT_FINAL = frozenset({None, Phase.PENDING, Phase.RUNNING})


async def keep_repairing(ctx: Context, interval: float) -> None:
    """Every ``interval`` s, repair every CodeSession (one list, then one by one)."""
    while True:
        await asyncio.sleep(interval)
        try:
            sessions = await ctx.kube.list_sessions()
        except Exception as error:
            logger.warning("repair: cannot list the sessions: %r", error)
            continue
        for body in sessions:
            try:
                await repair(ctx, body)
            except Exception as error:  # the next round tries again
                name = (body.get("metadata") or {}).get("name")
                logger.warning("session %s: repair failed: %r", name, error)


async def repair(ctx: Context, body: Mapping[str, Any]) -> None:
    """Bring one session in line with its pod, its deadline and its leftovers."""
    name = body["metadata"]["name"]
    status = status_of(body)
    if status.is_final:
        if name not in ctx.cleaned:
            await end(ctx, name, status)  # its pod (and code) may have outlived it
        return
    deadline = execution_deadline(ctx, body)
    if deadline is not None and datetime.now(UTC) >= deadline:
        await time_limit(ctx, name, _snapshot(body))
        return
    arm_execution_deadline(ctx, body)
    await reconcile(ctx, body)


def arm_execution_deadline(ctx: Context, body: Mapping[str, Any]) -> None:
    """End a running session at its execution deadline (re-arming is harmless)."""
    deadline = execution_deadline(ctx, body)
    if deadline is None:
        return
    name = body["metadata"]["name"]
    seen = _snapshot(body)

    async def expire() -> None:
        await time_limit(ctx, name, seen)

    ctx.deadlines.arm(f"execution/{name}", deadline, expire)


def _snapshot(body: Mapping[str, Any]) -> dict[str, Any]:
    """What a status write needs of the object as it was seen (not its code).

    The write carries its resourceVersion: if the session changed since, it
    conflicts and is computed again from a fresh read. Usually nothing changed, and
    the deadline costs one call to a (possibly loaded) API server instead of two.
    """
    metadata = body.get("metadata") or {}
    return {
        "metadata": {k: metadata.get(k) for k in ("name", "resourceVersion", "creationTimestamp")},
        "status": dict(body.get("status") or {}),
    }


def execution_deadline(ctx: Context, body: Mapping[str, Any]) -> datetime | None:
    """When a running session's execution time is up (None: not running yet)."""
    status = status_of(body)
    if status.phase is not Phase.RUNNING or status.started_at is None:
        return None
    # Read on its own, not with the whole spec: a field this version does not know
    # (written by a newer api) must not cost the session its deadline.
    timeouts = (body.get("spec") or {}).get("timeouts") or {}
    seconds = timeouts.get("executionSeconds")
    if not isinstance(seconds, int) or seconds < 1:
        seconds = Timeouts().execution_seconds
    seconds = min(seconds, ctx.settings.maxima.timeouts.execution_seconds)
    return status.started_at + timedelta(seconds=seconds)


async def time_limit(ctx: Context, name: str, seen: Mapping[str, Any] | None = None) -> None:
    observed = Observation(
        Phase.TERMINATED, Reason.TIME_LIMIT_EXCEEDED, message="the execution time limit was reached"
    )
    logger.info("session %s: execution time is up", name)
    await advance(ctx, name, observed, seen, only_from=_NOT_FINAL)


async def give_up(ctx: Context, name: str, reason: Reason, message: str) -> None:
    """A handler failed for good: end the session with a stated reason if it can."""
    logger.error("session %s: giving up: %s", name, message)
    try:
        await advance(
            ctx, name, Observation(Phase.TERMINATED, reason, message=message[:1024]),
            only_from=_NOT_FINAL,
        )  # fmt: skip
    except Exception as error:  # the periodic repair tries again
        logger.error("session %s: could not record the failure: %s", name, error)
