"""Graceful shutdown in LiveSessions: every stream ends with a final state."""

import asyncio

from icee_api.session.live import LiveSessions


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


async def test_drain_tells_the_clients_whose_final_status_did_not_come() -> None:
    asked: list[tuple[str, str]] = []

    async def terminate(sid: str, reason: str, message: str) -> None:
        asked.append((sid, reason))

    live = LiveSessions(terminate)
    quick, stuck = Stream(live, "a", True), Stream(live, "b", False)
    assert live.claim("a", quick)
    assert live.claim("b", stuck)
    live.created("c", connect_timeout=60)  # never attached
    await live.drain(grace=0.05, settle=0.3)
    assert quick.calls == ["terminate ServerShutdown"]
    assert stuck.calls == ["terminate ServerShutdown", "shut_down"]
    assert asked == [("c", "ServerShutdown")]
