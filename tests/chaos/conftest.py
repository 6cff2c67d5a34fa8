"""The chaos suite's set-up: a namespace of its own with an operator and an api
that the tests kill with SIGKILL and start again (same port, as a Deployment's
Service would keep it), and a warm pool, so that claimed warm pods are in play.

The processes, kubectl and the small WebSocket client come from tests/integration
(loaded under another module name: both directories have a conftest).
The kubelet and containerd are the shared cluster's own (cluster/restart.sh).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import integration_conftest
import pytest

REPO = Path(__file__).resolve().parents[2]


it = integration_conftest.load()
kubeconfig = it.kubeconfig

import chaos_report  # noqa: E402

POOL_CRD = REPO / "charts" / "icee" / "crds" / "sandboxpool.yaml"
# Short enough that the suite's last sessions end soon after its last round; the
# mechanisms are the same at any value.
RETENTION_SECONDS = 5
CONNECT_TIMEOUT_SECONDS = 20
WARM_PODS = 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/chaos" in str(item.path):
            item.add_marker(pytest.mark.cluster)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = chaos_report.lines()
    if lines:
        terminalreporter.section("chaos figures")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def process_logs(request: pytest.FixtureRequest) -> Path:
    """The api's and operator's logs, every incarnation's, kept for the report.

    One folder per selection of tests (make test runs the suite in two parts).
    """
    names = (item.name.removeprefix("test_kill_") for item in request.session.items)
    part = "-".join(name.removeprefix("the_") for name in names)
    logs = REPO / "artifacts" / "chaos-logs" / part
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    return logs


class ChaosStack:
    """An operator and an api serving one namespace; either can be killed and restarted."""

    def __init__(self, namespace: str, logs: Path) -> None:
        self.namespace = namespace
        self.logs = logs
        self.api_port = it.free_port()
        self.health_port = it.free_port()
        self.operator = self._start_operator()
        self.api = self._start_api()

    def _start_operator(self) -> Any:
        env = {
            "ICEE_NAMESPACE": self.namespace,
            "ICEE_HEALTH_PORT": str(self.health_port),
            "ICEE_RETENTION_SECONDS": str(RETENTION_SECONDS),
            "ICEE_CONNECT_TIMEOUT_SECONDS": str(CONNECT_TIMEOUT_SECONDS),
        }
        return it.start_process("operator", [str(it.BIN / "icee-operator")], env, self.logs)

    def _start_api(self) -> Any:
        env = {
            "ICEE_NAMESPACE": self.namespace,
            "ICEE_PORT": str(self.api_port),
            "ICEE_HOST": "127.0.0.1",
            # One client (this test) with many sessions at once; quotas are tested elsewhere.
            "ICEE_CLIENT_BURST": "1000",
            "ICEE_CLIENT_RATE_PER_SECOND": "100",
            "ICEE_CLIENT_MAX_SESSIONS": "1000",
        }
        process = it.start_process("api", [str(it.BIN / "icee-api")], env, self.logs)
        return it.ApiServer(process, self.api_port, self.namespace)

    def wait_api_ready(self) -> None:
        it._wait_ready(self.api, timeout=60)

    def wait_operator_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        while time.monotonic() < deadline:
            if self.operator.popen.poll() is not None:
                raise RuntimeError(f"icee-operator exited:\n{self.operator.tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"icee-operator not live in {timeout} s:\n{self.operator.tail()}")

    def kill_api(self) -> None:
        self.api.process.stop(signal.SIGKILL)

    def restart_api(self) -> None:
        self.api = self._start_api()
        self.wait_api_ready()

    def kill_operator(self) -> None:
        self.operator.stop(signal.SIGKILL)

    def restart_operator(self) -> None:
        self.operator = self._start_operator()
        self.wait_operator_ready()

    def kubectl(self, *args: str, check: bool = True) -> str:
        out: str = it.kubectl("-n", self.namespace, *args, check=check)
        return out

    def items(self, kind: str, *selector: str) -> list[dict[str, Any]]:
        return list(json.loads(self.kubectl("get", kind, *selector, "-o", "json"))["items"])


@pytest.fixture(scope="session")
def stack(kubeconfig: str, process_logs: Path) -> Iterator[ChaosStack]:
    # helm does not upgrade CRDs; this checkout's (additive) schemas must be in.
    for crd in (it.CRD, POOL_CRD):
        it.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    for name in ("codesessions", "sandboxpools"):
        it.kubectl("wait", "--for=condition=Established", f"crd/{name}.icee.dev")
    chaos_report.reset()
    namespace = f"icee-chaos-{uuid.uuid4().hex[:8]}"
    it.kubectl("create", "namespace", namespace)
    s = ChaosStack(namespace, process_logs)
    try:
        s.wait_operator_ready()
        s.wait_api_ready()
        pool = {
            "apiVersion": "icee.dev/v1alpha1",
            "kind": "SandboxPool",
            "metadata": {"name": "python", "namespace": namespace},
            "spec": {"language": "python", "replicas": WARM_PODS},
        }
        subprocess.run(
            [it.KUBECTL, "apply", "-f", "-"], input=json.dumps(pool), text=True, check=True
        )
        yield s
    finally:
        s.api.process.stop()
        s.kubectl("delete", "codesessions,sandboxpools", "--all", "--timeout=60s", check=False)
        s.operator.stop()
        it.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
