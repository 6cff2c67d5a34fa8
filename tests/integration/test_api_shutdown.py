"""SIGTERM: refuse new sessions, let running ones finish, then ServerShutdown."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import ApiServer, StartApi

pytestmark = pytest.mark.cluster


async def test_graceful_shutdown(start_api: StartApi) -> None:
    api: ApiServer = start_api(shutdown_grace_seconds="4")
    short = "import time\ntime.sleep(1)\nprint('made it')\n"
    async with api.live(short) as quick, api.live("input()") as stuck:
        await quick.until_state("running")
        await stuck.until_state("running")
        sent = time.monotonic()
        api.process.popen.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        async with api.http() as http:
            r = await http.post("/session", json={"language": "python", "code": "print(1)"})
            assert r.status_code == 503
            assert (await http.get("/readyz")).status_code == 503
        quick_t, stuck_t = await asyncio.gather(quick.finish(), stuck.finish())
    assert (quick_t.stdout, quick_t.final["reason"]) == ("made it\n", "Completed")
    assert stuck_t.final["state"] == "terminated"
    assert stuck_t.final["reason"] == "ServerShutdown"
    assert time.monotonic() - sent >= 4
    # uvicorn re-raises the signal once it has shut down cleanly.
    assert api.process.popen.wait(30) in (0, -signal.SIGTERM)
