"""More than one api replica: any replica serves any session; the claim is in the cluster.

Real api processes (no session affinity between them, as behind a Service) and the
real operator: a POST on one and the WebSocket on another; a second client refused
on either; a replica killed with SIGKILL while it streams, or after it took a POST
that nobody connected to, does not strand the session.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import TYPE_CHECKING

import pytest
from conftest import kubectl
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

if TYPE_CHECKING:
    from conftest import ApiServer, StartApi

pytestmark = pytest.mark.cluster

ECHO = "import sys\nprint('ready', flush=True)\nprint(sys.stdin.readline().upper(), end='')\n"
# Reads nothing: the end of its stdin (its streaming replica died) does not end it.
SLEEPER = "import time\nprint('ready', flush=True)\ntime.sleep(600)\n"
# The killed replica's lease, short so the test is quick; the operator checks every 5 s.
LEASE_SECONDS = 6
CLAIMS_CHECK_SECONDS = 5


@pytest.fixture(scope="module")
def replicas(start_api: StartApi) -> tuple[ApiServer, ApiServer]:
    return start_api(), start_api()


def stream_lease(namespace: str, session_id: str) -> dict[str, object] | None:
    out = kubectl(
        "get", "lease", f"stream-{session_id}", "-n", namespace, "-o", "json",
        "--ignore-not-found",
    )  # fmt: skip
    return json.loads(out) if out.strip() else None


async def test_post_on_one_replica_stream_on_the_other(
    replicas: tuple[ApiServer, ApiServer],
) -> None:
    a, b = replicas
    sid = await a.create(ECHO)
    async with b.connect(sid) as s:
        await s.until_stdout("ready", within=60)
        lease = stream_lease(a.namespace, sid)
        assert lease is not None, "the claim is in the cluster while b streams"
        await s.input("across\n")
        t = await s.finish()
    assert t.stdout == "ready\nACROSS\n"
    assert (t.final["state"], t.final["reason"]) == ("finished", "Completed"), t.final
    # Either replica reports it the same way.
    assert (await a.wait_ended(sid))["reason"] == "Completed"
    assert (await b.wait_ended(sid))["reason"] == "Completed"
    for _ in range(40):  # released when the stream ended
        if stream_lease(a.namespace, sid) is None:
            break
        await asyncio.sleep(0.25)
    else:
        raise AssertionError("the stream lease outlived its stream")
    # A late client on the other replica gets the replay, as on one replica.
    async with a.connect(sid) as late:
        replay = await late.finish()
    assert replay.stdout == "ready\nACROSS\n"
    assert replay.final["reason"] == "Completed"


async def test_a_second_client_is_refused_on_either_replica(
    replicas: tuple[ApiServer, ApiServer],
) -> None:
    a, b = replicas
    sid = await a.create(ECHO)
    async with b.connect(sid) as first:
        await first.until_stdout("ready", within=60)
        for other in (a, b):
            async with connect(f"{other.ws_url}/ws/session/{sid}") as second:
                with pytest.raises(ConnectionClosed):
                    await second.recv()
            assert second.close_code == 4409, other.port
            assert second.close_reason == "session already has a client"
        # The first client is undisturbed.
        await first.input("still here\n")
        t = await first.finish()
    assert t.stdout == "ready\nSTILL HERE\n"
    assert t.final["reason"] == "Completed"


async def test_delete_on_one_replica_ends_the_stream_on_the_other(
    replicas: tuple[ApiServer, ApiServer],
) -> None:
    a, b = replicas
    sid = await b.create(ECHO)
    async with a.connect(sid) as s:
        await s.until_stdout("ready", within=60)
        async with b.http() as http:
            assert (await http.delete(f"/session/{sid}")).status_code == 202
        t = await s.finish()
    assert (t.final["state"], t.final["reason"]) == ("terminated", "UserTerminated"), t.final
    await a.wait_pod_gone(sid)


async def test_never_connected_session_ends_when_its_posting_replica_is_gone(
    replicas: tuple[ApiServer, ApiServer], start_api: StartApi
) -> None:
    a, _ = replicas
    posting = start_api()
    sid = await posting.create("print(1)", timeouts={"idleSeconds": 4})
    posting.process.stop(signal.SIGKILL)
    # The connect deadline is the operator's: the session's idle timeout from creation.
    final = await a.wait_ended(sid, within=30)
    assert (final["state"], final["reason"]) == ("terminated", "ClientGone"), final
    assert "no client connected within 4 s" in final["message"]
    assert not a.pod_exists(sid)


async def test_killing_the_streaming_replica_ends_its_session(
    replicas: tuple[ApiServer, ApiServer], start_api: StartApi
) -> None:
    a, _ = replicas
    streaming = start_api(lease_seconds=str(LEASE_SECONDS))
    sid = await a.create(SLEEPER)
    ws = await connect(f"{streaming.ws_url}/ws/session/{sid}")
    try:
        async with asyncio.timeout(60):
            while "ready" not in await ws.recv():
                pass
        assert stream_lease(a.namespace, sid) is not None
        killed = time.monotonic()
        streaming.process.stop(signal.SIGKILL)
        # The claim is not lost with the process: nobody else may stream it meanwhile.
        async with connect(f"{a.ws_url}/ws/session/{sid}") as second:
            with pytest.raises(ConnectionClosed):
                await second.recv()
        assert second.close_code == 4409
        # Documented: at most the lease duration plus two checks of the operator (the
        # last renewal is seen at the next check, the expiry at the one after).
        bound = LEASE_SECONDS + 2 * CLAIMS_CHECK_SECONDS
        final = await a.wait_ended(sid, within=bound + 10)
        took = time.monotonic() - killed
    finally:
        ws.transport.abort()
    assert (final["state"], final["reason"]) == ("terminated", "ClientGone"), final
    assert "api replica" in final["message"], final
    print(f"\nSIGKILL of the streaming replica -> ClientGone in {took:.1f} s (bound {bound} s)")
    await a.wait_pod_gone(sid)
    for _ in range(40):  # the orphaned claim is dropped with it
        if stream_lease(a.namespace, sid) is None:
            break
        await asyncio.sleep(0.25)
    else:
        raise AssertionError("the dead replica's stream lease was left behind")
