"""Three informers per api process, shared by every session it streams.

One on the sandbox pods, one on the CodeSessions and one on the kubelet's
"Started" events of the namespace keep a small cache (the sandbox container's
state, the session's outcome, whether its container started, per session id) and
wake whoever waits on that session (:mod:`icee_kube.informer`). A watch per session
would cost API-server connections per waiting client: a thousand clients would
exhaust the client's connection pool and the file descriptors.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from icee_core import names
from icee_core.models import FINAL_PHASES, Phase
from icee_kube.informer import GONE, Informer, Latest, supervise
from icee_kube.pods import ContainerState, container_state
from pydantic import ValidationError

from icee_api.session.cluster import Cluster
from icee_api.session.state import Outcome, outcome_of, state_of, status_of
from icee_api.session.warm import WarmPods

__all__ = ["GONE", "Latest", "Watches", "outcome_of", "status_of"]

log = logging.getLogger(__name__)


def _pod_session(obj: dict[str, Any]) -> str | None:
    metadata = obj.get("metadata") or {}
    labels = metadata.get("labels") or {}
    if names.LABEL_POOL in labels:
        # A warm pod: nobody's until claimed, then its session's (the claim's label).
        claimed = labels.get(names.LABEL_SESSION) or ""
        return claimed if names.is_session_id(claimed) else None
    return names.session_id_from_pod_name(metadata.get("name") or "")


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
    try:
        return outcome_of(status_of(obj))
    except ValidationError:
        # A reason (or field) a newer operator writes: a final phase is still final.
        raw = obj.get("status") or {}
        phase = raw.get("phase")
        if phase not in {p.value for p in FINAL_PHASES}:
            raise
        code = raw.get("exitCode")
        return Outcome(
            state_of(Phase(phase)),
            code if isinstance(code, int) else None,
            str(raw.get("reason") or ""),
            str(raw.get("message") or ""),
        )


class Watches:
    """The pod, CodeSession and Started-event informers; ``start()`` in the app's lifespan.

    ``started`` (the kubelet's "Started" event for the sandbox container) arrives up
    to a second before the pod status says running (the kubelet reports container
    states after its next relist); attaching on it saves that second. It is optional:
    without RBAC to watch events the api attaches on the pod status alone, and
    readiness does not wait for it.
    """

    def __init__(self, cluster: Cluster, watch_seconds: float = 290.0) -> None:
        self.pods: Informer[ContainerState] = Informer(
            "pod",
            cluster.list_pods,
            cluster.watch_pods,
            _pod_session,
            _container,
            watch_seconds=watch_seconds,
        )
        self.outcomes: Informer[Outcome | None] = Informer(
            "codesession",
            cluster.list_sessions,
            cluster.watch_sessions,
            _codesession_id,
            _outcome,
            watch_seconds=watch_seconds,
        )
        self.started: Informer[bool] = Informer(
            "started event",
            cluster.list_started,
            cluster.watch_started,
            _started_session,
            _true,
            optional=True,
            watch_seconds=watch_seconds,
        )
        # Events outlive their pods by an hour: forget them with the pod.
        self.pods.on_deleted = self.started.forget
        # Warm pods to claim and their pools' templates (issue 12); only against a
        # real cluster (test doubles of the three informers' calls have none).
        self.warm = WarmPods(cluster, watch_seconds) if isinstance(cluster, Cluster) else None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def required(self) -> tuple[Informer[Any], ...]:
        return (self.pods, self.outcomes)

    def unsynced(self) -> list[str]:
        """The required informers whose cache is not (or no longer) in sync."""
        return [i.name for i in self.required if not i.synced]

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(supervise(self.pods), name="informer pods"),
            asyncio.create_task(supervise(self.outcomes), name="informer codesessions"),
            asyncio.create_task(supervise(self.started), name="informer started events"),
            *(self.warm.start() if self.warm is not None else ()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
