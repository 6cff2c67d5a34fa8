"""Graceful shutdown in LiveSessions: every stream ends with a final state."""

import asyncio

from icee_api.metrics import Metrics
from icee_api.session.live import LiveSessions
from icee_api.session.termination import Termination


class Stream:
    """A stream handle; ``ends_on_request``: the operator's final status comes in time."""

    def __init__(self, live: LiveSessions, sid: str, ends_on_request: bool) -> None:
        self.live, self.sid, self.ends_on_request = live, sid, ends_on_request
        self.calls: list[str] = []

    async def terminate(self, reason: str, message: str) -> None:
        self.calls.append(f"terminate {reason}")
        if self.ends_on_request:
            asyncio.get_running_loop().call_later(0.05, self.live.release, self.sid)

    async def shut_down(self, message: str) -> None:
        self.calls.append("shut_down")


class Cluster:
    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    async def request_termination(self, sid: str, reason: str, message: str) -> bool:
        self.asked.append((sid, reason))
        return True


async def test_drain_tells_the_clients_whose_final_status_did_not_come() -> None:
    cluster = Cluster()
    live: LiveSessions
    termination = Termination(lambda: cluster, lambda sid: live.stream(sid), Metrics())
    live = LiveSessions(termination.end)
    quick, stuck = Stream(live, "a", True), Stream(live, "b", False)
    assert live.claim("a", quick)
    assert live.claim("b", stuck)
    live.created("c")  # never attached here: the operator's connect deadline ends it
    await live.drain(grace=0.05, settle=0.3)
    assert quick.calls == ["terminate ServerShutdown"]
    assert stuck.calls == ["terminate ServerShutdown", "shut_down"]
    # Attached sessions end through their streams; one nobody connected to here may
    # still get its client on another replica (the operator's connect deadline ends it).
    assert cluster.asked == []


async def test_termination_goes_through_the_stream_that_serves_the_session() -> None:
    cluster = Cluster()
    metrics = Metrics()
    live: LiveSessions
    termination = Termination(lambda: cluster, lambda sid: live.stream(sid), metrics)
    live = LiveSessions(termination.end)
    streamed = Stream(live, "a", False)
    assert live.claim("a", streamed)
    await termination.end("a", "UserTerminated", "terminated by the user")
    await termination.end("b", "UserTerminated", "terminated by the user")
    assert streamed.calls == ["terminate UserTerminated"]
    assert cluster.asked == [("b", "UserTerminated")]
    # Limits only a stream sees are counted when they end a session; the user is not a limit.
    await termination.request("a", "OutputLimitExceeded", "output limit")
    trips = metrics.registry.get_sample_value(
        "icee_limit_trips_total", {"reason": "OutputLimitExceeded"}
    )
    assert trips == 1
    assert (
        metrics.registry.get_sample_value("icee_limit_trips_total", {"reason": "UserTerminated"})
        is None
    )
