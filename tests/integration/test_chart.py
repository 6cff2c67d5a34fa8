"""`helm install icee` on the local cluster: the image built offline, the chart,
an interactive session through the in-cluster api, `helm test`, and an
uninstall that leaves nothing behind. Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import threading
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
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

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


def test_chart_ships_only_the_crds_of_icee(helm: str) -> None:
    out = run(
        helm, "template", "icee", str(CHART), "--namespace", "icee-system", "--include-crds",
        "--skip-tests",
    ).stdout  # fmt: skip
    crds = {
        doc["metadata"]["name"]
        for doc in yaml.safe_load_all(out)
        if doc and doc["kind"] == "CustomResourceDefinition"
    }
    # No kopfpeerings.kopf.dev: kopf runs standalone, the operators elect a leader by a Lease.
    assert crds == {"codesessions.icee.dev", "sandboxpools.icee.dev"}


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


def test_chart_sets_one_clients_share_of_the_starting_sessions(helm: str) -> None:
    def api_env(*sets: str) -> dict[str, str]:
        deployment = next(
            o
            for o in template(helm, *sets)
            if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-api")
        )
        containers = deployment["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e.get("value", "") for e in containers[0]["env"]}

    assert "ICEE_CLIENT_MAX_STARTING_SESSIONS" not in api_env()  # 0: half, the api's default
    env = api_env("admission.perClient.maxStartingSessions=2")
    assert env["ICEE_CLIENT_MAX_STARTING_SESSIONS"] == "2"
    refused = run(
        helm, "template", "icee", str(CHART), "--set", "admission.perClient.maxStartingSessions=-1",
        check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "minimum" in refused.stderr, refused.stderr


def test_chart_sets_the_start_gate_per_replica(helm: str) -> None:
    def gate_env(*sets: str) -> dict[str, str]:
        deployment = next(
            o
            for o in template(helm, *sets)
            if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-api")
        )
        env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        return {e["name"]: e["value"] for e in env if e["name"].startswith("ICEE_START_GATE")}

    assert gate_env() == {
        "ICEE_START_GATE_SLOTS": "2",
        "ICEE_START_GATE_RESERVED_SLOTS": "1",
        "ICEE_START_GATE_HOLD_SECONDS": "30",
        "ICEE_START_GATE_MAX_WAIT_SECONDS": "60",
    }
    assert gate_env("admission.startGate.slots=0")["ICEE_START_GATE_SLOTS"] == "0"
    refused = run(
        helm, "template", "icee", str(CHART), "--set", "admission.startGate.maxWaitSeconds=0",
        check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "exclusiveMinimum" in refused.stderr or "greater than" in refused.stderr, refused.stderr


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
        # Leader election writes its Lease (the api replicas' leases are only listed
        # and deleted by the operator, with any number of operators).
        rule = any("leases" in r["resources"] and "update" in r["verbs"] for r in role["rules"])
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
        "--set", "api.service.type=NodePort", "--set", "api.shutdownGraceSeconds=15",
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
    # Two api replicas by default (no session affinity, a disruption budget); two
    # operators as installed here.
    assert ready == {f"{release.name}-api": 2, f"{release.name}-operator": 2}
    service = json.loads(
        kubectl("-n", release.namespace, "get", "service", f"{release.name}-api", "-o", "json")
    )
    assert service["spec"].get("sessionAffinity", "None") == "None"
    pdb = json.loads(
        kubectl("-n", release.namespace, "get", "pdb", f"{release.name}-api", "-o", "json")
    )
    assert pdb["spec"]["minAvailable"] == 1
    # Each replica holds its lease (the claims of the sessions it streams hang on it).
    deadline = time.monotonic() + 30
    while True:
        listed = kubectl(
            "-n", release.sandbox, "get", "leases", "-l", "icee.dev/lease", "-o", "json"
        )
        leases = [
            lease
            for lease in json.loads(listed)["items"]
            if lease["metadata"]["labels"]["icee.dev/lease"] == "replica"
        ]
        if len(leases) == 2:
            break
        assert time.monotonic() < deadline, [lease["metadata"]["name"] for lease in leases]
        time.sleep(1)


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
    interactive_session(release)


def interactive_session(release: Release, headers: dict[str, str] | None = None) -> None:
    base = f"127.0.0.1:{release.port}"
    code = "name = input('name? ')\nage = input('age? ')\nprint(f'{name} is {age}')\n"
    session_id = create_session(release, code, headers)
    stdout, final = "", None
    with connect(
        f"ws://{base}/ws/session/{session_id}", open_timeout=30, additional_headers=headers
    ) as ws:
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


def create_session(release: Release, code: str, headers: dict[str, str] | None = None) -> str:
    body = json.dumps({"language": "python", "code": code}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{release.port}/session",
        body,
        {"content-type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
        session_id: str = json.load(response)["sessionId"]
    return session_id


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


# -- helm upgrade while sessions stream -------------------------------------------

# Reads lines until "bye", says it and ends; the client's beats keep it from idling
# while the new api comes up.
READER = (
    "import sys\n"
    "print('ready', flush=True)\n"
    "for line in sys.stdin:\n"
    "    if line == 'bye\\n':\n"
    "        print('bye', flush=True)\n"
    "        break\n"
)
TICKER = (
    "import itertools, time\n"
    "print('ready', flush=True)\n"
    "for i in itertools.count():\n"
    "    print(i, flush=True)\n"
    "    time.sleep(0.5)\n"
)
FINAL_STATES = ("finished", "terminated")


class StreamClient(threading.Thread):
    """One client's WebSocket, read to its end in a thread of its own.

    Records every message, the first final ``state`` and whether anything came
    after it, and how the socket closed. ``beat``: send an input line every few
    seconds (a session waiting on input is otherwise idle); ``bye`` (an event):
    once set, send "bye" so that the program ends by itself.
    """

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        *,
        beat: bool = False,
        bye: threading.Event | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.url, self.headers, self.beat, self.bye = url, headers, beat, bye
        self.messages: list[dict[str, Any]] = []
        self.final: dict[str, Any] | None = None
        self.after_final: list[dict[str, Any]] = []
        self.closed: str | None = None
        self.error: str | None = None
        self.ready = threading.Event()
        self.final_at: float | None = None

    @property
    def stdout(self) -> str:
        return "".join(m["data"] for m in self.messages if m["type"] == "stdout")

    def run(self) -> None:
        try:
            with connect(self.url, open_timeout=60, additional_headers=self.headers) as ws:
                self._read(ws)
        except Exception as exc:  # recorded; the test asserts on it
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.ready.set()

    def _read(self, ws: ClientConnection) -> None:
        last_beat, said_bye = time.monotonic(), False
        while True:
            if self.bye is not None and self.bye.is_set() and not said_bye:
                ws.send(json.dumps({"type": "input", "data": "bye\n"}))
                said_bye = True
            if self.beat and self.final is None and time.monotonic() - last_beat > 5:
                with contextlib.suppress(ConnectionClosed):
                    ws.send(json.dumps({"type": "input", "data": "beat\n"}))
                last_beat = time.monotonic()
            try:
                message = json.loads(ws.recv(timeout=0.5))
            except TimeoutError:
                continue
            except ConnectionClosed as closed:
                self.closed = f"{closed.rcvd.code if closed.rcvd else None} {closed}"
                return
            self.messages.append(message)
            if self.final is not None:
                self.after_final.append(message)
            elif message["type"] == "state" and message["state"] in FINAL_STATES:
                self.final, self.final_at = message, time.monotonic()
            if message["type"] == "stdout" and "ready" in self.stdout:
                self.ready.set()

    def summary(self) -> str:
        return f"final={self.final} closed={self.closed} error={self.error} {self.messages[-8:]}"


def auth_headers() -> dict[str, str]:
    """The test token; ignored unless the tokens test turned tokens on before."""
    return {"authorization": f"Bearer {HELM_TEST_TOKEN}"}


def component_pods(release: Release, component: str) -> set[str]:
    names = kubectl(
        "-n", release.namespace, "get", "pods", "-l", f"app.kubernetes.io/component={component}",
        "-o", "jsonpath={.items[*].metadata.name}",
    )  # fmt: skip
    return set(names.split())


class DeletionWatch:
    """Watches pods (``kubectl get -w``, one each) for the moment the first is being deleted.

    A watch, not polling: each kubectl call takes seconds on a loaded node, and
    the drain's grace period runs from that moment.
    """

    def __init__(self, release: Release, pods: set[str]) -> None:
        self.pods = pods
        self.at: float | None = None
        self._seen = threading.Event()
        self._procs = [
            subprocess.Popen(
                [
                    str(REPO / "cluster" / "kubectl"),
                    "-n",
                    release.namespace,
                    "get",
                    "pod",
                    pod,
                    "-w",
                    "-o",
                    'jsonpath={.metadata.deletionTimestamp}{"\\n"}',
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=ENV,
            )
            for pod in sorted(pods)
        ]
        self._readers = [
            threading.Thread(target=self._read, args=(proc,), daemon=True) for proc in self._procs
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip():
                if not self._seen.is_set():
                    self.at = time.monotonic()
                    self._seen.set()
                return

    def wait(self, within: float) -> float:
        """When the first deletion began (monotonic)."""
        try:
            assert self._seen.wait(within), f"none of {self.pods} was replaced within {within:g} s"
            assert self.at is not None
            return self.at
        finally:
            for proc in self._procs:
                proc.kill()
                proc.wait()
            for proc, reader in zip(self._procs, self._readers, strict=True):
                reader.join(10)
                assert proc.stdout is not None
                proc.stdout.close()


def final_phase(release: Release, session_id: str, within: float) -> dict[str, Any]:
    """The CodeSession's status once its phase is final (the operator's, after the rollout)."""
    deadline = time.monotonic() + within
    while True:
        status = (
            json.loads(
                kubectl("-n", release.sandbox, "get", "codesession", session_id, "-o", "json")
            ).get("status")
            or {}
        )
        if status.get("phase") in ("Finished", "Terminated"):
            return dict(status)
        assert time.monotonic() < deadline, f"{session_id} stranded: {status}"
        time.sleep(1)


def test_upgrade_gives_every_stream_a_final_state(helm: str, release: Release) -> None:
    """`helm upgrade` rolls the api and the operator while sessions stream.

    Two sessions run on (one waiting on input, one printing), one ends by itself
    during the old api's drain, one was created but not connected yet. Every client
    gets a final ``state`` before its socket closes, every CodeSession ends with a
    reason, and sessions work through the new pods.
    """
    headers = auth_headers()
    ws = f"ws://127.0.0.1:{release.port}/ws/session/"
    # Two api replicas: the streams are on either; each drains in its turn. (An
    # earlier test's rollout may still be removing its old api pods.)
    deadline = time.monotonic() + 120
    while len(old_apis := component_pods(release, "api")) != 2:
        assert time.monotonic() < deadline, f"api pods: {old_apis}"
        time.sleep(1)
    old_operator = component_pods(release, "operator")
    bye = threading.Event()
    ids = {
        "waiting": create_session(release, READER, headers),
        "printing": create_session(release, TICKER, headers),
        "finishing": create_session(release, READER, headers),
    }
    clients = {
        "waiting": StreamClient(ws + ids["waiting"], headers, beat=True),
        "printing": StreamClient(ws + ids["printing"], headers),
        "finishing": StreamClient(ws + ids["finishing"], headers, beat=True, bye=bye),
    }
    for client in clients.values():
        client.start()
    for name, client in clients.items():
        assert client.ready.wait(120), f"{name} did not start: {client.summary()}"
        assert client.error is None, f"{name}: {client.summary()}"
        assert client.final is None, f"{name} ended before the upgrade: {client.summary()}"
    ids["unconnected"] = create_session(release, "print('late')", headers)
    # New pod templates for both: the api rolls (surge first, then the old one
    # drains), and so do the operators (the Lease passes to a new one).
    deletion = DeletionWatch(release, old_apis)
    started = time.monotonic()
    upgrade = subprocess.Popen(
        [helm, "upgrade", release.name, str(CHART), "-n", release.namespace, "--reuse-values",
         "--set", "api.shutdownGraceSeconds=10", "--set", "sandbox.retentionSeconds=299",
         "--wait", "--timeout", "5m"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
    )  # fmt: skip
    try:
        drain = deletion.wait(240)
        bye.set()  # within the first drain's grace: this one ends by itself
        output, _ = upgrade.communicate(timeout=300)
    finally:
        if upgrade.poll() is None:
            upgrade.kill()
    assert upgrade.returncode == 0, output
    for name, client in clients.items():
        client.join(120)
        assert not client.is_alive(), f"{name} still open: {client.summary()}"
    print(
        f"upgrade: drain began {drain - started:.1f} s after helm upgrade; finals "
        + ", ".join(
            f"{n} {c.final_at - drain:+.1f} s" for n, c in clients.items() if c.final_at is not None
        )
    )
    report = "\n".join(f"{n}: {c.summary()}" for n, c in clients.items())
    for client in clients.values():
        # The socket never closes before the final state, and nothing follows it.
        assert client.error is None, report
        assert client.final is not None, report
        assert client.after_final == [], report
    assert clients["finishing"].stdout == "ready\nbye\n", report
    assert (clients["finishing"].final["state"], clients["finishing"].final["reason"]) == (
        "finished",
        "Completed",
    ), report
    for name in ("waiting", "printing"):
        final = clients[name].final
        assert final is not None
        assert (final["state"], final["reason"]) == ("terminated", "ServerShutdown"), report
    # No session is stranded: the new operator gives each a final phase and reason.
    for name, session_id in ids.items():
        status = final_phase(release, session_id, 120)
        assert status.get("reason"), f"{name}: {status}"
    # The old apis exit once their drains are over (the kubelet would kill one at its
    # grace period, shutdownGraceSeconds + 45 s, 55 s here).
    kubectl(
        "-n", release.namespace, "wait", "--for=delete", *(f"pod/{p}" for p in sorted(old_apis)),
        "--timeout=180s",
    )  # fmt: skip
    gone = time.monotonic() - drain
    print(f"upgrade: both old api pods were gone {gone:.1f} s after the first drain began")
    # The unconnected one's client comes after the upgrade, to the new api: whatever
    # became of the session, the client is told how it ended.
    late = StreamClient(ws + ids["unconnected"], headers)
    late.run()
    assert late.error is None, late.summary()
    assert late.final is not None, late.summary()
    assert late.final["reason"], late.summary()
    # The operators rolled too (the Lease passed to a new one: the sessions ended).
    deadline = time.monotonic() + 120
    while old_operator & component_pods(release, "operator"):
        assert time.monotonic() < deadline, f"old operators left: {old_operator}"
        time.sleep(1)
    # And sessions run end to end through the new api and operator.
    interactive_session(release, headers)


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
