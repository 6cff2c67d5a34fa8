"""The pure builder of a session's Pod.

Every hardening setting of the sandbox is in `build_pod`, in one place; nothing
here talks to the cluster (the handlers add the owner reference and create it).
The container runs the in-sandbox runner (docs/runner.md): the api sends it the
source files and commands over the attach stream, so the pod carries no code.
"""

from __future__ import annotations

import math
from typing import Any

from icee_core import names
from icee_core.languages import Language
from icee_core.models import CodeSessionSpec

from icee_operator.settings import OperatorSettings

WORKSPACE_VOLUME = "workspace"
# Scratch space the runtime would otherwise provide uncapped (gVisor mounts a
# tmpfs at /tmp; /dev/shm is the pod's 64 MB shm): each capped like the workspace.
SCRATCH_VOLUMES = {"tmp": "/tmp", "shm": "/dev/shm"}
TERMINATION_LOG = "/dev/termination-log"
# The pod's own deadline trails the operator's by this much.
DEADLINE_BACKSTOP_SECONDS = 5
# The runner's exit code when it fails before the program runs (or on a protocol error).
SANDBOX_SETUP_FAILED = 125

# The kubelet gives every container the API server's address (KUBERNETES_SERVICE_*,
# KUBERNETES_PORT*) whatever enableServiceLinks says; the pod's own env, which
# takes precedence, blanks them.
KUBELET_ENV = {
    name: ""
    for name in (
        "KUBERNETES_SERVICE_HOST",
        "KUBERNETES_SERVICE_PORT",
        "KUBERNETES_SERVICE_PORT_HTTPS",
        "KUBERNETES_PORT",
        "KUBERNETES_PORT_443_TCP",
        "KUBERNETES_PORT_443_TCP_PROTO",
        "KUBERNETES_PORT_443_TCP_PORT",
        "KUBERNETES_PORT_443_TCP_ADDR",
    )
}

BASE_ENV = {
    "HOME": names.WORKSPACE_DIR,
    "TMPDIR": names.WORKSPACE_DIR,
    "LANG": "C.UTF-8",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
}


def sandbox_uid(session_id: str, settings: OperatorSettings) -> int:
    """A uid for this session (stable for its id) from the configured range."""
    offset = int(names.validate_session_id(session_id).replace("-", ""), 16)
    return settings.sandbox_uid_base + offset % settings.sandbox_uid_count


def backstop_deadline(execution_seconds: int, settings: OperatorSettings) -> int:
    """The pod's activeDeadlineSeconds: never before the operator's own deadline.

    The kubelet counts it from the pod's start, the operator from the program's,
    which on a loaded node comes many seconds later (sandbox creation), at most the
    start timeout later (the operator ends a session that took longer: StartFailed).
    """
    return execution_seconds + math.ceil(settings.start_timeout_seconds) + DEADLINE_BACKSTOP_SECONDS


def build_pod(
    session_id: str,
    spec: CodeSessionSpec,
    language: Language,
    settings: OperatorSettings,
) -> dict[str, Any]:
    limits = spec.limits
    uid = sandbox_uid(session_id, settings)
    workspace = str(limits.workspace_bytes)
    non_root = {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid}
    seccomp = {"seccompProfile": {"type": "RuntimeDefault"}}
    env = KUBELET_ENV | BASE_ENV | language.env
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # The operator ends the session at its execution deadline (repair.py); the
        # kubelet's deadline, checked on its own schedule, is only the backstop.
        "activeDeadlineSeconds": backstop_deadline(spec.timeouts.execution_seconds, settings),
        "terminationGracePeriodSeconds": settings.termination_grace_seconds,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostNetwork": False,
        "hostPID": False,
        "hostIPC": False,
        "shareProcessNamespace": False,
        "hostname": "sandbox",
        # No uid at pod level: the pause container would run as the session's uid
        # and count against its RLIMIT_NPROC under runc.
        "securityContext": {"runAsNonRoot": True} | seccomp,
        "volumes": [
            {
                # The only writable path: memory-backed, so it counts against the
                # memory limit too, and capped at its own size.
                "name": WORKSPACE_VOLUME,
                "emptyDir": {"medium": "Memory", "sizeLimit": workspace},
            },
            *(
                {"name": name, "emptyDir": {"medium": "Memory", "sizeLimit": workspace}}
                for name in SCRATCH_VOLUMES
            ),
        ],
        "containers": [
            {
                "name": names.CONTAINER_NAME,
                "image": language.image,
                "imagePullPolicy": settings.image_pull_policy,
                # The runner waits for the api's request on stdin (so nothing runs or is
                # written before someone listens), then compiles and runs the program with
                # RLIMIT_NPROC = limits.pids (sent in the request's L frame).
                "command": [names.RUNNER_PATH],
                "workingDir": names.WORKSPACE_DIR,
                "env": [{"name": key, "value": value} for key, value in env.items()],
                # The api attaches to stdin/stdout/stderr; no TTY, so stdout and stderr
                # stay apart. stdinOnce: stdin closes for good when the attach ends.
                "stdin": True,
                "stdinOnce": True,
                "tty": False,
                "resources": {
                    "limits": {
                        "cpu": f"{limits.cpu_millis}m",
                        "memory": str(limits.memory_bytes),
                        "ephemeral-storage": str(settings.ephemeral_storage_limit_bytes),
                    },
                    "requests": {
                        "cpu": f"{min(settings.cpu_request_millis, limits.cpu_millis)}m",
                        "memory": str(min(settings.memory_request_bytes, limits.memory_bytes)),
                        "ephemeral-storage": str(
                            min(
                                settings.ephemeral_storage_request_bytes,
                                settings.ephemeral_storage_limit_bytes,
                            )
                        ),
                    },
                },
                "securityContext": non_root
                | seccomp
                | {
                    "readOnlyRootFilesystem": True,
                    "allowPrivilegeEscalation": False,
                    "privileged": False,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [
                    {"name": WORKSPACE_VOLUME, "mountPath": names.WORKSPACE_DIR},
                    *({"name": name, "mountPath": path} for name, path in SCRATCH_VOLUMES.items()),
                ],
                "terminationMessagePath": TERMINATION_LOG,
                # The runner's last frame (q, result=...) ends the log: on a non-zero exit
                # its tail is the termination message and tells a compile error apart.
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
    }
    if settings.runtime_class_name:
        pod_spec["runtimeClassName"] = settings.runtime_class_name
    elif not settings.allow_no_runtime_class:
        raise ValueError("refusing a sandbox pod without a RuntimeClass")
    if settings.sandbox_service_account:
        pod_spec["serviceAccountName"] = settings.sandbox_service_account
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": names.pod_name(session_id),
            "namespace": settings.namespace,
            "labels": names.session_labels(session_id)
            | {
                names.LABEL_COMPONENT: names.COMPONENT_SANDBOX,
                names.LABEL_LANGUAGE: language.id,
            },
        },
        "spec": pod_spec,
    }
