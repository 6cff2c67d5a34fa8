"""Three watches per api process, shared by every session it streams.

One watch on the sandbox pods, one on the CodeSessions and one on the kubelet's
"Started" events of the namespace feed a small cache (the sandbox container's
state, the session's outcome, whether its container started, per session id) and
wake whoever waits on that session. A watch per session would cost API-server
connections per waiting client: a thousand clients would exhaust the client's
connection pool and the file descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Generic, TypeVar

from icee_core import names
from icee_core.models import CodeSessionStatus, Phase

from icee_api.kube import Cluster, ContainerState, KubeError, WatchExpired, container_state
from icee_api.session import Outcome, State

log = logging.getLogger(__name__)

T = TypeVar("T")

# Absent from the cache: the object does not exist (yet, or any more).
GONE = None
_WATCH_SECONDS = 290.0
_RETRY_SECONDS = 1.0


def outcome_of(status: CodeSessionStatus) -> Outcome | None:
    """The session's outcome if the operator recorded a final phase."""
    if not status.is_final:
        return None
    state = State.FINISHED if status.phase is Phase.FINISHED else State.TERMINATED
    reason = status.reason.value if status.reason is not None else ""
    return Outcome(state, status.exit_code, reason, status.message or "")


def status_of(obj: dict[str, Any]) -> CodeSessionStatus:
    return CodeSessionStatus.model_validate(obj.get("status") or {})


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


class _Feed(Generic[T]):
    """One watch: cache of the newest value per session id, and its waiters."""

    def __init__(
        self,
        name: str,
        watch: Callable[[str | None, float], AsyncIterator[tuple[str, dict[str, Any]]]],
        key: Callable[[dict[str, Any]], str | None],
        value: Callable[[dict[str, Any]], T],
        optional: bool = False,
    ) -> None:
        self._name = name
        self._watch = watch
        self._key = key
        self._value = value
        # An optional feed only speeds things up: without the RBAC for it, it stops.
        self._optional = optional
        self._cache: dict[str, T] = {}
        self._waiters: dict[str, set[Latest[T]]] = {}
        # Called with the session id when the object is deleted.
        self.on_deleted: Callable[[str], None] | None = None

    def forget(self, session_id: str) -> None:
        """Drop a cached value (its session's pod is gone: nobody will wait for it)."""
        self._cache.pop(session_id, None)

    @contextlib.contextmanager
    def subscribe(
        self, session_id: str, changed: asyncio.Event | None = None
    ) -> Iterator[Latest[T]]:
        box: Latest[T] = Latest(self._cache.get(session_id), changed)
        self._waiters.setdefault(session_id, set()).add(box)
        try:
            yield box
        finally:
            waiters = self._waiters.get(session_id)
            if waiters is not None:
                waiters.discard(box)
                if not waiters:
                    del self._waiters[session_id]

    async def run(self) -> None:
        version: str | None = None
        while True:
            try:
                async for kind, obj in self._watch(version, _WATCH_SECONDS):
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    if kind != "BOOKMARK":
                        self._apply(kind, obj)
            except WatchExpired:
                version = None  # start over: the watch re-sends everything as ADDED
            except KubeError as exc:
                if self._optional and exc.status in (401, 403):
                    log.warning("%s watch not allowed, going without it: %s", self._name, exc)
                    return
                log.warning("%s watch: %s", self._name, exc)
                await asyncio.sleep(_RETRY_SECONDS)

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        session_id = self._key(obj)
        if session_id is None:
            return
        if kind == "DELETED":
            self._cache.pop(session_id, None)
            value: T | None = GONE
            if self.on_deleted is not None:
                self.on_deleted(session_id)
        else:
            value = self._cache[session_id] = self._value(obj)
        for box in self._waiters.get(session_id, ()):
            box.put(value)


def _pod_session(obj: dict[str, Any]) -> str | None:
    return names.session_id_from_pod_name((obj.get("metadata") or {}).get("name") or "")


def _codesession_id(obj: dict[str, Any]) -> str | None:
    name = (obj.get("metadata") or {}).get("name") or ""
    return name if names.is_session_id(name) else None


_PROGRAM_FIELD = f"spec.containers{{{names.CONTAINER_NAME}}}"


def _started_session(obj: dict[str, Any]) -> str | None:
    """The session whose sandbox container a "Started" event is about."""
    involved = obj.get("involvedObject") or {}
    if involved.get("kind") != "Pod" or involved.get("fieldPath") != _PROGRAM_FIELD:
        return None
    return names.session_id_from_pod_name(involved.get("name") or "")


def _true(obj: dict[str, Any]) -> bool:
    return True


def _container(obj: dict[str, Any]) -> ContainerState:
    return container_state(obj, names.CONTAINER_NAME)


def _outcome(obj: dict[str, Any]) -> Outcome | None:
    return outcome_of(status_of(obj))


class Watches:
    """The pod, CodeSession and Started-event feeds; ``start()`` in the app's lifespan.

    ``started`` (the kubelet's "Started" event for the sandbox container) arrives up
    to a second before the pod status says running (the kubelet reports container
    states after its next relist); attaching on it saves that second. It is optional:
    without RBAC to watch events the api attaches on the pod status alone.
    """

    def __init__(self, cluster: Cluster) -> None:
        self.pods: _Feed[ContainerState] = _Feed(
            "pod", cluster.watch_pods, _pod_session, _container
        )
        self.outcomes: _Feed[Outcome | None] = _Feed(
            "codesession", cluster.watch_sessions, _codesession_id, _outcome
        )
        self.started: _Feed[bool] = _Feed(
            "started event", cluster.watch_started, _started_session, _true, optional=True
        )
        # Events outlive their pods by an hour: forget them with the pod.
        self.pods.on_deleted = self.started.forget
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.pods.run(), name="watch pods"),
            asyncio.create_task(self.outcomes.run(), name="watch codesessions"),
            asyncio.create_task(self.started.run(), name="watch started events"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
