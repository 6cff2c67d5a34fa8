"""The attack battery's set-up: per runtime, a sandbox namespace as the chart makes
it (its admission policy, NetworkPolicy, sandbox service account), an operator
whose RuntimeClass is that runtime, an api, and every attack run once.

ICEE_SECURITY_RUNTIMES (default "gvisor,runc") chooses the runtimes; each is a
RuntimeClass the cluster provides (cluster/config/containerd.toml).
The api/operator processes and the small client come from tests/integration.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import integration_conftest
import pytest

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "icee"


it = integration_conftest.load()
kubeconfig = it.kubeconfig
process_logs = it.process_logs

import battery  # noqa: E402  (needs icee_it_conftest)
import programs  # noqa: E402
from battery import Attack, Run  # noqa: E402
from chart import kubectl_apply, render  # noqa: E402

RUNTIMES = [r for r in os.environ.get("ICEE_SECURITY_RUNTIMES", "gvisor,runc").split(",") if r]
ARTIFACTS = REPO / "artifacts" / "security"
RETENTION_SECONDS = 5
# Attacks at once, beside as many canaries: enough to keep the wall time down on
# two cores, few enough that a slow pod start does not trip anyone's deadline.
PARALLEL = 4


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/security" in str(item.path):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def helm() -> str:
    out = subprocess.run(
        ["bash", str(REPO / "cluster" / "build-helm.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session", params=RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Sandbox:
    runtime: str
    namespace: str
    release: str
    service_account: str
    api: Any  # icee_it_conftest.ApiServer
    policy_manifest: str


@pytest.fixture(scope="session")
def sandbox(runtime: str, kubeconfig: str, helm: str, process_logs: Path) -> Iterator[Sandbox]:
    suffix = uuid.uuid4().hex[:6]
    release = f"icee-sec-{suffix}"
    namespace = f"icee-sec-{runtime}-{suffix}"
    account = f"{release}-sandbox"  # the chart's name for it
    it.kubectl("apply", "--server-side", "-f", str(it.CRD))
    it.kubectl("wait", "--for=condition=Established", "crd/codesessions.icee.dev")
    manifest = render(helm, release, namespace, runtime)
    kubectl_apply(manifest)
    kubectl_apply(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": account, "namespace": namespace},
                "automountServiceAccountToken": False,
            }
        )
    )
    operator = it.start_process(
        "operator",
        [str(it.BIN / "icee-operator")],
        {
            "ICEE_NAMESPACE": namespace,
            "ICEE_RUNTIME_CLASS_NAME": runtime,
            "ICEE_SANDBOX_SERVICE_ACCOUNT": account,
            "ICEE_RETENTION_SECONDS": str(RETENTION_SECONDS),
            "ICEE_IMAGE_PULL_POLICY": "Never",
            "ICEE_HEALTH_PORT": str(it.free_port()),
        },
        process_logs,
    )
    port = it.free_port()
    api_process = it.start_process(
        "api",
        [str(it.BIN / "icee-api")],
        {
            "ICEE_NAMESPACE": namespace,
            "ICEE_PORT": str(port),
            "ICEE_HOST": "127.0.0.1",
            # The battery is one client with ~50 sessions in two minutes; quotas are
            # tested elsewhere.
            "ICEE_CLIENT_BURST": "1000",
            "ICEE_CLIENT_RATE_PER_SECOND": "100",
        },
        process_logs,
    )
    api = it.ApiServer(api_process, port, namespace)
    try:
        it._wait_ready(api)
        yield Sandbox(runtime, namespace, release, account, api, manifest)
    finally:
        api_process.stop()
        it.kubectl("delete", "codesessions", "--all", "-n", namespace, "--timeout=60s", check=False)
        operator.stop()
        for name in it.kubectl(
            "get", "codesessions", "-n", namespace, "-o", "name", check=False
        ).split():
            it.kubectl("patch", name, "-n", namespace, "--type=merge", "-p",
                       '{"metadata":{"finalizers":null}}', check=False)  # fmt: skip
        for kind in ("validatingadmissionpolicybinding", "validatingadmissionpolicy"):
            it.kubectl("delete", kind, f"{release}-sandbox-pods", "--ignore-not-found", check=False)
        it.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def network_targets() -> dict[str, tuple[str, int]]:
    """What a sandbox must not reach: the API server, the node, the icee api, DNS."""
    node = json.loads(it.kubectl("get", "nodes", "-o", "json"))["items"][0]
    node_ip = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
    gateway = node["spec"].get("podCIDR", "10.244.0.0/24").split("/")[0].rsplit(".", 1)[0] + ".1"
    targets = {
        "kubernetes-api": (
            it.kubectl("get", "service", "kubernetes", "-n", "default", "-o",
                       "jsonpath={.spec.clusterIP}").strip(),
            443,
        ),
        "node-apiserver": (node_ip, 6443),
        "node-kubelet": (node_ip, 10250),
        "node-etcd": (node_ip, 2379),
        "node-icee-nodeport": (node_ip, 30080),
        "gateway-kubelet": (gateway, 10250),
        "gateway-apiserver": (gateway, 6443),
        "loopback-etcd": ("127.0.0.1", 2379),
        "loopback-kubelet-healthz": ("127.0.0.1", 10248),
        "loopback-kube-proxy": ("127.0.0.1", 10249),
    }  # fmt: skip
    services = json.loads(it.kubectl("get", "services", "-A", "-o", "json"))["items"]
    for svc in services:
        meta, spec = svc["metadata"], svc["spec"]
        ip = spec.get("clusterIP")
        if not ip or ip == "None" or meta["name"] == "kubernetes":
            continue
        if meta["name"].endswith("-api") or meta["name"] in ("kube-dns", "coredns"):
            port = spec["ports"][0]["port"]
            targets[f"service-{meta['namespace']}-{meta['name']}"] = (ip, port)
    return targets


def attacks(sandbox: Sandbox) -> list[Attack]:
    quick = {"timeouts": {"executionSeconds": 15}}
    return [
        Attack("fork", programs.FORK),
        Attack("threads", programs.THREADS),
        Attack("namespaces-then-fork", programs.NAMESPACES_THEN_FORK),
        Attack("unshare-command", programs.UNSHARE_COMMAND),
        Attack("setrlimit", programs.SETRLIMIT),
        Attack("exec", programs.EXEC),
        Attack("setuid", programs.SETUID),
        Attack("fork-bomb", programs.FORK_BOMB, quick),
        Attack("memory", programs.MEMORY),
        Attack("cpu", programs.CPU, on_line=battery.measure_cpu),
        Attack("flood-stdout", programs.FLOOD_STDOUT),
        Attack("flood-stderr", programs.FLOOD_STDERR),
        Attack("disk", programs.DISK, on_line=battery.measure_disk, within=240),
        Attack("inodes", programs.INODES, on_line=battery.measure_disk),
        Attack(
            "network",
            programs.program(
                programs.NETWORK_BODY, TARGETS=network_targets(), NAMESPACE=sandbox.namespace
            ),
        ),
        Attack("identity", programs.IDENTITY),
        Attack("proc-sys", programs.PROC_SYS),
        Attack("environment", programs.ENVIRONMENT),
        Attack("escapes", programs.ESCAPES),
    ]


@pytest.fixture(scope="session")
def runs(sandbox: Sandbox) -> dict[str, Run]:
    """Every attack once against this runtime, concurrently."""
    api = sandbox.api

    async def everything() -> dict[str, Run]:
        marker = uuid.uuid4().hex
        main = asyncio.create_task(battery.run_all(api, attacks(sandbox), PARALLEL))
        persist = asyncio.create_task(battery.persistence(api, f"icee-persist-{marker}"))
        cross = asyncio.create_task(battery.cross_session(api, f"icee-victim-{marker}"))
        result = await main
        for run in (*await persist, *await cross):
            result[run.attack] = run
        return result

    result = asyncio.run(everything())
    # Every run as the tests saw it, for the parity table and for debugging.
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    report = {name: json.loads(run.describe()) | {"result": run.tagged("RESULT")[-1:]}
              for name, run in sorted(result.items())}  # fmt: skip
    (ARTIFACTS / f"{sandbox.runtime}.json").write_text(json.dumps(report, indent=1, default=str))
    return result
