"""A cache of Kubernetes objects kept correct by list + watch (a reflector).

The loop, as kubespawner's ``reflector.py`` and client-go's reflector do it::

    list ──> replace the whole cache ──> watch from the list's resourceVersion
     ^           (objects gone in between                │
     │            are deleted for waiters)               │ timeout: watch again
     └──── 410 Gone (an ERROR event or HTTP 410) ────────┤ from the last version
     └──── any other error: backoff with jitter ─────────┘

It knows nothing about sessions: a ``key`` function names the cache entry of an
object (None: not ours), a ``value`` function keeps only what the readers need.
One bad event (undecodable, of an unknown type, or whose value cannot be read) is
logged and skipped; the cache is listed again when that watch ends, so it still
converges. ``synced`` is false until the first list is in and again while the
informer lists after a failure (readiness).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Generic, Protocol, TypeVar

from icee_kube.client import UNDECODABLE, KubeError, WatchExpired

log = logging.getLogger(__name__)

T = TypeVar("T")

Obj = dict[str, Any]
Lister = Callable[[], Awaitable[tuple[list[Obj], str]]]
Watcher = Callable[[str, float], AsyncIterator[tuple[str, Obj]]]

# Absent from the cache: the object does not exist (yet, or any more).
GONE = None
_CHANGES = frozenset({"ADDED", "MODIFIED", "DELETED"})


class Latest(Generic[T]):
    """A mailbox that keeps only the newest value: a waiter never falls behind.

    Several mailboxes may share one ``changed`` event, so one waiter (one task) can
    follow several feeds at once and read each mailbox's ``value`` when woken.
    """

    def __init__(self, value: T | None, changed: asyncio.Event | None = None) -> None:
        self._value = value
        self._changed = changed if changed is not None else asyncio.Event()
        self._changed.set()

    @property
    def value(self) -> T | None:
        return self._value

    def put(self, value: T | None) -> None:
        self._value = value
        self._changed.set()

    async def get(self) -> T | None:
        """The current value the first time, then each newer one."""
        await self._changed.wait()
        self._changed.clear()
        return self._value


class Observer(Protocol):
    """Follows every object of an informer (e.g. to count sessions).

    A relist is ``begin_relist``, ``apply`` per object, ``end_relist``: whatever was
    not applied in between is gone. ``apply(key, None)`` is a deletion.
    """

    def begin_relist(self) -> None: ...
    def apply(self, key: str, obj: Obj | None) -> None: ...
    def end_relist(self) -> None: ...


class Backoff:
    """Exponential delays with jitter ("equal jitter": half fixed, half random).

    Many api processes that lost the API server at once do not come back in step.
    """

    def __init__(
        self, first: float = 0.5, cap: float = 30.0, rand: Callable[[], float] = random.random
    ) -> None:
        self._first = first
        self._cap = cap
        self._rand = rand
        self._failures = 0

    def next(self) -> float:
        delay = min(self._cap, self._first * (1 << self._failures))
        self._failures = min(self._failures + 1, 32)
        return delay / 2 + self._rand() * delay / 2

    def reset(self) -> None:
        self._failures = 0


class Informer(Generic[T]):
    """The newest value per key of one kind of object, and who waits on which key."""

    def __init__(
        self,
        name: str,
        lister: Lister,
        watcher: Watcher,
        key: Callable[[Obj], str | None],
        value: Callable[[Obj], T],
        *,
        optional: bool = False,
        watch_seconds: float = 290.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.name = name
        self._list = lister
        self._watch = watcher
        self._key = key
        self._value = value
        # An optional informer only speeds things up: without the RBAC for it, it stops.
        self.optional = optional
        self._watch_seconds = watch_seconds
        self._backoff = backoff or Backoff()
        self._cache: dict[str, T] = {}
        self._waiters: dict[str, set[Latest[T]]] = {}
        self._synced = False
        self.stopped = False
        # Set once the first list is in (and stays set).
        self.loaded = asyncio.Event()
        # Called with the key when an object is deleted (by an event or a relist).
        self.on_deleted: Callable[[str], None] | None = None
        self.observers: list[Observer] = []
        # Counters for logs and tests: lists done, 410s seen, bad events skipped.
        self.relists = 0
        self.expired = 0
        self.skipped = 0

    @property
    def synced(self) -> bool:
        """The cache reflects the cluster as of a list plus the watch since."""
        return self._synced

    def forget(self, key: str) -> None:
        """Drop a cached value (nobody will wait for it any more)."""
        self._cache.pop(key, None)

    def get(self, key: str) -> T | None:
        return self._cache.get(key)

    def __len__(self) -> int:
        return len(self._cache)

    def __contains__(self, key: str) -> bool:
        return key in self._cache

    @contextlib.contextmanager
    def subscribe(self, key: str, changed: asyncio.Event | None = None) -> Iterator[Latest[T]]:
        box: Latest[T] = Latest(self._cache.get(key), changed)
        self._waiters.setdefault(key, set()).add(box)
        try:
            yield box
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(box)
                if not waiters:
                    del self._waiters[key]

    # -- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """List and watch until cancelled; returns only if an optional informer is refused.

        Errors other than the API server's (a bug) propagate: the owner restarts the
        task (see ``supervise``), which lists afresh.
        """
        self._synced = False
        try:
            await self._loop()
        finally:
            self._synced = False

    async def _loop(self) -> None:
        version: str | None = None
        while True:
            try:
                if version is None:
                    self._synced = False
                    version = await self._relist()
                    self._synced = True
                    self._backoff.reset()
                version = await self._watch_once(version)
            except WatchExpired as exc:
                self.expired += 1
                log.info("%s watch expired (%s): listing again", self.name, exc)
                version = None
            except KubeError as exc:
                if self.optional and exc.status in (401, 403):
                    log.warning("%s watch not allowed, going without it: %s", self.name, exc)
                    self.stopped = True
                    return
                self._synced = False
                version = None
                delay = self._backoff.next()
                log.warning("%s watch: %s (listing again in %.1f s)", self.name, exc, delay)
                await asyncio.sleep(delay)

    async def _relist(self) -> str:
        items, version = await self._list()
        self.replace(items)
        self.relists += 1
        return version

    async def _watch_once(self, version: str) -> str | None:
        """One watch from ``version``: the version to resume from, None to list again."""
        relist = False
        async for kind, obj in self._watch(version, self._watch_seconds):
            if kind == UNDECODABLE:
                relist = self._skip("an undecodable event", None)
                continue
            seen = (obj.get("metadata") or {}).get("resourceVersion")
            if isinstance(seen, str) and seen:
                version = seen
            if kind == "BOOKMARK":
                continue
            if kind not in _CHANGES:
                relist = self._skip(f"an event of unknown type {kind!r}", None)
                continue
            try:
                self.apply(kind, obj)
            except Exception as exc:  # one object we cannot read must not stop the rest
                relist = self._skip(f"a {kind} event", exc)
        # After a skipped event the cache may miss a change: list again to converge.
        return None if relist else version

    def _skip(self, what: str, exc: Exception | None) -> bool:
        self.skipped += 1
        log.warning("%s watch: skipped %s%s", self.name, what, f": {exc!r}" if exc else "")
        return True

    # -- applying what the API server said -----------------------------------------------

    def apply(self, kind: str, obj: Obj) -> None:
        """One watch event (ADDED, MODIFIED or DELETED)."""
        key = self._key(obj)
        if key is None:
            return
        if kind == "DELETED":
            self._cache.pop(key, None)
            value: T | None = GONE
            if self.on_deleted is not None:
                self.on_deleted(key)
        else:
            value = self._cache[key] = self._value(obj)
        for observer in self.observers:
            observer.apply(key, None if kind == "DELETED" else obj)
        for box in self._waiters.get(key, ()):
            box.put(value)

    def replace(self, items: list[Obj]) -> None:
        """A full list: the new cache; what is no longer there is deleted for its waiters."""
        cache: dict[str, T] = {}
        kept: list[tuple[str, Obj]] = []
        for obj in items:
            try:
                key = self._key(obj)
                if key is None:
                    continue
                cache[key] = self._value(obj)
            except Exception as exc:
                self._skip("a listed object", exc)
                continue
            kept.append((key, obj))
        old, self._cache = self._cache, cache
        for observer in self.observers:
            observer.begin_relist()
            for key, obj in kept:
                observer.apply(key, obj)
            observer.end_relist()
        if self.on_deleted is not None:
            for key in old.keys() - cache.keys():
                self.on_deleted(key)
        for key, boxes in self._waiters.items():
            before, after = old.get(key, GONE), cache.get(key, GONE)
            if key in old and key in cache and before == after:
                continue
            if key not in old and key not in cache:
                continue
            for box in boxes:
                box.put(after)
        self.loaded.set()


async def supervise(informer: Informer[Any], backoff: Backoff | None = None) -> None:
    """Run an informer for good: a task that dies (a bug) is logged and restarted."""
    backoff = backoff or Backoff()
    while True:
        try:
            await informer.run()
        except Exception:
            delay = backoff.next()
            log.exception("%s informer failed; restarting in %.1f s", informer.name, delay)
            await asyncio.sleep(delay)
            continue
        if informer.stopped:
            return
