"""What a sandbox pod says about its session: a pure reading of the Pod object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from icee_core import names
from icee_core.models import Phase, Reason, Usage
from icee_core.runner_protocol import Result, read_tail

from icee_operator.pods import SANDBOX_SETUP_FAILED

# Waiting reasons that will not resolve by themselves for an interactive session.
FATAL_WAITING_REASONS = frozenset(
    {
        "ErrImageNeverPull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)
# Terminated reasons that mean the program never ran.
START_FAILURE_REASONS = frozenset({"StartError", "ContainerCannotRun"})


@dataclass(frozen=True)
class Observation:
    """A status the session should move to; None fields leave the status as it is."""

    phase: Phase
    reason: Reason | None = None
    exit_code: int | None = None
    message: str | None = None
    pod_name: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    usage: Usage | None = None


def observe_pod(pod: Mapping[str, Any]) -> Observation:
    observed = _observe_pod(pod)
    # A warm pod (issue 12) started before its session claimed it: the session's
    # time (execution deadline, usage window) runs from the claim.
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    try:
        claimed_at = _time(annotations.get(names.ANNOTATION_CLAIMED_AT))
    except ValueError:
        claimed_at = None
    if claimed_at is not None and observed.started_at is not None:
        observed = replace(observed, started_at=max(observed.started_at, claimed_at))
    return observed


def _observe_pod(pod: Mapping[str, Any]) -> Observation:
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    pod_name = metadata.get("name")
    container = _program_status(status)
    state = container.get("state") or {}
    terminated = state.get("terminated")

    if metadata.get("deletionTimestamp"):
        # The operator deletes pods only after the session has ended; anyone else
        # deleting a live one loses the session.
        return Observation(Phase.TERMINATED, Reason.POD_LOST, message="the pod was deleted")
    if status.get("reason") == "DeadlineExceeded":
        return Observation(
            Phase.TERMINATED,
            Reason.TIME_LIMIT_EXCEEDED,
            exit_code=terminated.get("exitCode") if terminated else None,
            message="the execution time limit was reached",
            pod_name=pod_name,
            finished_at=_time(terminated.get("finishedAt")) if terminated else None,
        )
    if status.get("reason") == "Evicted":
        return Observation(
            Phase.TERMINATED,
            Reason.POD_LOST,
            message=f"the pod was evicted: {status.get('message', '')}".strip(),
            pod_name=pod_name,
        )
    if terminated:
        return _ended(terminated, pod_name)
    if status.get("phase") in ("Succeeded", "Failed"):
        return Observation(
            Phase.TERMINATED,
            Reason.START_FAILED,
            message=status.get("message") or status.get("reason") or "the pod failed to start",
            pod_name=pod_name,
        )
    waiting = state.get("waiting") or {}
    if waiting.get("reason") in FATAL_WAITING_REASONS:
        return Observation(
            Phase.TERMINATED,
            Reason.START_FAILED,
            message=f"{waiting['reason']}: {waiting.get('message', '')}".strip(": "),
            pod_name=pod_name,
        )
    if running := state.get("running"):
        return Observation(
            Phase.RUNNING, pod_name=pod_name, started_at=_time(running.get("startedAt"))
        )
    return Observation(Phase.PENDING, pod_name=pod_name)


def pod_lost(pod_name: str | None) -> Observation:
    return Observation(
        Phase.TERMINATED, Reason.POD_LOST, message="the pod disappeared", pod_name=pod_name
    )


def _ended(terminated: Mapping[str, Any], pod_name: str | None) -> Observation:
    exit_code = terminated.get("exitCode")
    times: dict[str, Any] = {
        "started_at": _time(terminated.get("startedAt")),
        "finished_at": _time(terminated.get("finishedAt")),
    }
    if terminated.get("reason") == "OOMKilled":
        return Observation(
            Phase.TERMINATED,
            Reason.MEMORY_LIMIT_EXCEEDED,
            exit_code=exit_code,
            message="the memory limit was reached",
            pod_name=pod_name,
            **times,
        )
    if terminated.get("reason") in START_FAILURE_REASONS:
        return Observation(
            Phase.TERMINATED,
            Reason.START_FAILED,
            exit_code=exit_code,
            message=terminated.get("message") or terminated.get("reason"),
            pod_name=pod_name,
            **times,
        )
    # On a non-zero exit the kubelet puts the log's tail here (FallbackToLogsOnError);
    # its last frame is the runner's result. The exit code stays the container's.
    result = read_tail(terminated.get("message") or "").result if exit_code else None
    if result is Result.COMPILE_ERROR:
        return Observation(
            Phase.FINISHED,
            Reason.COMPILATION_ERROR,
            exit_code=exit_code,
            message="the program did not compile",
            pod_name=pod_name,
            **times,
        )
    if result is Result.SETUP_FAILED or (result is None and exit_code == SANDBOX_SETUP_FAILED):
        # No q frame and 125: the runner stopped on a protocol error (docs/runner.md).
        return Observation(
            Phase.TERMINATED,
            Reason.START_FAILED,
            exit_code=exit_code,
            message="the sandbox could not set the program up (see the pod log)",
            pod_name=pod_name,
            **times,
        )
    reason = Reason.COMPLETED if exit_code == 0 else Reason.ERROR
    return Observation(Phase.FINISHED, reason, exit_code=exit_code, pod_name=pod_name, **times)


def _program_status(status: Mapping[str, Any]) -> Mapping[str, Any]:
    for container in status.get("containerStatuses") or ():
        if container.get("name") == names.CONTAINER_NAME:
            found: Mapping[str, Any] = container
            return found
    return {}


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value)
    return None
