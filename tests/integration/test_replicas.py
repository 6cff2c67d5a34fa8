"""More than one api replica: any replica serves any session; the claim is in the cluster.

Real api processes (no session affinity between them, as behind a Service) and the
real operator: a POST on one and the WebSocket on another; a second client refused
on either; a replica killed with SIGKILL while it streams, or after it took a POST
that nobody connected to, does not strand the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from conftest import kubectl
from websockets.asyncio.client import connect

if TYPE_CHECKING:
    from conftest import ApiServer, LiveSession, StartApi

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


async def wait_stream_lease_gone(namespace: str, session_id: str, what: str) -> None:
    for _ in range(40):
        if stream_lease(namespace, session_id) is None:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(what)


@contextlib.asynccontextmanager
async def ready_echo(post_on: ApiServer, stream_on: ApiServer) -> AsyncIterator[LiveSession]:
    """An ECHO session POSTed on one replica and streamed from the other, its program ready."""
    async with stream_on.connect(await post_on.create(ECHO)) as s:
        await s.until_stdout("ready", within=60)
        yield s


async def test_post_on_one_replica_stream_on_the_other(
    replicas: tuple[ApiServer, ApiServer],
) -> None:
    a, b = replicas
    async with ready_echo(a, b) as s:
        sid = s.id
        lease = stream_lease(a.namespace, sid)
        assert lease is not None, "the claim is in the cluster while b streams"
        await s.input("across\n")
        t = await s.finish()
    assert t.stdout == "ready\nACROSS\n"
    assert (t.final["state"], t.final["reason"]) == ("finished", "Completed"), t.final
    # Either replica reports it the same way.
    assert (await a.wait_ended(sid))["reason"] == "Completed"
    assert (await b.wait_ended(sid))["reason"] == "Completed"
    # Released when the stream ended.
    await wait_stream_lease_gone(a.namespace, sid, "the stream lease outlived its stream")
    # A late client on the other replica gets the replay, as on one replica.
    async with a.connect(sid) as late:
        replay = await late.finish()
    assert replay.stdout == "ready\nACROSS\n"
    assert replay.final["reason"] == "Completed"


async def test_a_second_client_is_refused_on_either_replica(
    replicas: tuple[ApiServer, ApiServer],
) -> None:
    a, b = replicas
    async with ready_echo(a, b) as first:
        for other in (a, b):
            refused = await other.refused(first.id)
            assert refused == (4409, "session already has a client"), other.port
        # The first client is undisturbed.
        await first.input("still here\n")
        t = await first.finish()
    assert t.stdout == "ready\nSTILL HERE\n"
    assert t.final["reason"] == "Completed"


async def test_delete_on_one_replica_ends_the_stream_on_the_other(
    replicas: tuple[ApiServer, ApiServer],
) -> None:
    a, b = replicas
    async with ready_echo(b, a) as s:
        async with b.http() as http:
            assert (await http.delete(f"/session/{s.id}")).status_code == 202
        t = await s.finish()
    assert (t.final["state"], t.final["reason"]) == ("terminated", "UserTerminated"), t.final
    await a.wait_pod_gone(s.id)


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
        assert (await a.refused(sid))[0] == 4409
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
    # The orphaned claim is dropped with it.
    await wait_stream_lease_gone(
        a.namespace, sid, "the dead replica's stream lease was left behind"
    )
