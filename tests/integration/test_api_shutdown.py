"""SIGTERM: refuse new sessions, let running ones finish, then ServerShutdown."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from conftest import kubectl

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


@pytest.fixture
def no_operator_namespace(kubeconfig: str) -> Iterator[str]:
    """A namespace no operator serves: nothing will ever write a final status there."""
    ns = f"icee-it-noop-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", ns)
    try:
        yield ns
    finally:
        kubectl("delete", "codesessions", "--all", "-n", ns, "--wait=false", check=False)
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


async def test_shutdown_without_a_final_status_still_tells_the_client(
    start_api: StartApi, no_operator_namespace: str
) -> None:
    api: ApiServer = start_api(
        namespace=no_operator_namespace,
        shutdown_grace_seconds="1",
        final_status_timeout_seconds="2",
    )
    async with api.live("print(1)") as session:
        await session.until_state("pending")
        api.process.popen.send_signal(signal.SIGTERM)
        transcript = await session.finish(within=30)
    # No operator answered the ServerShutdown request: the api said it itself.
    assert transcript.final["state"] == "terminated", transcript.messages
    assert transcript.final["reason"] == "ServerShutdown"
    assert transcript.states == ["pending", "terminated"]
    assert api.process.popen.wait(30) in (0, -signal.SIGTERM)


async def test_a_stopping_api_keeps_answering_for_its_minimum_time(start_api: StartApi) -> None:
    # Nothing to drain, yet kube-proxy may still send connections for a moment: they
    # get answers (503 for new sessions), not a closed port.
    api: ApiServer = start_api(shutdown_min_seconds="3")
    sent = time.monotonic()
    api.process.popen.send_signal(signal.SIGTERM)
    await asyncio.sleep(1)
    async with api.http() as http:
        r = await http.post("/session", json={"language": "python", "code": "print(1)"})
        assert r.status_code == 503
        assert (await http.get("/healthz")).status_code == 200
    assert api.process.popen.wait(30) in (0, -signal.SIGTERM)
    assert time.monotonic() - sent >= 3
