"""The shared watch feeds: newest value per session, delivered to its waiters."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from icee_api.session.state import State
from icee_api.session.watches import Latest, Watches
from icee_kube.client import KubeError, WatchExpired
from icee_kube.pods import ContainerState

SID = "0b8a0f8e-6f5e-4c4c-9d3a-0e1f2a3b4c5d"


def pod(rv: str, state: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": f"run-{SID}", "resourceVersion": rv},
        "status": {"containerStatuses": [{"name": "program", "state": state}]},
    }


def codesession(rv: str, status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": SID, "resourceVersion": rv}, "status": status}


class ScriptedCluster:
    """Plays watch events from queues; records the resourceVersions it was asked for."""

    def __init__(self) -> None:
        self.pod_events: asyncio.Queue[tuple[str, dict[str, Any]] | Exception] = asyncio.Queue()
        self.session_events: asyncio.Queue[tuple[str, dict[str, Any]] | Exception] = asyncio.Queue()
        self.started_events: asyncio.Queue[tuple[str, dict[str, Any]] | Exception] = asyncio.Queue()
        self.pod_versions: list[str | None] = []
        self.started_watches = 0
        self.pods_listed: list[dict[str, Any]] = []
        self.pod_lists = 0

    async def list_pods(self) -> tuple[list[dict[str, Any]], str]:
        self.pod_lists += 1
        return list(self.pods_listed), f"L{self.pod_lists}"

    async def list_sessions(self) -> tuple[list[dict[str, Any]], str]:
        return [], "S"

    async def list_started(self) -> tuple[list[dict[str, Any]], str]:
        return [], "E"

    async def watch_pods(self, version: str | None, seconds: float) -> AsyncIterator[Any]:
        self.pod_versions.append(version)
        while True:
            item = await self.pod_events.get()
            if isinstance(item, Exception):
                raise item
            yield item

    async def watch_sessions(self, version: str | None, seconds: float) -> AsyncIterator[Any]:
        while True:
            item = await self.session_events.get()
            if isinstance(item, Exception):
                raise item
            yield item

    async def watch_started(self, version: str | None, seconds: float) -> AsyncIterator[Any]:
        self.started_watches += 1
        while True:
            item = await self.started_events.get()
            if isinstance(item, Exception):
                raise item
            yield item


def started(rv: str, container: str = "program", name: str = f"run-{SID}") -> dict[str, Any]:
    involved = {"kind": "Pod", "name": name, "fieldPath": f"spec.containers{{{container}}}"}
    return {"metadata": {"resourceVersion": rv}, "reason": "Started", "involvedObject": involved}


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


@pytest.fixture
def cluster() -> ScriptedCluster:
    return ScriptedCluster()


@pytest.fixture
async def watches(cluster: ScriptedCluster) -> AsyncIterator[Watches]:
    """The feeds, started on the scripted cluster; stopped after the test."""
    feeds = Watches(cluster)  # type: ignore[arg-type]
    feeds.start()
    yield feeds
    await feeds.stop()


async def test_latest_keeps_only_the_newest_value() -> None:
    box: Latest[int] = Latest(None)
    assert await box.get() is None
    box.put(1)
    box.put(2)
    assert await box.get() == 2


async def test_pod_feed_follows_the_container_until_deleted(
    cluster: ScriptedCluster, watches: Watches
) -> None:
    with watches.pods.subscribe(SID) as box:
        assert await box.get() is None  # not created yet
        cluster.pod_events.put_nowait(("ADDED", pod("1", {"waiting": {}})))
        assert await box.get() == ContainerState("waiting")
        cluster.pod_events.put_nowait(("MODIFIED", pod("2", {"running": {}})))
        assert await box.get() == ContainerState("running")
        cluster.pod_events.put_nowait(("DELETED", pod("3", {"running": {}})))
        assert await box.get() is None
    # A later subscriber starts from the cache.
    cluster.pod_events.put_nowait(("ADDED", pod("4", {"running": {}})))
    await settle()
    with watches.pods.subscribe(SID) as box:
        assert await box.get() == ContainerState("running")


async def test_expired_watch_lists_again_and_drops_what_is_gone(
    cluster: ScriptedCluster, watches: Watches
) -> None:
    with watches.pods.subscribe(SID) as box:
        assert await box.get() is None
        cluster.pod_events.put_nowait(("ADDED", pod("7", {"running": {}})))
        assert await box.get() == ContainerState("running")
        # The pod was deleted while the watch was away; the resumed watch is too old.
        cluster.pod_events.put_nowait(WatchExpired("too old"))
        assert await asyncio.wait_for(box.get(), 1) is None  # deleted by the relist
    assert cluster.pod_versions == ["L1", "L2"]  # each watch from its list's version
    assert watches.pods.synced


async def test_outcome_feed_reports_the_final_status(
    cluster: ScriptedCluster, watches: Watches
) -> None:
    with watches.outcomes.subscribe(SID) as box:
        assert await box.get() is None
        cluster.session_events.put_nowait(("MODIFIED", codesession("1", {"phase": "Running"})))
        assert await box.get() is None  # not final
        final = {"phase": "Terminated", "reason": "TimeLimitExceeded", "message": "2 min"}
        cluster.session_events.put_nowait(("MODIFIED", codesession("2", final)))
        outcome = await box.get()
        assert outcome is not None
        assert (outcome.state, outcome.reason, outcome.exit_code) == (
            State.TERMINATED,
            "TimeLimitExceeded",
            None,
        )


async def test_started_event_feed_until_the_pod_is_deleted(
    cluster: ScriptedCluster, watches: Watches
) -> None:
    changed = asyncio.Event()
    with watches.started.subscribe(SID, changed) as box:
        cluster.started_events.put_nowait(("ADDED", started("1", container="other")))
        cluster.started_events.put_nowait(("ADDED", started("2", name="run-not-a-session")))
        await settle()
        assert box.value is None  # not the sandbox container of a session
        cluster.started_events.put_nowait(("ADDED", started("3")))
        await asyncio.wait_for(changed.wait(), 1)
        assert box.value is True
    # The pod's deletion drops the cached event (events outlive pods by an hour).
    cluster.pod_events.put_nowait(("ADDED", pod("4", {"running": {}})))
    cluster.pod_events.put_nowait(("DELETED", pod("5", {"running": {}})))
    await settle()
    with watches.started.subscribe(SID) as box:
        assert box.value is None


async def test_one_event_wakes_a_waiter_of_several_feeds(
    cluster: ScriptedCluster, watches: Watches
) -> None:
    changed = asyncio.Event()
    with (
        watches.pods.subscribe(SID, changed) as pod_box,
        watches.outcomes.subscribe(SID, changed) as outcome_box,
    ):
        await changed.wait()  # set once on subscribing: read the current values
        changed.clear()
        cluster.session_events.put_nowait(("MODIFIED", codesession("1", {"phase": "Running"})))
        await asyncio.wait_for(changed.wait(), 1)
        changed.clear()
        cluster.pod_events.put_nowait(("ADDED", pod("2", {"running": {}})))
        await asyncio.wait_for(changed.wait(), 1)
        assert pod_box.value == ContainerState("running")
        assert outcome_box.value is None


async def test_started_feed_stops_without_rbac(cluster: ScriptedCluster, watches: Watches) -> None:
    cluster.started_events.put_nowait(KubeError("403 Forbidden: events", 403))
    await settle()
    assert cluster.started_watches == 1  # not retried
    cluster.pod_events.put_nowait(("ADDED", pod("1", {"running": {}})))
    await settle()
    with watches.pods.subscribe(SID) as box:
        assert box.value == ContainerState("running")  # the others go on


async def test_not_synced_until_listed_and_while_relisting_after_a_failure() -> None:
    cluster = ScriptedCluster()
    watches = Watches(cluster)  # type: ignore[arg-type]
    assert watches.unsynced() == ["pod", "codesession"]
    watches.start()
    try:
        await settle()
        assert watches.unsynced() == []
        cluster.pod_events.put_nowait(KubeError("connection reset"))
        await settle()
        assert watches.unsynced() == ["pod"]  # backing off before listing again
        await asyncio.sleep(1.2)  # the first backoff is at most 0.5 s
        assert watches.unsynced() == []
        assert cluster.pod_lists == 2
    finally:
        await watches.stop()


async def test_a_final_status_with_an_unknown_reason_still_ends_the_session(
    cluster: ScriptedCluster, watches: Watches
) -> None:
    with watches.outcomes.subscribe(SID) as box:
        assert await box.get() is None
        final = {"phase": "Terminated", "reason": "SomethingNewer", "message": "later"}
        cluster.session_events.put_nowait(("MODIFIED", codesession("2", final)))
        outcome = await asyncio.wait_for(box.get(), 1)
        assert outcome is not None
        assert (outcome.state, outcome.reason) == (State.TERMINATED, "SomethingNewer")
