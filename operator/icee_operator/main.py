"""`icee-operator`: run the kopf operator in the sandbox namespace.

With `ICEE_LEADER_LEASE` set (the chart does so for more than one replica), the
process first waits for the Lease (`leader`), answering its liveness probe
meanwhile, runs kopf while it holds it, and exits non-zero if it loses it (its
container restarts as a standby). Without it, the process acts at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import uuid

import kopf
from aiohttp import web
from icee_core.languages import LanguageConfigError, LanguageRegistry, load_registry

from icee_operator import handlers, login, pool_handlers
from icee_operator.kube import Kube
from icee_operator.leader import LeaderElection
from icee_operator.settings import OperatorSettings

logger = logging.getLogger(__name__)

# How long kopf gets to stop after the Lease was lost before the process exits anyway.
STOP_GRACE_SECONDS = 10.0


def run() -> None:
    settings = OperatorSettings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        languages = load_registry(settings.languages_file)
    except LanguageConfigError as error:
        sys.exit(f"icee-operator: {error}")
    # Importing the modules registers their handlers with kopf.
    assert handlers.startup
    assert pool_handlers.pools_startup
    assert login.login
    with contextlib.suppress(asyncio.CancelledError):
        sys.exit(asyncio.run(operate(settings, languages)))


async def operate(settings: OperatorSettings, languages: LanguageRegistry) -> int:
    """Run kopf (as the leader, if elected); the process's exit status."""
    if settings.leader_lease is None:
        await kopf_operator(settings, languages, asyncio.Event())
        return 0
    kube = await Kube.connect(settings.namespace)
    election = LeaderElection(
        kube.client,
        settings.namespace,
        settings.leader_lease,
        identity=f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}",
        lease_seconds=settings.leader_lease_seconds,
        renew_seconds=settings.leader_renew_seconds,
        retry_seconds=settings.leader_retry_seconds,
    )
    # SIGTERM/SIGINT set `stop`, kopf's stop flag, from now on: one that comes while
    # kopf is still starting (before it installs its own handlers) stops it too.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if not await stand_by(election, settings.health_port, stop):
            await election.release()  # in case it was elected at that very moment
            return 0  # asked to stop before it was elected
        keeping = asyncio.create_task(election.keep(), name="leader lease")
        operating = asyncio.create_task(kopf_operator(settings, languages, stop), name="kopf")
        await asyncio.wait({keeping, operating}, return_when=asyncio.FIRST_COMPLETED)
        if operating.done():  # stopped (SIGTERM) or failed: hand over at once
            keeping.cancel()
            await asyncio.gather(keeping, return_exceptions=True)
            await election.release()
            operating.result()
            return 0
        logger.error("leader: lost the lease, stopping")
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(operating, STOP_GRACE_SECONDS)
        return 1
    finally:
        await kube.close()


async def stand_by(election: LeaderElection, health_port: int, stop: asyncio.Event) -> bool:
    """Wait for the Lease (True) or `stop` (False), alive for the liveness probe."""
    health = await serve_health(health_port) if health_port else None
    try:
        acquiring = asyncio.create_task(election.acquire(), name="leader election")
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in (acquiring, stopping):
            task.cancel()
        await asyncio.gather(acquiring, stopping, return_exceptions=True)
        return not stop.is_set()
    finally:
        if health is not None:
            await health.cleanup()  # kopf's liveness endpoint takes the port over


async def serve_health(port: int) -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="standing by")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner


async def kopf_operator(
    settings: OperatorSettings, languages: LanguageRegistry, stop: asyncio.Event
) -> None:
    liveness = f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None
    await kopf.operator(
        clusterwide=False,
        namespaces=[settings.namespace],
        # Never kopf peering: replicas of equal priority would all pause (see `leader`).
        standalone=True,
        liveness_endpoint=liveness,
        stop_flag=stop,
        memo=kopf.Memo(settings=settings, languages=languages),
    )


if __name__ == "__main__":
    run()
