"""Reading a pod object: pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class ContainerState:
    """One container's state as the pod reports it."""

    kind: Literal["absent", "waiting", "running", "terminated"]
    reason: str = ""
    exit_code: int | None = None
    # The pod is being deleted.
    deleting: bool = False


def container_state(pod: Mapping[str, Any], container: str) -> ContainerState:
    """Pure reading of ``status.containerStatuses`` for one container."""
    deleting = bool((pod.get("metadata") or {}).get("deletionTimestamp"))
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") != container:
            continue
        state = status.get("state") or {}
        if "terminated" in state:
            term = state["terminated"] or {}
            reason, code = term.get("reason") or "", term.get("exitCode")
            return ContainerState("terminated", reason, code, deleting)
        if "running" in state:
            return ContainerState("running", deleting=deleting)
        if "waiting" in state:
            reason = (state["waiting"] or {}).get("reason") or ""
            return ContainerState("waiting", reason, deleting=deleting)
    return ContainerState("absent", deleting=deleting)
