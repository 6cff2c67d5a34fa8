"""The cluster scripts themselves: idempotent, recover from a cluster whose
processes were killed, and refuse clearly when a prerequisite is missing.

Runs last (make test runs this folder after the rest): it kills the cluster.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
RUN = Path("/run/icee-cluster")
COMPONENTS = [
    "etcd", "containerd", "kube-apiserver", "kube-controller-manager",
    "kube-scheduler", "kubelet", "kube-proxy",
]  # fmt: skip


def sh(*argv: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def kubectl(*args: str) -> str:
    proc = sh(str(CLUSTER / "kubectl"), *args, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_up_on_a_healthy_cluster_changes_nothing() -> None:
    pids = {c: (RUN / f"{c}.pid").read_text() for c in COMPONENTS}
    start = time.monotonic()
    proc = sh("bash", str(CLUSTER / "up.sh"))
    assert proc.returncode == 0, proc.stderr
    assert "already up" in proc.stderr
    assert time.monotonic() - start < 30
    assert {c: (RUN / f"{c}.pid").read_text() for c in COMPONENTS} == pids


def test_up_recovers_a_cluster_killed_without_warning() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "survivor-check", "namespace": "default"},
        "spec": {
            "runtimeClassName": "gvisor",
            "containers": [
                {
                    "name": "c",
                    "image": "icee/sandbox-python:3.11",
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "600"],
                }
            ],
        },
    }
    proc = subprocess.run(
        [str(CLUSTER / "kubectl"), "apply", "-f", "-"],
        input=json.dumps(pod), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    kubectl("wait", "pod/survivor-check", "--for=condition=Ready", "--timeout=90s")
    for c in COMPONENTS:
        sh("kill", "-9", (RUN / f"{c}.pid").read_text().strip())
    time.sleep(1)
    assert sh("bash", str(CLUSTER / "status.sh")).returncode == 1

    proc = sh("bash", str(CLUSTER / "up.sh"))
    assert proc.returncode == 0, proc.stderr
    assert sh("bash", str(CLUSTER / "status.sh")).returncode == 0
    # A fresh cluster: the old sandbox is gone, and new pods run under gVisor.
    assert "survivor-check" not in kubectl("get", "pods", "-A", "-o", "name")
    assert "runsc-sandbox" not in sh("ps", "-eo", "args").stdout
    pod["metadata"]["name"] = "after-recovery"
    pod["spec"]["containers"][0]["command"] = ["sh", "-c", "cat /proc/version; dmesg"]
    pod["spec"]["restartPolicy"] = "Never"
    subprocess.run(
        [str(CLUSTER / "kubectl"), "apply", "-f", "-"], input=json.dumps(pod), text=True,
        capture_output=True, check=True,
    )  # fmt: skip
    kubectl(
        "wait", "pod/after-recovery", "--for=jsonpath={.status.phase}=Succeeded", "--timeout=90s"
    )
    # gVisor's sentry boots with its own kernel messages, not the host's kernel.
    log = kubectl("logs", "after-recovery")
    assert "gVisor" in log, log
    assert platform.release() not in log, log
    kubectl("delete", "pod", "after-recovery", "--now")


def test_up_refuses_to_run_without_root() -> None:
    proc = sh("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
              "bash", str(CLUSTER / "up.sh"), timeout=60)  # fmt: skip
    assert proc.returncode == 1
    assert "must run as root" in proc.stderr
