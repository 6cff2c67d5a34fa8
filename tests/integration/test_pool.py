"""Warm pools on the real cluster (issue 12): an operator of our own keeps
SandboxPools in a namespace of their own; claims race against the real apiserver."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    REPO,
    ApiServer,
    Process,
    apply_crd,
    apply_pool,
    kubectl,
    pod_ready,
    start_api_server,
    start_operator,
    wait_for,
)
from icee_api.session.start_clock import MARKS, start_marks
from icee_core import names

pytestmark = pytest.mark.cluster

CLAIMER = Path(__file__).with_name("pool_claimer.py")


class PoolStack:
    def __init__(self, namespace: str, logs: Path) -> None:
        self.namespace = namespace
        self.logs = logs
        self.operator = self.start_operator()
        self.api = start_api_server(namespace, logs)

    def start_operator(self, **settings: str) -> Process:
        return start_operator(self.namespace, self.logs, **settings)

    def restart_operator(self, **settings: str) -> None:
        self.operator.stop()
        self.operator = self.start_operator(**settings)

    def kubectl(self, *args: str, check: bool = True) -> str:
        return kubectl("-n", self.namespace, *args, check=check)

    def apply_pool(self, name: str, language: str, replicas: int) -> None:
        apply_pool(self.namespace, name, language, replicas)

    def pool(self, name: str) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", "sandboxpool", name, "-o", "json")))

    def pods(self, pool: str) -> list[dict[str, Any]]:
        out = self.kubectl("get", "pods", "-l", f"{names.LABEL_POOL}={pool}", "-o", "json")
        return list(json.loads(out)["items"])

    def ready_unclaimed(self, pool: str) -> list[dict[str, Any]]:
        return [p for p in self.pods(pool) if pod_ready(p) and _unclaimed(p)]


def _unclaimed(pod: dict[str, Any]) -> bool:
    return names.LABEL_SESSION not in (pod["metadata"].get("labels") or {})


@pytest.fixture(scope="module")
def stack(kubeconfig: str, process_logs: Path) -> Iterator[PoolStack]:
    apply_crd("sandboxpool")
    namespace = f"icee-pool-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", namespace)
    s = PoolStack(namespace, process_logs)
    try:
        yield s
    finally:
        s.api.process.stop()
        # While the operator still runs (kopf's finalizers on CodeSessions).
        kubectl("delete", "codesessions,sandboxpools", "--all", "-n", namespace,
                "--timeout=60s", check=False)  # fmt: skip
        s.operator.stop()
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_pool_reaches_its_size_and_kubectl_shows_it(stack: PoolStack) -> None:
    stack.apply_pool("python", "python", 2)
    wait_for("2 ready warm pods", lambda: len(stack.ready_unclaimed("python")) == 2)
    wait_for("status.ready == 2", lambda: stack.pool("python").get("status", {}).get("ready") == 2)
    for pod in stack.pods("python"):
        labels = pod["metadata"]["labels"]
        assert labels[names.LABEL_LANGUAGE] == "python"
        assert labels[names.LABEL_TEMPLATE_HASH] == stack.pool("python")["status"]["templateHash"]
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "SandboxPool"
        container = pod["spec"]["containers"][0]
        # The language's warm-up, then the runner (icee_operator.pool.warm_command).
        assert container["command"][-1].endswith(f"; exec {names.RUNNER_PATH}")
        assert container["securityContext"]["runAsNonRoot"] is True
        assert pod["spec"].get("automountServiceAccountToken") is False
    # No finalizer: deleting a pool (or uninstalling) never waits for the operator.
    assert not stack.pool("python")["metadata"].get("finalizers")
    table = stack.kubectl("get", "sandboxpools")
    header, row = table.splitlines()[0].split(), table.splitlines()[1].split()
    assert header[:5] == ["NAME", "LANGUAGE", "DESIRED", "READY", "IN-USE"]
    assert row[:5] == ["python", "python", "2", "2", "0"]


def test_kubectl_scale_drives_the_pool(stack: PoolStack) -> None:
    stack.kubectl("scale", "sandboxpool", "python", "--replicas=1")
    wait_for("1 warm pod", lambda: len([p for p in stack.pods("python") if pod_ready(p)]) == 1)
    stack.kubectl("scale", "sandboxpool", "python", "--replicas=2")
    wait_for("2 ready warm pods", lambda: len(stack.ready_unclaimed("python")) == 2)
    path = f"/apis/icee.dev/v1alpha1/namespaces/{stack.namespace}/sandboxpools/python/scale"
    scale = json.loads(kubectl("get", "--raw", path))
    assert scale["spec"]["replicas"] == 2


def test_two_api_processes_never_claim_the_same_pod(stack: PoolStack) -> None:
    wait_for("2 ready warm pods", lambda: len(stack.ready_unclaimed("python")) == 2)
    before = {p["metadata"]["name"] for p in stack.ready_unclaimed("python")}
    start_at = time.time() + 8  # both processes connected and synced by then
    procs = []
    for _ in range(2):
        sessions = [str(uuid.uuid4()) for _ in range(3)]
        argv = [sys.executable, str(CLAIMER), stack.namespace, "python", str(start_at), *sessions]
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, text=True))
    results: dict[str, str | None] = {}
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        results |= json.loads(out)
    claimed = {s: p for s, p in results.items() if p is not None}
    # Six claims for two ready pods: each pod went to exactly one session.
    assert sorted(claimed.values()) == sorted(before), results
    for session, pod in claimed.items():
        labels = json.loads(stack.kubectl("get", "pod", pod, "-o", "json"))["metadata"]["labels"]
        assert labels[names.LABEL_SESSION] == session
    # Refill starts at once: two new warm pods, the claimed ones counted in use.
    wait_for("refilled", lambda: len(stack.ready_unclaimed("python")) == 2, within=60)
    wait_for("in use == 2", lambda: stack.pool("python")["status"].get("inUse") == 2)
    for pod in claimed.values():
        stack.kubectl("delete", "pod", pod, "--wait=false")


ECHO = "import sys\nprint('ready', flush=True)\nprint(sys.stdin.readline().upper(), end='')\n"


def session(stack: PoolStack, session_id: str) -> dict[str, Any]:
    out = stack.kubectl("get", "codesession", session_id, "-o", "json")
    return dict(json.loads(out))


def test_a_session_claims_a_warm_pod_and_runs_interactively(stack: PoolStack) -> None:
    wait_for("2 ready warm pods", lambda: len(stack.ready_unclaimed("python")) == 2)
    warm_before = {p["metadata"]["name"] for p in stack.ready_unclaimed("python")}

    async def run() -> tuple[str, str]:
        async with stack.api.live(ECHO) as s:
            await s.until_stdout("ready\n")
            await s.input("warm hello\n")
            final = await s.until_state("finished")
            await s.finish()
            return s.id, s.transcript.stdout + f"|{final.get('exitCode')}"

    session_id, result = asyncio.run(run())
    assert result == "ready\nWARM HELLO\n|0"
    # Every step of its warm start was clocked (bench/warm_breakdown.py reads them).
    text = asyncio.run(metrics_text(stack.api))
    assert start_marks(text, "warm") == set(MARKS)
    body = session(stack, session_id)
    pod = body["spec"]["start"]["podName"]
    # The session ran in a pod that existed (ready, unclaimed) before its POST.
    assert pod in warm_before
    assert body["status"]["podName"] == pod
    wait_for("Finished", lambda: session(stack, session_id)["status"]["phase"] == "Finished")
    # Used once, then deleted: never returned to the pool.
    wait_for(
        "the claimed pod gone",
        lambda: not stack.kubectl("get", "pod", pod, "--ignore-not-found", "-o", "name"),
        within=60,
    )
    assert not stack.api.pod_exists(session_id)  # no cold pod either
    wait_for("refilled", lambda: len(stack.ready_unclaimed("python")) == 2, within=60)


def test_a_claimed_pod_running_before_its_start_is_recorded_is_not_lost(
    stack: PoolStack,
) -> None:
    # The api claims a warm pod (its label) and writes spec.start, which names it, a
    # moment later; the pod's events can make the session Running in between. An
    # operator reconciling a copy of the session from that moment (its repair loop's
    # list, or its resume after a restart, as here) must find the claimed pod, not
    # call the session's pod lost (PodLost, seen in the chaos suite).
    wait_for("2 ready warm pods", lambda: len(stack.ready_unclaimed("python")) == 2)
    session_id = asyncio.run(stack.api.create("print('never sent')"))
    argv = [sys.executable, str(CLAIMER), stack.namespace, "python", "0", session_id]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    pod = json.loads(out)[session_id]
    assert pod is not None, out

    def status() -> dict[str, Any]:
        return dict(session(stack, session_id).get("status") or {})

    wait_for("Running on the claimed pod", lambda: status().get("phase") == "Running")
    assert status()["podName"] == pod
    assert "start" not in session(stack, session_id)["spec"]
    sessions = len(stack.kubectl("get", "codesessions", "-o", "name").split())
    stack.restart_operator()
    resumed = "Handler 'codesession_resumed' succeeded"
    wait_for(
        f"the restarted operator resumed the {sessions} sessions",
        lambda: stack.operator.tail(2000).count(resumed) >= sessions,
    )
    assert status().get("phase") == "Running", status()
    assert status()["podName"] == pod
    stack.kubectl("delete", "codesession", session_id)
    stack.kubectl("delete", "pod", pod, "--wait=false")


async def metrics_text(api: ApiServer) -> str:
    async with api.http() as http:
        return (await http.get("/metrics")).text


def test_lower_limits_fall_back_to_a_cold_pod(stack: PoolStack) -> None:
    wait_for("2 ready warm pods", lambda: len(stack.ready_unclaimed("python")) == 2)
    warm_before = {p["metadata"]["name"] for p in stack.ready_unclaimed("python")}

    limits = {"memoryBytes": 64 * 1024 * 1024}  # below the pool's: cannot be honoured
    transcript = asyncio.run(stack.api.run("print('cold')", limits=limits))
    assert transcript.stdout == "cold\n"
    assert transcript.final["state"] == "finished"
    # No warm pod was taken.
    assert {p["metadata"]["name"] for p in stack.ready_unclaimed("python")} == warm_before


def test_an_empty_pool_falls_back_to_a_cold_start(stack: PoolStack) -> None:
    stack.kubectl("scale", "sandboxpool", "python", "--replicas=0")
    wait_for("no warm pods", lambda: not stack.ready_unclaimed("python"))

    async def run() -> str:
        async with stack.api.live("print('cold start')") as s:
            transcript = await s.finish()
            assert transcript.stdout == "cold start\n"
            assert transcript.final["state"] == "finished"
            return s.id

    session_id = asyncio.run(run())
    body = session(stack, session_id)
    assert "podName" not in (body["spec"].get("start") or {})
    assert body["status"]["podName"] == f"run-{session_id}"
    stack.kubectl("scale", "sandboxpool", "python", "--replicas=2")


def changed_registry(directory: Path) -> Path:
    """The shipped language registry with Python's run command changed (a registry
    change that leaves the pod spec as it is: only the language entry differs)."""
    registry = (REPO / "core" / "icee_core" / "languages.yaml").read_text()
    old = "run: python3 -u {main}"
    assert registry.count(old) == 1
    path = directory / "languages.yaml"
    path.write_text(registry.replace(old, "run: python3 -u -X utf8 {main}"))
    return path


def test_language_registry_change_replaces_warm_pods_never_claimed_again(
    stack: PoolStack, tmp_path: Path
) -> None:
    wait_for("2 ready warm pods", lambda: len(stack.ready_unclaimed("python")) == 2)
    old_hash = stack.pool("python")["status"]["templateHash"]
    old_pods = {p["metadata"]["name"]: p for p in stack.ready_unclaimed("python")}
    assert {p["metadata"]["labels"][names.LABEL_TEMPLATE_HASH] for p in old_pods.values()} == {
        old_hash
    }
    # The moment after a template change, before its replacements are through: the
    # pool's current template is another, its old pods still ready. Frozen here by
    # stopping the operator and writing the status a new operator would write.
    stack.operator.stop()
    stack.kubectl(
        "patch", "sandboxpool", "python", "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"templateHash": "0123456789abcdef"}}),
    )  # fmt: skip
    time.sleep(3)  # the api's pool watch delivers it (milliseconds when healthy)

    async def run() -> tuple[str, str]:
        async with stack.api.live("print('after the change')") as s:
            await asyncio.to_thread(
                wait_for,
                "the api to start the session",
                lambda: bool(session(stack, s.id)["spec"].get("start")),
                30,
            )
            # The api chose (no pod of the pool's template): a cold start.
            assert "podName" not in session(stack, s.id)["spec"]["start"]
            assert set(old_pods) == {p["metadata"]["name"] for p in stack.ready_unclaimed("python")}
            # A new operator of a new language registry: a new template.
            stack.operator = stack.start_operator(languages_file=str(changed_registry(tmp_path)))
            transcript = await s.finish()
            return s.id, transcript.stdout

    session_id, stdout = asyncio.run(run())
    assert stdout == "after the change\n"
    assert session(stack, session_id)["status"]["podName"] == f"run-{session_id}"

    def replaced() -> bool:
        current = stack.pool("python")["status"]["templateHash"]
        pods = stack.ready_unclaimed("python")
        return (
            current not in ("0123456789abcdef", old_hash)
            and len(pods) == 2
            and all(p["metadata"]["labels"][names.LABEL_TEMPLATE_HASH] == current for p in pods)
        )

    wait_for("warm pods of the new registry's template", replaced)
    new_pods = stack.ready_unclaimed("python")
    assert not set(old_pods) & {p["metadata"]["name"] for p in new_pods}
    # Only the registry changed: the same image and command, another template.
    old_container = next(iter(old_pods.values()))["spec"]["containers"][0]
    for pod in new_pods:
        container = pod["spec"]["containers"][0]
        assert (container["image"], container["command"]) == (
            old_container["image"],
            old_container["command"],
        )
    wait_for(
        "the old pods gone",
        lambda: not set(old_pods) & {p["metadata"]["name"] for p in stack.pods("python")},
        within=60,
    )
    # None of them ever served a session.
    sessions = json.loads(stack.kubectl("get", "codesessions", "-o", "json"))["items"]
    claims = {(s["spec"].get("start") or {}).get("podName") for s in sessions}
    assert not claims & set(old_pods)


def test_template_change_replaces_warm_pods(stack: PoolStack) -> None:
    wait_for("2 ready warm pods", lambda: len(stack.ready_unclaimed("python")) == 2)
    old_hash = stack.pool("python")["status"]["templateHash"]
    old = {p["metadata"]["name"] for p in stack.pods("python")}
    # New limits for every session: a new template.
    stack.restart_operator(maxima__limits__memory_bytes=str(150 * 1024 * 1024))
    wait_for(
        "a new template hash", lambda: stack.pool("python")["status"]["templateHash"] != old_hash
    )
    new_hash = stack.pool("python")["status"]["templateHash"]

    def replaced() -> bool:
        pods = stack.ready_unclaimed("python")
        return len(pods) == 2 and all(
            p["metadata"]["labels"][names.LABEL_TEMPLATE_HASH] == new_hash for p in pods
        )

    wait_for("warm pods of the new template", replaced)
    assert not old & {p["metadata"]["name"] for p in stack.ready_unclaimed("python")}


def test_scale_to_zero_turns_the_pool_off(stack: PoolStack) -> None:
    stack.kubectl("scale", "sandboxpool", "python", "--replicas=0")
    wait_for(
        "no warm pods",
        lambda: not [p for p in stack.pods("python") if not p["metadata"].get("deletionTimestamp")],
    )
