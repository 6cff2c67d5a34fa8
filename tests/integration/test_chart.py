"""`helm install icee` on the local cluster: the image built offline, the chart,
an interactive session through the in-cluster api, `helm test`, and an
uninstall that leaves nothing behind. Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from websockets.sync.client import connect

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "icee"


# helm and kubectl talk to the local cluster unless told otherwise.
ENV = {**os.environ, "KUBECONFIG": os.environ.get("KUBECONFIG", "/var/lib/icee-cluster/kubeconfig")}


def run(*argv: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, env=ENV
    )
    if check:
        assert proc.returncode == 0, f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def helm() -> str:
    return run("bash", str(REPO / "cluster" / "build-helm.sh")).stdout.strip().splitlines()[-1]


def kubectl(*args: str, check: bool = True) -> str:
    return run(str(REPO / "cluster" / "kubectl"), *args, timeout=120, check=check).stdout


def test_chart_lints_and_schema_rejects_unknown_keys(helm: str) -> None:
    run(helm, "lint", str(CHART), "--strict")
    bad = run(helm, "lint", str(CHART), "--set", "api.replicaz=2", check=False)
    assert bad.returncode != 0
    assert "additional properties 'replicaz' not allowed" in bad.stdout + bad.stderr


def template(helm: str, *sets: str) -> list[dict[str, Any]]:
    """The chart rendered with `--set`s, as objects (tests, CRDs left out)."""
    argv = [helm, "template", "icee", str(CHART), "--namespace", "icee-system", "--skip-tests"]
    for value in sets:
        argv += ["--set", value]
    return [doc for doc in yaml.safe_load_all(run(*argv).stdout) if doc]


def test_chart_values_and_schema_cover_the_pools(helm: str) -> None:
    objects = template(
        helm, "pools.sizes.python=3", "pools.sizes.java=0", "pools.maxAgeSeconds=600"
    )
    pools = {o["metadata"]["name"]: o for o in objects if o["kind"] == "SandboxPool"}
    # One pool per language in pools.sizes, in the sandbox namespace; 0 keeps it (off).
    assert set(pools) == {"python", "javascript", "java", "cpp", "ruby"}
    assert pools["python"]["metadata"]["namespace"] == "icee-sandbox"
    assert pools["python"]["spec"] == {"language": "python", "replicas": 3, "maxAgeSeconds": 600}
    assert pools["java"]["spec"]["replicas"] == 0
    for bad, says in (
        ("pools.sizes.python=-1", "minimum"),
        ("pools.sizes.python=1000", "maximum"),
        ("pools.sizes.Py_thon=1", "Py_thon"),
        ("pools.maxAgeSeconds=5", "minimum"),
        ("pools.size=1", "additional properties 'size' not allowed"),
    ):
        refused = run(helm, "template", "icee", str(CHART), "--set", bad, check=False)
        assert refused.returncode != 0, bad
        assert says in refused.stderr, (bad, refused.stderr)


def test_chart_elects_a_leader_only_with_several_operators(helm: str) -> None:
    def operator_env_and_lease_rule(*sets: str) -> tuple[dict[str, str], bool]:
        objects = template(helm, *sets)
        deployment = next(
            o
            for o in objects
            if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-operator")
        )
        env = {
            e["name"]: e.get("value", "")
            for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        role = next(
            o
            for o in objects
            if o["kind"] == "Role" and o["metadata"]["name"].endswith("-operator")
        )
        rule = any("leases" in r["resources"] for r in role["rules"])
        return env, rule

    env, lease_rule = operator_env_and_lease_rule()
    assert "ICEE_LEADER_LEASE" not in env
    assert not lease_rule
    env, lease_rule = operator_env_and_lease_rule("operator.replicas=2")
    assert env["ICEE_LEADER_LEASE"] == "icee-operator"
    assert lease_rule


def test_manifests_match_the_chart(helm: str) -> None:
    rendered = run(
        "bash", str(REPO / "manifests" / "render.sh"), timeout=60, check=True
    ).stdout  # uses the same pinned helm
    committed = (REPO / "manifests" / "icee.yaml").read_text()
    assert rendered == committed, "manifests/icee.yaml is stale: manifests/render.sh > it"


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    sandbox: str
    port: int


@pytest.fixture(scope="module")
def release(helm: str) -> Iterator[Release]:
    image = run("bash", str(REPO / "cluster" / "build-icee-image.sh"), timeout=1800).stdout
    repository, tag = image.strip().splitlines()[-1].rsplit(":", 1)
    suffix = uuid.uuid4().hex[:6]
    rel = Release(f"icee-t{suffix}", f"icee-t{suffix}", f"icee-t{suffix}-sandbox", 0)
    start = time.monotonic()
    run(
        helm, "install", rel.name, str(CHART), "--namespace", rel.namespace, "--create-namespace",
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
        "--set", "image.pullPolicy=Never", "--set", "sandbox.imagePullPolicy=Never",
        "--set", f"sandbox.namespace={rel.sandbox}", "--set", "sandbox.createRuntimeClass=false",
        "--set", "api.service.type=NodePort", "--set", "api.shutdownGraceSeconds=5",
        # Two operators: one leads (a Lease), the other stands by.
        "--set", "operator.replicas=2",
        # One warm pod in all: the node has 2 cores.
        "--set", "pools.sizes.python=1", "--set", "pools.sizes.javascript=0",
        "--set", "pools.sizes.java=0", "--set", "pools.sizes.cpp=0", "--set", "pools.sizes.ruby=0",
        "--wait", "--timeout", "5m",
    )  # fmt: skip
    print(f"install-to-ready: {time.monotonic() - start:.1f} s")
    port = int(
        kubectl(
            "-n", rel.namespace, "get", "service", f"{rel.name}-api",
            "-o", "jsonpath={.spec.ports[0].nodePort}",
        )
    )  # fmt: skip
    rel = Release(rel.name, rel.namespace, rel.sandbox, port)
    try:
        yield rel
    finally:
        run(helm, "uninstall", rel.name, "-n", rel.namespace, "--wait", check=False)
        kubectl("delete", "namespace", rel.namespace, "--wait=false", check=False)


def test_install_brings_api_and_operator_up(release: Release) -> None:
    deployments = json.loads(kubectl("-n", release.namespace, "get", "deployments", "-o", "json"))
    ready = {
        d["metadata"]["name"]: d["status"].get("readyReplicas", 0) for d in deployments["items"]
    }
    assert ready == {f"{release.name}-api": 1, f"{release.name}-operator": 2}


def test_one_operator_leads_the_other_stands_by(release: Release) -> None:
    pods = kubectl(
        "-n", release.namespace, "get", "pods", "-l", "app.kubernetes.io/component=operator",
        "-o", "jsonpath={.items[*].metadata.name}",
    ).split()  # fmt: skip
    assert len(pods) == 2, pods
    # Installed and running is not elected yet: the operators start in a few seconds.
    lease = ("-n", release.sandbox, "get", "lease", f"{release.name}-operator")
    deadline = time.monotonic() + 120
    while not (holder := kubectl(*lease, "-o=jsonpath={.spec.holderIdentity}", check=False)):
        logs = [kubectl("-n", release.namespace, "logs", pod, check=False) for pod in pods]
        assert time.monotonic() < deadline, f"no operator holds the lease: {logs}"
        time.sleep(1)
    leaders = [pod for pod in pods if holder.startswith(f"{pod}-")]
    assert len(leaders) == 1, (holder, pods)
    (standby,) = set(pods) - set(leaders)
    assert "standing by" in kubectl("-n", release.namespace, "logs", standby)


def test_interactive_session_through_the_in_cluster_api(release: Release) -> None:
    base = f"127.0.0.1:{release.port}"
    code = "name = input('name? ')\nage = input('age? ')\nprint(f'{name} is {age}')\n"
    body = json.dumps({"language": "python", "code": code}).encode()
    request = urllib.request.Request(
        f"http://{base}/session", body, {"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
        session_id = json.load(response)["sessionId"]
    stdout, final = "", None
    with connect(f"ws://{base}/ws/session/{session_id}", open_timeout=30) as ws:
        sent = 0
        for raw in ws:
            message = json.loads(raw)
            if message["type"] == "stdout":
                stdout += message["data"]
                # Answer each prompt only once it has been shown.
                if sent == 0 and "name? " in stdout:
                    ws.send(json.dumps({"type": "input", "data": "Ada\n"}))
                    sent = 1
                elif sent == 1 and "age? " in stdout:
                    ws.send(json.dumps({"type": "input", "data": "36\n"}))
                    sent = 2
            elif message["type"] == "state" and message["state"] in ("finished", "terminated"):
                final = message
                break
    assert stdout == "name? age? Ada is 36\n"
    assert final is not None
    assert (final["state"], final["exitCode"]) == ("finished", 0)
    # The final frame comes from the runner at once; the operator's authoritative
    # status follows from the pod (watched, not polled).
    kubectl(
        "-n", release.sandbox, "wait", f"codesession/{session_id}",
        "--for=jsonpath={.status.phase}=Finished", "--timeout=60s",
    )  # fmt: skip
    listed = kubectl("-n", release.sandbox, "get", "codesessions")
    row = next(line for line in listed.splitlines() if line.startswith(session_id))
    assert "python" in row
    assert "Finished" in row


def test_pools_reach_their_size_after_install(release: Release) -> None:
    deadline = time.monotonic() + 120
    while True:
        ready = kubectl(
            "-n", release.sandbox, "get", "sandboxpool", "python", "-o", "jsonpath={.status.ready}"
        )  # fmt: skip
        if ready == "1":
            break
        assert time.monotonic() < deadline, f"python pool not ready: {ready!r}"
        time.sleep(1)
    table = kubectl("-n", release.sandbox, "get", "sandboxpools")
    assert re.search(r"^python\s+python\s+1\s+1\s+0\s", table, re.M), table
    assert re.search(r"^ruby\s+ruby\s+0\s", table, re.M), table


def test_kubectl_scale_sandboxpool_of_the_release(release: Release) -> None:
    def ready() -> str:
        return kubectl(
            "-n", release.sandbox, "get", "sandboxpool", "python", "-o", "jsonpath={.status.ready}"
        )  # fmt: skip

    kubectl("-n", release.sandbox, "scale", "sandboxpool", "python", "--replicas=2")
    deadline = time.monotonic() + 120
    while ready() != "2":
        assert time.monotonic() < deadline, f"python pool not scaled up: {ready()!r}"
        time.sleep(1)
    path = f"/apis/icee.dev/v1alpha1/namespaces/{release.sandbox}/sandboxpools/python/scale"
    scale = json.loads(kubectl("get", "--raw", path))
    assert (scale["spec"]["replicas"], scale["status"]["replicas"]) == (2, 2)
    kubectl("-n", release.sandbox, "scale", "sandboxpool", "python", "--replicas=1")
    deadline = time.monotonic() + 120
    while ready() != "1":
        assert time.monotonic() < deadline, f"python pool not scaled down: {ready()!r}"
        time.sleep(1)


def test_helm_test_runs_a_session(helm: str, release: Release) -> None:
    result = run(helm, "test", release.name, "-n", release.namespace, "--timeout", "3m")
    # The test pod asserts the session's output and exit code itself.
    assert re.search(r"TEST SUITE:\s+" + release.name + r"-test-session", result.stdout)
    assert re.search(r"Phase:\s+Succeeded", result.stdout), result.stdout


def test_sandbox_namespace_has_the_quota(release: Release) -> None:
    quota = json.loads(kubectl("-n", release.sandbox, "get", "resourcequotas", "-o", "json"))
    hard = [q["spec"]["hard"] for q in quota["items"]]
    # (The API server writes 2000 back as "2k".)
    assert hard == [{"pods": "100", "count/codesessions.icee.dev": "2k"}], hard


HELM_TEST_TOKEN = "helm-test-token-" + uuid.uuid4().hex


def test_tokens_on_refuse_anonymous_calls_and_helm_test_passes(helm: str, release: Release) -> None:
    run(
        helm, "upgrade", release.name, str(CHART), "-n", release.namespace, "--reuse-values",
        "--set", "auth.tokens.enabled=true",
        "--set", f"auth.tokens.values.helmtest={HELM_TEST_TOKEN}",
        "--wait", "--timeout", "5m",
    )  # fmt: skip
    base = f"http://127.0.0.1:{release.port}"
    body = json.dumps({"language": "python", "code": "print(1)"}).encode()
    headers = {"content-type": "application/json"}
    # The old api pod may still drain: wait until the new one answers.
    deadline = time.monotonic() + 60
    refusal: dict[str, str] | None = None
    while refusal is None:
        try:
            urllib.request.urlopen(urllib.request.Request(f"{base}/session", body, headers))
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                refusal = json.load(exc)
        assert time.monotonic() < deadline, "POST without a token was not refused with 401"
        time.sleep(1)
    assert "Bearer" in refusal["detail"]
    with urllib.request.urlopen(f"{base}/languages", timeout=30) as response:
        assert response.status == 200  # stays open
    # The helm test pod reads the token from the Secret, checks that a POST without
    # it gets 401 (it exits non-zero otherwise) and runs a session with it.
    result = run(helm, "test", release.name, "-n", release.namespace, "--timeout", "3m")
    assert re.search(r"Phase:\s+Succeeded", result.stdout), result.stdout


def test_uninstall_leaves_nothing_behind(helm: str, release: Release) -> None:
    run(helm, "uninstall", release.name, "-n", release.namespace, "--wait", "--timeout", "3m")
    selector = f"app.kubernetes.io/instance={release.name}"
    # Helm deletes the Deployments; their pods go by garbage collection.
    kubectl(
        "-n", release.namespace, "wait", "--for=delete", "pods", "-l", selector, "--timeout=120s"
    )  # fmt: skip
    for namespace in (release.namespace, release.sandbox):
        left = kubectl(
            "-n", namespace, "get", "pods,services,deployments,roles,rolebindings,serviceaccounts,"
            "configmaps,networkpolicies,secrets,resourcequotas", "-l", selector, "-o", "name",
            check=False,
        )  # fmt: skip
        assert left.strip() == "", left
    # The warm pods go with their pools (owner references).
    deadline = time.monotonic() + 120
    while kubectl("-n", release.sandbox, "get", "pods", "-l", "icee.dev/pool", "-o", "name",
                  check=False).strip():  # fmt: skip
        assert time.monotonic() < deadline, "warm pods left after uninstall"
        time.sleep(1)
    cluster_wide = kubectl("get", "clusterroles,clusterrolebindings", "-l", selector, "-o", "name")
    assert cluster_wide.strip() == ""
    # The chart's sandbox namespace goes with the release (its sandboxes with it).
    deadline = time.monotonic() + 120
    while kubectl("get", "namespace", release.sandbox, "--ignore-not-found", "-o", "name"):
        assert time.monotonic() < deadline, "sandbox namespace still there"
        time.sleep(1)
