"""The local cluster (cluster/up.sh) is a real, working Kubernetes with gVisor.

These run kubectl against the cluster `make cluster` brought up; nothing is mocked.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

IMAGE = "icee/sandbox-python:3.11"


def _kubectl_path() -> str:
    cached = sorted(Path.home().glob(".cache/icee/k8s-v*/bin/kubectl"))
    if cached:
        return str(cached[-1])
    found = shutil.which("kubectl")
    assert found, "kubectl not found; run make cluster"
    return found


KUBECTL = _kubectl_path()


def kubectl(*args: str, stdin: str | None = None, timeout: float = 90) -> str:
    proc = subprocess.run(
        [KUBECTL, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl {' '.join(args)} failed: {proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    assert os.path.exists(os.environ.get("KUBECONFIG", "")), "KUBECONFIG must point at the cluster"
    ns = f"cluster-test-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", ns)
    # Pods need the namespace's default service account, made asynchronously.
    deadline = time.monotonic() + 30
    while subprocess.run(
        [KUBECTL, "-n", ns, "get", "serviceaccount", "default"], capture_output=True, check=False
    ).returncode:
        assert time.monotonic() < deadline, "default service account never appeared"
        time.sleep(0.2)
    yield ns
    kubectl("delete", "namespace", ns, "--wait=false")


def run_pod(ns: str, name: str, runtime: str, command: list[str]) -> str:
    """Run a pod to completion and return its log."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "runtimeClassName": runtime,
            "restartPolicy": "Never",
            "containers": [
                {"name": "c", "image": IMAGE, "imagePullPolicy": "Never", "command": command}
            ],
        },
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(pod))
    kubectl(
        "-n", ns, "wait", f"pod/{name}", "--for=jsonpath={.status.phase}=Succeeded", "--timeout=90s"
    )
    return kubectl("-n", ns, "logs", name)


def test_node_ready_and_gvisor_runtimeclass() -> None:
    nodes = json.loads(kubectl("get", "nodes", "-o", "json"))["items"]
    assert len(nodes) == 1
    ready = {c["type"]: c["status"] for c in nodes[0]["status"]["conditions"]}["Ready"]
    assert ready == "True"
    classes = {
        rc["metadata"]["name"]: rc["handler"]
        for rc in json.loads(kubectl("get", "runtimeclass", "-o", "json"))["items"]
    }
    assert classes["gvisor"] == "runsc"
    assert classes["runc"] == "runc"


def test_gvisor_pod_runs_on_the_gvisor_kernel(namespace: str) -> None:
    log = run_pod(namespace, "kernel-gvisor", "gvisor", ["sh", "-c", "cat /proc/version; dmesg"])
    assert "gVisor" in log, log
    assert platform.release() not in log


def test_runc_pod_runs_on_the_host_kernel(namespace: str) -> None:
    log = run_pod(namespace, "kernel-runc", "runc", ["cat", "/proc/version"])
    assert platform.release() in log
    assert "gVisor" not in log


def test_gvisor_pod_has_no_network(namespace: str) -> None:
    log = run_pod(namespace, "net-gvisor", "gvisor", ["cat", "/proc/net/dev"])
    interfaces = {line.split(":")[0].strip() for line in log.splitlines() if ":" in line}
    assert interfaces == {"lo"}, log


@pytest.mark.parametrize("runtime", ["gvisor", "runc"])
def test_attach_streams_stdin_and_stdout(namespace: str, runtime: str) -> None:
    program = "import sys\nfor line in sys.stdin: print('got', line.strip(), flush=True)"
    out = kubectl(
        "-n", namespace, "run", f"attach-{runtime}", "-i", "--rm", "--restart=Never", "--quiet",
        f"--image={IMAGE}", "--image-pull-policy=Never",
        f"--overrides={json.dumps({'spec': {'runtimeClassName': runtime}})}",
        "--", "python3", "-c", program,
        stdin="hello\nworld\n",
    )  # fmt: skip
    assert "got hello\ngot world\n" in out


@pytest.fixture(scope="module")
def server_pod(namespace: str) -> str:
    """A runc pod serving HTTP on 8080, for exec, logs, port-forward and service access."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "server", "namespace": namespace},
        "spec": {
            "runtimeClassName": "runc",
            "containers": [
                {
                    "name": "c",
                    "image": IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-m", "http.server", "8080", "--directory", "/etc"],
                    # Without a probe, Ready means only "started": on a loaded node the
                    # server was not yet listening when port-forward connected.
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                }
            ],
        },
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(pod))
    kubectl("-n", namespace, "wait", "pod/server", "--for=condition=Ready", "--timeout=90s")
    return "server"


def test_exec(namespace: str, server_pod: str) -> None:
    assert kubectl("-n", namespace, "exec", server_pod, "--", "echo", "exec-ok") == "exec-ok\n"


def test_port_forward_and_logs(namespace: str, server_pod: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with (
        tempfile.TemporaryFile("w+") as errors,
        subprocess.Popen(
            [KUBECTL, "-n", namespace, "port-forward", f"pod/{server_pod}", f"{port}:8080"],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        ) as pf,
    ):
        try:
            assert pf.stdout is not None
            assert "Forwarding from" in pf.stdout.readline()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/hostname", timeout=10) as r:
                assert r.read().decode().strip() == server_pod
        except Exception:
            errors.seek(0)
            print("kubectl port-forward said:", errors.read())
            raise
        finally:
            pf.terminate()
    assert "GET /hostname" in kubectl("-n", namespace, "logs", server_pod)


def test_pod_reaches_api_server_through_kubernetes_service(namespace: str, server_pod: str) -> None:
    program = (
        "import json, os, ssl, urllib.request\n"
        "sa = '/var/run/secrets/kubernetes.io/serviceaccount/'\n"
        "ctx = ssl.create_default_context(cafile=sa + 'ca.crt')\n"
        "ctx.check_hostname = False\n"
        "url = 'https://%s:%s/version' % (os.environ['KUBERNETES_SERVICE_HOST'],"
        " os.environ['KUBERNETES_SERVICE_PORT'])\n"
        "req = urllib.request.Request(url, headers={'Authorization': 'Bearer ' +"
        " open(sa + 'token').read()})\n"
        "print(json.load(urllib.request.urlopen(req, context=ctx, timeout=10))['gitVersion'])\n"
    )
    service_ip = kubectl("get", "service", "kubernetes", "-o", "jsonpath={.spec.clusterIP}")
    env = kubectl("-n", namespace, "exec", server_pod, "--", "printenv", "KUBERNETES_SERVICE_HOST")
    assert env.strip() == service_ip
    version = kubectl("-n", namespace, "exec", server_pod, "--", "python3", "-c", program)
    server_version = json.loads(kubectl("version", "-o", "json"))["serverVersion"]["gitVersion"]
    assert version.strip() == server_version
