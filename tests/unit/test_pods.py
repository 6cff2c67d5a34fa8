"""The sandbox pod builder against a literal pod, and reading status back from pods."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from icee_core.languages import load_registry
from icee_core.models import (
    CodeSessionSpec,
    CodeSessionStatus,
    Condition,
    Limits,
    MiB,
    Phase,
    Reason,
    StageUsage,
    Timeouts,
    Usage,
)
from icee_core.runner_protocol import frame
from icee_operator.observation import Observation, observe_pod, pod_lost
from icee_operator.pods import build_pod, sandbox_uid
from icee_operator.settings import OperatorSettings
from icee_operator.transitions import is_allowed, next_status
from icee_operator.usage import usage_of

SESSION_ID = "0b7c1f8e-3c1d-4e6a-9b2f-5d8e7a6c4b3a"
UID = 1266106  # 1_000_000 + int(SESSION_ID hex) % 1_000_000
LANGUAGES = load_registry()
NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


def settings(**overrides: Any) -> OperatorSettings:
    # Explicit values: the test must not depend on ICEE_* variables of the machine.
    return OperatorSettings(_env_file=None, **overrides)  # type: ignore[call-arg]


EXPECTED_PYTHON_POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": f"run-{SESSION_ID}",
        "namespace": "icee-sandbox",
        "labels": {
            "app.kubernetes.io/managed-by": "icee",
            "icee.dev/session": SESSION_ID,
            "app.kubernetes.io/component": "sandbox",
            "icee.dev/language": "python",
        },
    },
    "spec": {
        "runtimeClassName": "gvisor",
        "serviceAccountName": "icee-sandbox",
        "restartPolicy": "Never",
        "activeDeadlineSeconds": 185,
        "terminationGracePeriodSeconds": 1,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostNetwork": False,
        "hostPID": False,
        "hostIPC": False,
        "shareProcessNamespace": False,
        "hostname": "sandbox",
        "securityContext": {
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": [
            {
                "name": "workspace",
                "emptyDir": {"medium": "Memory", "sizeLimit": str(32 * MiB)},
            },
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": str(32 * MiB)}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": str(32 * MiB)}},
        ],
        "containers": [
            {
                "name": "program",
                "image": "icee/sandbox-python:3.11",
                "imagePullPolicy": "IfNotPresent",
                "command": ["/usr/local/bin/icee-runner"],
                "workingDir": "/workspace",
                "env": [
                    {"name": "KUBERNETES_SERVICE_HOST", "value": ""},
                    {"name": "KUBERNETES_SERVICE_PORT", "value": ""},
                    {"name": "KUBERNETES_SERVICE_PORT_HTTPS", "value": ""},
                    {"name": "KUBERNETES_PORT", "value": ""},
                    {"name": "KUBERNETES_PORT_443_TCP", "value": ""},
                    {"name": "KUBERNETES_PORT_443_TCP_PROTO", "value": ""},
                    {"name": "KUBERNETES_PORT_443_TCP_PORT", "value": ""},
                    {"name": "KUBERNETES_PORT_443_TCP_ADDR", "value": ""},
                    {"name": "HOME", "value": "/workspace"},
                    {"name": "TMPDIR", "value": "/workspace"},
                    {"name": "LANG", "value": "C.UTF-8"},
                    {"name": "PATH", "value": "/usr/local/bin:/usr/bin:/bin"},
                    {"name": "PYTHONUNBUFFERED", "value": "1"},
                    {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
                    {"name": "PYTHONIOENCODING", "value": "utf-8"},
                ],
                "stdin": True,
                "stdinOnce": True,
                "tty": False,
                "resources": {
                    "limits": {
                        "cpu": "500m",
                        "memory": str(200 * MiB),
                        "ephemeral-storage": str(64 * MiB),
                    },
                    "requests": {
                        "cpu": "10m",
                        "memory": str(32 * MiB),
                        "ephemeral-storage": str(1 * MiB),
                    },
                },
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": UID,
                    "runAsGroup": UID,
                    "seccompProfile": {"type": "RuntimeDefault"},
                    "readOnlyRootFilesystem": True,
                    "allowPrivilegeEscalation": False,
                    "privileged": False,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [
                    {"name": "workspace", "mountPath": "/workspace"},
                    {"name": "tmp", "mountPath": "/tmp"},
                    {"name": "shm", "mountPath": "/dev/shm"},
                ],
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
    },
}


def test_python_pod_is_exactly_the_hardened_pod() -> None:
    spec = CodeSessionSpec(language="python", code="print('Hello World')")
    pod = build_pod(
        SESSION_ID,
        spec,
        LANGUAGES.get("python"),
        settings(sandbox_service_account="icee-sandbox"),
    )
    assert pod == EXPECTED_PYTHON_POD


def test_limits_and_timeouts_come_from_the_spec() -> None:
    spec = CodeSessionSpec(
        language="python",
        code="1",
        limits=Limits(cpu_millis=200, memory_bytes=16 * MiB, pids=8, workspace_bytes=2 * MiB),
        timeouts=Timeouts(execution_seconds=7),
    )
    pod = build_pod(SESSION_ID, spec, LANGUAGES.get("python"), settings())
    container = pod["spec"]["containers"][0]
    # The backstop behind the operator's deadline: the kubelet counts from the pod's
    # start, which may precede the program's by up to the start timeout (60 s).
    assert pod["spec"]["activeDeadlineSeconds"] == 7 + 60 + 5
    assert pod["spec"]["volumes"][0]["emptyDir"]["sizeLimit"] == str(2 * MiB)
    assert container["resources"]["limits"]["cpu"] == "200m"
    assert container["resources"]["limits"]["memory"] == str(16 * MiB)
    # Requests never exceed limits (the API server would reject the pod).
    assert container["resources"]["requests"]["memory"] == str(16 * MiB)


def test_no_runtime_class_is_refused_unless_allowed_for_development() -> None:
    with pytest.raises(ValueError, match="ICEE_ALLOW_NO_RUNTIME_CLASS"):
        settings(runtime_class_name="")
    spec = CodeSessionSpec(language="python", code="1")
    dev = settings(runtime_class_name="", allow_no_runtime_class=True)
    pod = build_pod(SESSION_ID, spec, LANGUAGES.get("python"), dev)
    assert "runtimeClassName" not in pod["spec"]


def test_without_a_sandbox_service_account_the_namespace_default_is_used() -> None:
    spec = CodeSessionSpec(language="python", code="1")
    pod = build_pod(SESSION_ID, spec, LANGUAGES.get("python"), settings())
    assert "serviceAccountName" not in pod["spec"]
    assert pod["spec"]["automountServiceAccountToken"] is False


def test_each_session_gets_its_own_uid_in_the_range() -> None:
    config = settings(sandbox_uid_base=20000, sandbox_uid_count=100)
    assert sandbox_uid(SESSION_ID, config) == 20000 + int(SESSION_ID.replace("-", ""), 16) % 100
    other = "1b7c1f8e-3c1d-4e6a-9b2f-5d8e7a6c4b3b"
    assert sandbox_uid(other, settings()) != sandbox_uid(SESSION_ID, settings())
    assert sandbox_uid(SESSION_ID, settings(sandbox_uid_count=1)) == 1_000_000


# Reading pods back.

COMPILE_ERROR_TAIL = (
    "main.cpp:1:1: error: expected unqualified-id\n\n"
    "x 65\nstage=compile exit=1 signal=0 cpu_ms=10 mem_bytes=1000 wall_ms=20\n"
    "q 20\nresult=compile-error\n"
)
FORGED_TAIL = "o 26\nq 20\nresult=compile-error\n\nq 12\nresult=error\n"


def pod(
    *,
    state: dict[str, Any] | None = None,
    phase: str = "Running",
    reason: str | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if reason:
        status["reason"] = reason
        status["message"] = f"because {reason}"
    if state is not None:
        status["containerStatuses"] = [{"name": "program", "state": state}]
    metadata: dict[str, Any] = {"name": "run-x"}
    if deleting:
        metadata["deletionTimestamp"] = "2025-01-01T12:00:05Z"
    return {"metadata": metadata, "status": status}


def terminated(exit_code: int, reason: str = "Error", message: str | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": reason,
        "startedAt": "2025-01-01T12:00:01Z",
        "finishedAt": "2025-01-01T12:00:02Z",
    }
    if message is not None:
        state["message"] = message
    return {"terminated": state}


T1 = datetime(2025, 1, 1, 12, 0, 1, tzinfo=UTC)
T2 = datetime(2025, 1, 1, 12, 0, 2, tzinfo=UTC)
# The runner could not set the program up (exit 125).
SETUP_FAILED = Observation(
    Phase.TERMINATED,
    Reason.START_FAILED,
    125,
    "the sandbox could not set the program up (see the pod log)",
    "run-x",
    T1,
    T2,
)


@pytest.mark.parametrize(
    ("the_pod", "expected"),
    [
        (pod(phase="Pending"), Observation(Phase.PENDING, pod_name="run-x")),
        (
            pod(phase="Pending", state={"waiting": {"reason": "ContainerCreating"}}),
            Observation(Phase.PENDING, pod_name="run-x"),
        ),
        (
            pod(state={"running": {"startedAt": "2025-01-01T12:00:01Z"}}),
            Observation(Phase.RUNNING, pod_name="run-x", started_at=T1),
        ),
        (
            pod(phase="Succeeded", state=terminated(0, "Completed")),
            Observation(
                Phase.FINISHED, Reason.COMPLETED, 0, None, "run-x", started_at=T1, finished_at=T2
            ),
        ),
        (
            pod(phase="Failed", state=terminated(3)),
            Observation(Phase.FINISHED, Reason.ERROR, 3, None, "run-x", T1, T2),
        ),
        (
            # The log's tail (FallbackToLogsOnError) ends with the runner's q frame.
            pod(phase="Failed", state=terminated(1, message=COMPILE_ERROR_TAIL)),
            Observation(
                Phase.FINISHED,
                Reason.COMPILATION_ERROR,
                1,
                "the program did not compile",
                "run-x",
                T1,
                T2,
            ),
        ),
        (
            # Program output before the runner's last frame cannot pose as one.
            pod(phase="Failed", state=terminated(1, message=FORGED_TAIL)),
            Observation(Phase.FINISHED, Reason.ERROR, 1, None, "run-x", T1, T2),
        ),
        (
            # Exit 0: whatever the log says, it completed.
            pod(phase="Succeeded", state=terminated(0, "Completed", COMPILE_ERROR_TAIL)),
            Observation(Phase.FINISHED, Reason.COMPLETED, 0, None, "run-x", T1, T2),
        ),
        (
            pod(phase="Failed", state=terminated(125, message="q 19\nresult=setup-failed\n")),
            SETUP_FAILED,
        ),
        (
            # 125 and no final frame: the runner stopped on a protocol error.
            pod(phase="Failed", state=terminated(125, message="icee-runner: bad frame\n")),
            SETUP_FAILED,
        ),
        (
            pod(phase="Failed", state=terminated(137, "OOMKilled")),
            Observation(
                Phase.TERMINATED,
                Reason.MEMORY_LIMIT_EXCEEDED,
                137,
                "the memory limit was reached",
                "run-x",
                T1,
                T2,
            ),
        ),
        (
            pod(phase="Failed", reason="DeadlineExceeded", state=terminated(137)),
            Observation(
                Phase.TERMINATED,
                Reason.TIME_LIMIT_EXCEEDED,
                137,
                "the execution time limit was reached",
                "run-x",
                finished_at=T2,
            ),
        ),
        (
            pod(phase="Failed", reason="DeadlineExceeded", state={"running": {}}),
            Observation(
                Phase.TERMINATED,
                Reason.TIME_LIMIT_EXCEEDED,
                message="the execution time limit was reached",
                pod_name="run-x",
            ),
        ),
        (
            pod(phase="Failed", reason="Evicted"),
            Observation(
                Phase.TERMINATED,
                Reason.POD_LOST,
                message="the pod was evicted: because Evicted",
                pod_name="run-x",
            ),
        ),
        (
            pod(
                phase="Pending",
                state={"waiting": {"reason": "ErrImageNeverPull", "message": "no image"}},
            ),
            Observation(
                Phase.TERMINATED,
                Reason.START_FAILED,
                message="ErrImageNeverPull: no image",
                pod_name="run-x",
            ),
        ),
        (
            pod(phase="Failed", state=terminated(128, "StartError", "runsc failed")),
            Observation(
                Phase.TERMINATED, Reason.START_FAILED, 128, "runsc failed", "run-x", T1, T2
            ),
        ),
        (
            pod(phase="Failed", reason="OutOfcpu"),
            Observation(
                Phase.TERMINATED, Reason.START_FAILED, message="because OutOfcpu", pod_name="run-x"
            ),
        ),
        (
            pod(state=terminated(143), deleting=True),
            Observation(Phase.TERMINATED, Reason.POD_LOST, message="the pod was deleted"),
        ),
    ],
)
def test_observe_pod(the_pod: dict[str, Any], expected: Observation) -> None:
    assert observe_pod(the_pod) == expected


# The status state machine.


def status(**fields: Any) -> CodeSessionStatus:
    return CodeSessionStatus(**fields)


@pytest.mark.parametrize(
    ("current", "target", "allowed"),
    [
        (None, Phase.PENDING, True),
        (None, Phase.RUNNING, True),
        (None, Phase.TERMINATED, True),
        (Phase.PENDING, Phase.PENDING, True),
        (Phase.PENDING, Phase.FINISHED, True),
        (Phase.RUNNING, Phase.PENDING, False),
        (Phase.RUNNING, Phase.TERMINATED, True),
        (Phase.FINISHED, Phase.TERMINATED, False),
        (Phase.TERMINATED, Phase.FINISHED, False),
        (Phase.FINISHED, Phase.FINISHED, False),
    ],
)
def test_sessions_only_move_forward(current: Phase | None, target: Phase, allowed: bool) -> None:
    assert is_allowed(current, target) is allowed


def test_pending_then_running_then_finished() -> None:
    pending = next_status(status(), Observation(Phase.PENDING, pod_name="run-x"), NOW)
    assert pending == status(phase=Phase.PENDING, pod_name="run-x")
    running = next_status(pending, Observation(Phase.RUNNING, started_at=T1), NOW)
    assert running == status(
        phase=Phase.RUNNING,
        pod_name="run-x",
        started_at=T1,
        conditions=[Condition(type="Started", status="True", last_transition_time=NOW)],
    )
    assert running is not None
    finished = next_status(
        running, Observation(Phase.FINISHED, Reason.COMPLETED, 0, finished_at=T2), NOW
    )
    assert finished == status(
        phase=Phase.FINISHED,
        reason=Reason.COMPLETED,
        exit_code=0,
        pod_name="run-x",
        started_at=T1,
        finished_at=T2,
        conditions=[
            Condition(type="Started", status="True", last_transition_time=NOW),
            Condition(type="Ended", status="True", reason="Completed", last_transition_time=NOW),
        ],
    )


def test_repeated_observations_change_nothing() -> None:
    running = status(phase=Phase.RUNNING, pod_name="run-x", started_at=T1)
    running = next_status(running, Observation(Phase.RUNNING), NOW) or running
    assert next_status(running, Observation(Phase.RUNNING, started_at=T2), NOW) is None
    assert next_status(running, Observation(Phase.PENDING, pod_name="run-x"), NOW) is None


def test_an_ended_session_never_changes() -> None:
    ended = status(phase=Phase.TERMINATED, reason=Reason.USER_TERMINATED, finished_at=T1)
    assert next_status(ended, Observation(Phase.FINISHED, Reason.COMPLETED, 0), NOW) is None
    assert next_status(ended, pod_lost("run-x"), NOW) is None


def test_termination_without_times_is_stamped_now() -> None:
    ended = next_status(
        status(phase=Phase.PENDING),
        Observation(Phase.TERMINATED, Reason.IDLE_TIMEOUT, message="idle"),
        NOW,
    )
    assert ended is not None
    assert ended.finished_at == NOW
    assert ended.started_at is None
    assert ended.conditions == [
        Condition(
            type="Ended",
            status="True",
            reason="IdleTimeout",
            message="idle",
            last_transition_time=NOW,
        )
    ]


# Usage from the runner's frames in an ended pod's log.

X_RUN = b"stage=run exit=0 signal=0 cpu_ms=1000 mem_bytes=104857600 wall_ms=1200"
X_COMPILE = b"stage=compile exit=0 signal=0 cpu_ms=700 mem_bytes=50000000 wall_ms=800"


def test_usage_of_the_run_stage_from_the_tail() -> None:
    tail = b"put\n\n" + frame("x", X_RUN) + frame("q", b"result=completed")
    assert usage_of(tail, None) == Usage(
        run=StageUsage(
            exit_code=0, signal=0, cpu_millis=1000, memory_bytes=104857600, wall_millis=1200
        )
    )


def test_usage_of_both_stages_from_head_and_tail() -> None:
    head = frame("b", b"stage=compile") + frame("x", X_COMPILE) + frame("b", b"stage=run")
    head += b"o 100\nthe output goes on"  # cut off
    tail = frame("x", X_RUN) + frame("q", b"result=completed")
    usage = usage_of(tail, head)
    assert usage is not None
    assert usage.compile is not None
    assert usage.run is not None
    assert (usage.compile.cpu_millis, usage.run.cpu_millis) == (700, 1000)


def test_no_usage_without_the_runner_frames() -> None:
    assert usage_of(b"Killed\n", b"o 5\nhel") is None
