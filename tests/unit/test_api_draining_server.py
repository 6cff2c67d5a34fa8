"""The api's signal handling while it drains (no cluster: the drain is a stub)."""

import asyncio
import signal
from types import SimpleNamespace
from typing import Any

import uvicorn
from icee_api.main import DrainingServer


class StuckLive:
    """A drain that lasts until the test ends (streams still running)."""

    def __init__(self) -> None:
        self.drains = 0

    async def drain(self, grace: float, settle: float) -> None:
        self.drains += 1
        await asyncio.Event().wait()


def server() -> tuple[DrainingServer, StuckLive]:
    live = StuckLive()
    settings = SimpleNamespace(
        shutdown_grace_seconds=30.0, final_status_timeout_seconds=30.0, shutdown_min_seconds=0.0
    )
    services: Any = SimpleNamespace(live=live, settings=settings)
    config = uvicorn.Config(lambda scope, receive, send: None)
    s = DrainingServer(config, services)
    s.started = True
    return s, live


async def test_a_repeated_sigterm_does_not_cut_the_drain_short() -> None:
    # The kubelet sends SIGTERM again when it restarts while the pod terminates.
    s, live = server()
    s.handle_exit(signal.SIGTERM, None)
    await asyncio.sleep(0)
    s.handle_exit(signal.SIGTERM, None)
    await asyncio.sleep(0)
    assert live.drains == 1
    assert not s.should_exit
    # A second Ctrl-C still stops at once.
    s.handle_exit(signal.SIGINT, None)
    assert s.should_exit
    assert s._drain is not None
    s._drain.cancel()
