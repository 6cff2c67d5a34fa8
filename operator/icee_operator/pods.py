"""Pure builders of the objects a session owns: its source ConfigMap and its Pod.

Every hardening setting of the sandbox is in `build_pod`, in one place; nothing
here talks to the cluster (the handlers add owner references and create them).
"""

from __future__ import annotations

from typing import Any

from icee_core import names
from icee_core.languages import Language
from icee_core.models import CodeSessionSpec

from icee_operator.settings import OperatorSettings

SOURCE_VOLUME = "source"
WORKSPACE_VOLUME = "workspace"
TERMINATION_LOG = "/dev/termination-log"
# Written to the termination log when the compile step fails, so the operator can
# tell a compile error from the program's own non-zero exit.
COMPILATION_FAILED_MARKER = "icee:compilation-failed"
# The pod's own deadline trails the operator's by this much.
DEADLINE_BACKSTOP_SECONDS = 5
# Exit code of the sandbox script itself failing (before the program runs).
SANDBOX_SETUP_FAILED = 125

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


def sandbox_script(language: Language, pids: int) -> str:
    """The container's /bin/sh script: prepare, hold, compile, exec the program."""
    source = f"{names.SOURCE_DIR}/{language.file_name}"
    commands = language.commands(language.file_name)
    lines = [
        # RLIMIT_NPROC counts this uid's processes+threads. A pids cgroup cannot do it:
        # under gVisor the pod's cgroup also holds the sandbox kernel's own threads.
        # dash spells it -p, bash -u; with neither, refuse to run the program.
        f"{{ ulimit -p {pids} || ulimit -u {pids}; }} 2>/dev/null"
        f" || {{ echo 'icee: no process cap' >&2; exit {SANDBOX_SETUP_FAILED}; }}",
        "ulimit -c 0",
        f"cp {source} {language.file_name} || exit {SANDBOX_SETUP_FAILED}",
        # Hold until the api's attach is connected and sends one byte: nothing the
        # program writes can be lost before someone listens.
        "head -c 1 >/dev/null",
    ]
    if commands.compile:
        lines.append(
            f"{commands.compile}"
            f" || {{ rc=$?; printf %s {COMPILATION_FAILED_MARKER} >{TERMINATION_LOG}; exit $rc; }}"
        )
    lines.append(f"exec {commands.run}")
    return "\n".join(lines) + "\n"


def build_configmap(session_id: str, spec: CodeSessionSpec, language: Language) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": names.configmap_name(session_id),
            "labels": names.session_labels(session_id),
        },
        # Immutable: the kubelet need not watch it.
        "immutable": True,
        "data": {language.file_name: spec.code},
    }


def build_pod(
    session_id: str,
    spec: CodeSessionSpec,
    language: Language,
    settings: OperatorSettings,
) -> dict[str, Any]:
    limits = spec.limits
    uid = sandbox_uid(session_id, settings)
    non_root = {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid}
    seccomp = {"seccompProfile": {"type": "RuntimeDefault"}}
    env = BASE_ENV | language.env
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # The operator ends the session at its execution deadline (repair.py); the
        # kubelet's deadline, checked on its own schedule, is only the backstop.
        "activeDeadlineSeconds": spec.timeouts.execution_seconds + DEADLINE_BACKSTOP_SECONDS,
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
                "emptyDir": {"medium": "Memory", "sizeLimit": str(limits.workspace_bytes)},
            },
            {
                "name": SOURCE_VOLUME,
                "configMap": {"name": names.configmap_name(session_id), "defaultMode": 0o444},
            },
        ],
        "containers": [
            {
                "name": names.CONTAINER_NAME,
                "image": language.image,
                "imagePullPolicy": settings.image_pull_policy,
                "command": ["/bin/sh", "-c", sandbox_script(language, limits.pids)],
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
                    {"name": SOURCE_VOLUME, "mountPath": names.SOURCE_DIR, "readOnly": True},
                ],
                "terminationMessagePath": TERMINATION_LOG,
                "terminationMessagePolicy": "File",
            }
        ],
    }
    if settings.runtime_class_name:
        pod_spec["runtimeClassName"] = settings.runtime_class_name
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
