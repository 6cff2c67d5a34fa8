"""Sessions whose streaming api replica died: ended ``ClientGone`` (icee_core.claims).

An api replica killed mid-stream cannot ask for anything: its client's socket is
gone, the program may wait for input forever, and only the execution deadline
would end it, minutes later and with the wrong reason. Every ``interval`` s the
operator lists the icee leases (one call, tiny objects) and ends each session
whose stream lease's holder stopped renewing its replica lease. Worst case from
the kill to the final status: lease duration + 2 x interval (15 + 10 s by default:
the last renewal is seen at the next check, its expiry at the first check after
the duration), plus the status write.
"""

from __future__ import annotations

import asyncio
import logging
import time

from icee_core.claims import LEASES_SELECTOR, Orphan, ReplicaLiveness
from icee_core.models import Phase, Reason

from icee_operator.observation import Observation
from icee_operator.sessions import Context, advance

logger = logging.getLogger(__name__)

_NOT_FINAL = frozenset({None, Phase.PENDING, Phase.RUNNING})


async def keep_ending_orphans(ctx: Context, interval: float) -> None:
    liveness = ReplicaLiveness()
    while True:
        await asyncio.sleep(interval)
        try:
            leases = await ctx.kube.list_leases(LEASES_SELECTOR)
        except Exception as error:
            logger.warning("claims: cannot list the leases: %r", error)
            continue
        for orphan in liveness.orphans(leases, time.monotonic()):
            try:
                await end_orphan(ctx, orphan)
            except Exception as error:  # the next round tries again
                logger.warning("session %s: cannot end it: %r", orphan.session_id, error)
        for stale in liveness.stale:
            logger.info("claims: deleting the dead api replica's lease %s", stale.name)
            try:
                await ctx.kube.delete_lease(stale.name, stale.uid)
            except Exception as error:
                logger.warning("claims: cannot delete %s: %r", stale.name, error)


async def end_orphan(ctx: Context, orphan: Orphan) -> None:
    """End the session (unless it ended already), then drop its claim."""
    logger.info("session %s: %s", orphan.session_id, orphan.why)
    observed = Observation(
        Phase.TERMINATED, Reason.CLIENT_GONE, message=f"{orphan.why}; its client is gone"
    )
    await advance(ctx, orphan.session_id, observed, only_from=_NOT_FINAL)
    await ctx.kube.delete_lease(orphan.lease.name, orphan.lease.uid)
