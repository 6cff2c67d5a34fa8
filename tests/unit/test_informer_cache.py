"""The informer's pure parts: replace and apply, bad events, backoff, supervision."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from icee_kube.client import UNDECODABLE, KubeError, WatchExpired, watch_event
from icee_kube.informer import Backoff, Informer, supervise

Obj = dict[str, Any]


def obj(name: str, rv: str, value: int = 0) -> Obj:
    return {"metadata": {"name": name, "resourceVersion": rv}, "value": value}


def key(o: Obj) -> str | None:
    name = o["metadata"]["name"]
    return None if name.startswith("other") else str(name)


def value(o: Obj) -> int:
    return int(o["value"])


class Script:
    """Lists and watches played from queues; records the versions watched from."""

    def __init__(self) -> None:
        self.listed: list[Obj] = []
        self.lists = 0
        self.events: asyncio.Queue[tuple[str, Obj] | BaseException | None] = asyncio.Queue()
        self.watched: list[str] = []

    async def list(self) -> tuple[list[Obj], str]:
        self.lists += 1
        return list(self.listed), f"L{self.lists}"

    async def watch(self, version: str, seconds: float) -> AsyncIterator[tuple[str, Obj]]:
        self.watched.append(version)
        while True:
            item = await self.events.get()
            if item is None:  # the watch's timeout: it ends cleanly
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def informer(script: Script) -> Informer[int]:
    return Informer("thing", script.list, script.watch, key, value, backoff=Backoff(0.01, 0.02))


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def running(script: Script) -> AsyncIterator[Informer[int]]:
    """The informer of ``script``, its run loop going until the block ends."""
    inf = informer(script)
    task = asyncio.create_task(inf.run())
    try:
        yield inf
    finally:
        task.cancel()


def test_backoff_grows_to_its_cap_with_jitter_and_resets() -> None:
    low = Backoff(1.0, 8.0, rand=lambda: 0.0)
    assert [low.next() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    high = Backoff(1.0, 8.0, rand=lambda: 1.0)
    assert [high.next() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    high.reset()
    assert high.next() == 1.0


def test_replace_deletes_what_is_gone_and_tells_only_changed_waiters() -> None:
    inf = informer(Script())
    deleted: list[str] = []
    inf.on_deleted = deleted.append
    inf.replace([obj("a", "1", 1), obj("b", "1", 2), obj("other", "1")])
    assert (inf.get("a"), inf.get("b"), len(inf)) == (1, 2, 2)
    woken = {k: asyncio.Event() for k in "abc"}
    with (
        inf.subscribe("a", woken["a"]) as a,
        inf.subscribe("b", woken["b"]),
        inf.subscribe("c", woken["c"]) as c,
    ):
        for event in woken.values():  # a new mailbox is "changed" once: read the value
            event.clear()
        inf.replace([obj("b", "2", 2), obj("c", "2", 3)])
        assert (woken["a"].is_set(), a.value) == (True, None)  # gone in the gap
        assert woken["b"].is_set() is False  # unchanged: not woken
        assert (woken["c"].is_set(), c.value) == (True, 3)
    assert deleted == ["a"]
    assert inf.loaded.is_set()


def test_a_listed_object_that_cannot_be_read_is_skipped() -> None:
    inf = informer(Script())
    inf.replace([obj("a", "1", 1), {"metadata": {"name": "b"}, "value": "x"}])
    assert (inf.get("a"), inf.get("b"), inf.skipped) == (1, None, 1)


def test_watch_lines_that_are_not_events_are_undecodable() -> None:
    assert watch_event(b"{not json") == (UNDECODABLE, {})
    assert watch_event(b"[1, 2]") == (UNDECODABLE, {})
    assert watch_event(b'{"type":"ADDED","object":[]}') == (UNDECODABLE, {})


async def test_lists_then_watches_from_the_list_and_resumes_after_a_timeout() -> None:
    script = Script()
    script.listed = [obj("a", "5", 1)]
    async with running(script) as inf:
        await settle()
        assert inf.synced
        assert inf.get("a") == 1
        script.events.put_nowait(("MODIFIED", obj("a", "6", 2)))
        script.events.put_nowait(("BOOKMARK", {"metadata": {"resourceVersion": "9"}}))
        script.events.put_nowait(None)
        await settle()
        assert inf.get("a") == 2
        assert script.watched == ["L1", "9"]  # no relist after a clean timeout
        assert script.lists == 1


async def test_bad_events_are_skipped_and_the_cache_converges_by_listing_again() -> None:
    script = Script()
    async with running(script) as inf:
        await settle()
        script.events.put_nowait((UNDECODABLE, {}))
        script.events.put_nowait(("SURPRISE", obj("a", "2", 1)))
        script.events.put_nowait(("ADDED", {"metadata": {"name": "b", "resourceVersion": "3"}}))
        script.events.put_nowait(("ADDED", obj("c", "4", 4)))  # still applied
        await settle()
        assert (inf.get("c"), inf.skipped) == (4, 3)
        assert script.lists == 1
        script.listed = [obj("b", "5", 5), obj("c", "5", 4)]
        script.events.put_nowait(None)  # the watch ends: list again, not resume
        await settle()
        assert script.lists == 2
        assert (inf.get("b"), inf.get("c")) == (5, 4)
        assert script.watched == ["L1", "L2"]


async def test_410_lists_again_at_once() -> None:
    script = Script()
    async with running(script):
        await settle()
        script.events.put_nowait(WatchExpired("too old", 410))
        await settle()
        assert script.watched == ["L1", "L2"]


async def test_optional_informer_stops_without_rbac() -> None:
    script = Script()
    inf = Informer("opt", script.list, script.watch, key, value, optional=True)
    script.events.put_nowait(KubeError("403 Forbidden", 403))
    await asyncio.wait_for(supervise(inf), 1)
    assert inf.stopped
    assert not inf.synced


async def test_a_dying_informer_is_restarted_and_lists_again() -> None:
    script = Script()
    inf = informer(script)
    task = asyncio.create_task(supervise(inf, Backoff(0.01, 0.02)))
    try:
        await settle()
        script.events.put_nowait(RuntimeError("a bug"))
        await asyncio.sleep(0.05)
        assert script.lists == 2
        assert inf.synced
    finally:
        task.cancel()
