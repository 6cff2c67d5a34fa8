"""The chart's ValidatingAdmissionPolicy against hand-made pods, on the real API
server. Requests are server-side dry runs: admission runs, nothing is created."""

from __future__ import annotations

import copy
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import icee_it_conftest as it
import pytest
from chart import kubectl_apply, render
from icee_core.languages import load_registry
from icee_core.models import CodeSessionSpec
from icee_operator.pods import build_pod
from icee_operator.settings import OperatorSettings

pytestmark = pytest.mark.cluster

SESSION_ID = "0b7c1f8e-3c1d-4e6a-9b2f-5d8e7a6c4b3a"
DENIED = "ValidatingAdmissionPolicy"


def dry_run(pod: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [it.KUBECTL, "create", "--dry-run=server", "-f", "-"],
        input=json.dumps(pod),
        capture_output=True,
        text=True,
        timeout=60,
    )


def sandbox_pod(namespace: str, account: str, runtime: str = "gvisor") -> dict[str, Any]:
    """A pod exactly as the operator builds it."""
    settings = OperatorSettings(  # type: ignore[call-arg]
        _env_file=None,
        namespace=namespace,
        runtime_class_name=runtime,
        sandbox_service_account=account,
    )
    spec = CodeSessionSpec(language="python", code="print(1)")
    return build_pod(SESSION_ID, spec, load_registry().get("python"), settings)


@pytest.fixture(scope="module")
def policy_namespace(kubeconfig: str, helm: str) -> Iterator[tuple[str, str]]:
    """A namespace bound to the chart's policy and nothing else (no Pod Security
    labels), so every rejection below is the policy's own."""
    release = f"icee-sec-adm-{uuid.uuid4().hex[:6]}"
    namespace = release
    account = f"{release}-sandbox"
    it.kubectl("create", "namespace", namespace)
    manifest = render(helm, release, namespace, "gvisor")
    # Only the policy (the namespace exists, without its Pod Security label).
    policy = "---".join(d for d in manifest.split("---") if "ValidatingAdmissionPolicy" in d)
    kubectl_apply(policy)
    it.kubectl("create", "serviceaccount", account, "-n", namespace)
    try:
        # The policy takes effect once the API server has compiled it.
        bare = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "probe", "namespace": namespace},
                "spec": {"containers": [{"name": "c", "image": "icee/pause:3.10"}]}}  # fmt: skip
        deadline = time.monotonic() + 60
        while DENIED not in dry_run(bare).stderr:
            assert time.monotonic() < deadline, "the admission policy never took effect"
            time.sleep(1)
        yield namespace, account
    finally:
        for kind in ("validatingadmissionpolicybinding", "validatingadmissionpolicy"):
            it.kubectl("delete", kind, f"{release}-sandbox-pods", "--ignore-not-found", check=False)
        it.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = pod["spec"]["containers"][0]
    return container


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(pod: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = pod["spec"]
        for key in parents:
            target = target[key]
        if value is None:
            target.pop(last, None)
        else:
            target[last] = value

    return apply


def _container_set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(pod: dict[str, Any]) -> None:
        context = _container(pod)["securityContext"]
        if value is None:
            context.pop(key, None)
        else:
            context[key] = value

    return apply


def _add_volume(volume: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return lambda pod: pod["spec"]["volumes"].append(volume)


def _init_container(pod: dict[str, Any]) -> None:
    init = copy.deepcopy(_container(pod)) | {"name": "init"}
    init["securityContext"]["privileged"] = True
    init["securityContext"]["allowPrivilegeEscalation"] = True
    pod["spec"]["initContainers"] = [init]


def _privileged(pod: dict[str, Any]) -> None:
    # The API server itself refuses privileged with allowPrivilegeEscalation false.
    context = _container(pod)["securityContext"]
    context["privileged"] = True
    context.pop("allowPrivilegeEscalation")


TOKEN_VOLUME = {
    "name": "token",
    "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]},
}

BREAKS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "no runtime class": (_set("runtimeClassName", None), "RuntimeClass"),
    "runc runtime class": (_set("runtimeClassName", "runc"), "RuntimeClass"),
    "host network": (_set("hostNetwork", True), "network, PID or IPC"),
    "host pid": (_set("hostPID", True), "network, PID or IPC"),
    "host ipc": (_set("hostIPC", True), "network, PID or IPC"),
    "host path": (_add_volume({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
    "privileged": (_privileged, "privileged"),
    "added capability": (
        _container_set("capabilities", {"drop": ["ALL"], "add": ["NET_RAW"]}),
        "add capabilities",
    ),
    "privilege escalation": (
        _container_set("allowPrivilegeEscalation", True),
        "allowPrivilegeEscalation",
    ),
    "privilege escalation unset": (
        _container_set("allowPrivilegeEscalation", None),
        "allowPrivilegeEscalation",
    ),
    "privileged init container": (_init_container, "privileged"),
    "token automounted": (_set("automountServiceAccountToken", True), "token"),
    "token unset": (_set("automountServiceAccountToken", None), "token"),
    "projected token": (_add_volume(TOKEN_VOLUME), "token"),
    "default service account": (_set("serviceAccountName", None), "service account"),
}


def test_the_operators_pod_is_admitted(policy_namespace: tuple[str, str]) -> None:
    proc = dry_run(sandbox_pod(*policy_namespace))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_a_pod_that_is_not_locked_down_is_rejected(
    policy_namespace: tuple[str, str], name: str
) -> None:
    pod = sandbox_pod(*policy_namespace)
    change, message = BREAKS[name]
    change(pod)
    proc = dry_run(pod)
    assert proc.returncode != 0, f"{name}: admitted"
    assert DENIED in proc.stderr, proc.stderr
    assert message in proc.stderr, proc.stderr


def test_a_hand_made_pod_is_rejected_in_the_sandbox_namespace(sandbox: Any) -> None:
    """What `kubectl run` would make, in the real sandbox namespace (Pod Security
    `restricted` as well): the policy turns it away for its missing RuntimeClass."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "unsandboxed", "namespace": sandbox.namespace},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "c", "image": "icee/sandbox-python:3.11",
                "securityContext": {"allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }  # fmt: skip
    proc = dry_run(pod)
    assert proc.returncode != 0
    assert DENIED in proc.stderr, proc.stderr
    assert "RuntimeClass" in proc.stderr, proc.stderr
    # The operator's own pod passes in the same namespace.
    ok = dry_run(sandbox_pod(sandbox.namespace, sandbox.service_account, sandbox.runtime))
    assert ok.returncode == 0, ok.stderr
