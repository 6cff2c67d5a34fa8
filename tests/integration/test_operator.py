"""The operator against the real cluster: CodeSession in, locked-down pod, status, cleanup.

Nothing is mocked. The module runs its own `icee-operator` process on its own
namespace (short retention, `imagePullPolicy: Never` since no registry answers
here, and one extra language whose image does not exist), and plays the api's
part by hand: `kubectl attach` sends the runner its request (docs/runner.md) and
reads its frames, and `spec.termination` is patched in as the api would.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import KUBECTL, Process, apply_crd, free_port, kubectl, start_process, wait_for
from icee_api.session.run_request import build_request
from icee_core import names
from icee_core import runner_protocol as rp
from icee_core.languages import DEFAULT_LANGUAGES_FILE, load_registry
from icee_core.models import CodeSessionSpec, codesession_manifest

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
OPERATOR = Path(sys.executable).parent / "icee-operator"
RETENTION_SECONDS = 10
CONNECT_TIMEOUT_SECONDS = 8
FINAL = ("Finished", "Terminated")

BROKEN_LANGUAGE = """
  - id: broken
    displayName: Broken
    version: "0"
    image: icee/sandbox-does-not-exist:0
    fileName: main.txt
    run: cat main.txt
"""


@dataclass
class Operator:
    """One `icee-operator` process serving `namespace`, restartable."""

    namespace: str
    env: dict[str, str]
    logs: Path
    process: Process | None = None

    def start(self) -> None:
        self.process = start_process("operator", [str(OPERATOR)], self.env, self.logs)

    def stop(self, *, crash: bool = False) -> None:
        if self.process is not None:
            self.process.stop(9 if crash else 15)
            self.process = None

    def tail(self) -> str:
        return self.process.tail() if self.process else "(operator not running)"


@contextlib.contextmanager
def operator_in_new_namespace(logs: Path, languages: Path, **settings: str) -> Iterator[Operator]:
    apply_crd("codesession")
    namespace = f"icee-op-it-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", namespace)
    # Pods are refused until the namespace's default service account exists.
    wait_for(
        "the namespace's default service account",
        lambda: kubectl("get", "sa", "default", "-n", namespace, check=False) != "",
        30,
        every=0.2,
    )
    env = {
        "ICEE_NAMESPACE": namespace,
        "ICEE_HEALTH_PORT": str(free_port()),
        "ICEE_RETENTION_SECONDS": str(RETENTION_SECONDS),
        "ICEE_START_TIMEOUT_SECONDS": "60",
        "ICEE_IMAGE_PULL_POLICY": "Never",
        "ICEE_LANGUAGES_FILE": str(languages),
    } | {f"ICEE_{key.upper()}": value for key, value in settings.items()}
    op = Operator(namespace, env, logs)
    op.start()
    try:
        yield op
    finally:
        op.stop()
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def languages_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("languages") / "languages.yaml"
    path.write_text(DEFAULT_LANGUAGES_FILE.read_text() + BROKEN_LANGUAGE)
    return path


@pytest.fixture(scope="module")
def operator(kubeconfig: str, process_logs: Path, languages_file: Path) -> Iterator[Operator]:
    with operator_in_new_namespace(process_logs, languages_file) as op:
        yield op


@pytest.fixture(scope="module")
def runc_operator(kubeconfig: str, process_logs: Path, languages_file: Path) -> Iterator[Operator]:
    """Sandbox pods on plain runc: what must hold without gVisor too."""
    with operator_in_new_namespace(process_logs, languages_file, runtime_class_name="runc") as op:
        yield op


@pytest.fixture(scope="module")
def long_retention_operator(
    kubeconfig: str, process_logs: Path, languages_file: Path
) -> Iterator[Operator]:
    """Ended sessions stay readable long after a late (repaired) final status."""
    with operator_in_new_namespace(process_logs, languages_file, retention_seconds="300") as op:
        yield op


# -- helpers ---------------------------------------------------------------------------


def now_stamp() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def create(
    op: Operator, code: str, language: str = "python", connected: bool = True, **spec: Any
) -> str:
    """A CodeSession as the api makes it; ``connected``: its client is already there
    (spec.start set, so the operator starts it at once, as after a WebSocket opened)."""
    session_id = names.new_session_id()
    if connected:
        spec["start"] = {"at": now_stamp()}
    body = codesession_manifest(
        session_id,
        CodeSessionSpec.model_validate({"language": language, "code": code, **spec}),
        op.namespace,
    )
    kubectl_json_create(body)
    return session_id


def kubectl_json_create(body: dict[str, Any]) -> None:
    proc = subprocess.run(
        [KUBECTL, "create", "-f", "-"],
        input=json.dumps(body),
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr


def session(op: Operator, session_id: str) -> dict[str, Any] | None:
    out = kubectl("get", "codesession", session_id, "-n", op.namespace, "-o", "json", check=False)
    return json.loads(out) if out else None


def status(op: Operator, session_id: str) -> dict[str, Any]:
    found = session(op, session_id)
    assert found is not None, f"CodeSession {session_id} is gone"
    result: dict[str, Any] = found.get("status") or {}
    return result


def wait_phase(
    op: Operator, session_id: str, phases: tuple[str, ...], timeout: float = 60
) -> dict[str, Any]:
    """The session's status once its phase is one of ``phases``.

    Seen through a watch, which delivers every status the session goes through: the
    retention counts from the container's finishedAt, so on a loaded node a final
    status can be deleted moments after the operator wrote it, between two polls.
    """
    argv = [KUBECTL, "get", "codesession", session_id, "-n", op.namespace, "--watch", "-o", "json"]
    seen: dict[str, Any] = {}
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            assert proc.stdout is not None
            decoder, buffer = json.JSONDecoder(), ""
            for line in proc.stdout:  # one indented JSON object per change
                buffer += line
                try:
                    body, _ = decoder.raw_decode(buffer.strip())
                except ValueError:
                    continue  # not the whole object yet
                buffer = ""
                seen = body.get("status") or {}
                if seen.get("phase") in phases:
                    return seen
        finally:
            timer.cancel()
            proc.kill()
            assert proc.stderr is not None
            error = proc.stderr.read().strip()
    pytest.fail(f"{session_id} not {phases} within {timeout:g} s: {seen} {error}\n{op.tail()}")


def attach(op: Operator, session_id: str, stdin: bytes = b"") -> subprocess.Popen[bytes]:
    """`kubectl attach` as the api would: the runner's request, `stdin`, then E."""
    wait_phase(op, session_id, ("Running", *FINAL))
    found = session(op, session_id)
    assert found is not None
    spec = CodeSessionSpec.model_validate(found["spec"])
    request = rp.request(build_request(spec, load_registry().get(spec.language)))
    proc = subprocess.Popen(
        [KUBECTL, "attach", "-i", "-n", op.namespace, names.pod_name(session_id), "-c", "program"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None
    proc.stdin.write(request + b"".join(rp.input_frames(stdin)) + rp.eof())
    proc.stdin.close()
    proc.stdin = None  # so that communicate() only reads
    return proc


def program_stdout(raw: bytes) -> bytes:
    """The program's stdout from the runner's frames."""
    events = rp.Decoder().feed(raw)
    return b"".join(e.data for e in events if isinstance(e, rp.Output) and e.stream == "stdout")


def read_until(proc: subprocess.Popen[bytes], expected: bytes, timeout: float = 60) -> None:
    """Read the runner's frames until the program's stdout holds ``expected``."""
    assert proc.stdout is not None
    decoder, out = rp.Decoder(), b""
    deadline = time.monotonic() + timeout
    while expected not in out:
        assert time.monotonic() < deadline, f"no {expected!r} within {timeout} s: {out!r}"
        chunk = os.read(proc.stdout.fileno(), 1 << 16)
        assert chunk, f"stream ended before {expected!r}: {out!r}"
        out += b"".join(e.data for e in decoder.feed(chunk) if isinstance(e, rp.Output))


def run(op: Operator, code: str, stdin: bytes = b"", **spec: Any) -> tuple[str, dict[str, Any]]:
    """A session from creation to its final status; returns (stdout, status)."""
    session_id = create(op, code, **spec)
    proc = attach(op, session_id, stdin)
    raw, _ = proc.communicate(timeout=120)
    stdout = program_stdout(raw).decode()
    return stdout, wait_phase(op, session_id, FINAL) | {"id": session_id}


def gone(op: Operator, kind: str, name: str, timeout: float = 30) -> bool:
    kubectl(
        "wait", "--for=delete", f"{kind}/{name}", "-n", op.namespace, f"--timeout={timeout:g}s",
        check=False,
    )  # fmt: skip
    left: str = kubectl("get", kind, name, "-n", op.namespace, "--ignore-not-found", "-o", "name")
    return left == ""


def assert_cleaned_up(op: Operator, session_id: str) -> None:
    assert gone(op, "pod", names.pod_name(session_id)), "the pod was left behind"


# -- tests ------------------------------------------------------------------------------


def test_exit_zero_is_finished_completed_and_cleaned_up(operator: Operator) -> None:
    stdout, final = run(operator, "print('Hello World')")
    assert stdout == "Hello World\n"
    assert final["phase"] == "Finished"
    assert final["reason"] == "Completed"
    assert final["exitCode"] == 0
    assert final["podName"] == names.pod_name(final["id"])
    assert final["createdAt"] <= final["startedAt"] <= final["finishedAt"]
    assert {c["type"] for c in final["conditions"]} == {"Started", "Ended"}
    # The runner's report, read by the operator from the pod's log.
    assert set(final["usage"]) == {"run"}
    assert final["usage"]["run"]["exitCode"] == 0
    assert final["usage"]["run"]["memoryBytes"] > 1 << 20
    assert_cleaned_up(operator, final["id"])


def test_pod_is_owned_and_hardened(operator: Operator) -> None:
    session_id = create(operator, "print(input())")
    wait_phase(operator, session_id, ("Running",))
    pod = json.loads(
        kubectl("get", "pod", names.pod_name(session_id), "-n", operator.namespace, "-o", "json")
    )
    (owner,) = pod["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("CodeSession", session_id, True)
    assert pod["spec"]["runtimeClassName"] == "gvisor"
    assert pod["spec"]["automountServiceAccountToken"] is False
    (container,) = pod["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    raw, _ = attach(operator, session_id, b"echo\n").communicate(timeout=60)
    assert program_stdout(raw) == b"echo\n"
    assert wait_phase(operator, session_id, FINAL)["reason"] == "Completed"


def test_non_zero_exit_is_finished_error(operator: Operator) -> None:
    stdout, final = run(operator, "import sys\nprint('bye')\nsys.exit(3)")
    assert stdout == "bye\n"
    assert (final["phase"], final["reason"], final["exitCode"]) == ("Finished", "Error", 3)
    assert_cleaned_up(operator, final["id"])


def test_compile_failure_is_a_compilation_error(operator: Operator) -> None:
    _, final = run(operator, "int main() { return x; }", language="cpp")
    assert (final["phase"], final["reason"]) == ("Finished", "CompilationError")
    assert final["exitCode"] != 0
    assert set(final["usage"]) == {"compile"}
    assert final["usage"]["compile"]["exitCode"] == final["exitCode"]


def test_termination_request_ends_the_session_with_its_reason(operator: Operator) -> None:
    session_id = create(operator, "import time\nprint('up', flush=True)\ntime.sleep(300)")
    attached = attach(operator, session_id)
    read_until(attached, b"up\n")
    kubectl(
        "patch", "codesession", session_id, "-n", operator.namespace, "--type=merge", "-p",
        json.dumps({"spec": {"termination": {"reason": "UserTerminated", "message": "stop"}}}),
    )  # fmt: skip
    final = wait_phase(operator, session_id, FINAL, timeout=15)
    assert (final["phase"], final["reason"], final["message"]) == (
        "Terminated",
        "UserTerminated",
        "stop",
    )
    assert_cleaned_up(operator, session_id)
    attached.communicate(timeout=30)


def test_termination_before_the_pod_started_creates_no_pod(operator: Operator) -> None:
    session_id = create(
        operator, "print(1)", termination={"reason": "ClientGone", "message": "gone"}
    )
    final = wait_phase(operator, session_id, FINAL)
    assert (final["phase"], final["reason"]) == ("Terminated", "ClientGone")
    assert "startedAt" not in final
    assert gone(operator, "pod", names.pod_name(session_id), timeout=1)


def test_no_pod_until_the_client_connects(operator: Operator) -> None:
    """Lazy start: a session gets its sandbox only once spec.start is set."""
    session_id = create(operator, "print(input()[::-1])", connected=False)
    assert wait_phase(operator, session_id, ("Pending",), timeout=15).get("podName") is None
    time.sleep(2)
    assert gone(operator, "pod", names.pod_name(session_id), timeout=0.5)
    kubectl(
        "patch", "codesession", session_id, "-n", operator.namespace, "--type=merge", "-p",
        json.dumps({"spec": {"start": {"at": now_stamp()}}}),
    )  # fmt: skip
    assert wait_phase(operator, session_id, ("Running",))["podName"] == names.pod_name(session_id)
    attached = attach(operator, session_id, b"lazy\n")
    out, _ = attached.communicate(timeout=60)
    assert program_stdout(out) == b"yzal\n"
    final = wait_phase(operator, session_id, FINAL)
    assert (final["phase"], final["reason"]) == ("Finished", "Completed")
    # spec.start is set once: a change is refused by the CRD.
    for patch in ({"start": {"at": "2030-01-01T00:00:00Z"}}, {"start": None}):
        refused = subprocess.run(
            [KUBECTL, "patch", "codesession", session_id, "-n", operator.namespace,
             "--type=merge", "-p", json.dumps({"spec": patch})],
            capture_output=True, text=True, check=False, timeout=30,
        )  # fmt: skip
        assert refused.returncode != 0, patch
        assert "start is immutable" in refused.stderr or "cannot be removed" in refused.stderr


def test_never_connected_session_ends_client_gone(operator: Operator) -> None:
    # The connect deadline is the session's idle timeout (capped by the operator's).
    timeouts = {"idleSeconds": CONNECT_TIMEOUT_SECONDS}
    session_id = create(operator, "print(1)", connected=False, timeouts=timeouts)
    final = wait_phase(operator, session_id, FINAL, timeout=CONNECT_TIMEOUT_SECONDS + 20)
    assert (final["phase"], final["reason"]) == ("Terminated", "ClientGone")
    assert f"no client connected within {CONNECT_TIMEOUT_SECONDS} s" in final["message"]
    assert gone(operator, "pod", names.pod_name(session_id), timeout=1)


def test_execution_timeout_is_time_limit_exceeded(operator: Operator) -> None:
    _, final = run(operator, "import time\ntime.sleep(300)", timeouts={"executionSeconds": 3})
    assert (final["phase"], final["reason"]) == ("Terminated", "TimeLimitExceeded")
    assert_cleaned_up(operator, final["id"])


def test_memory_bomb_is_memory_limit_exceeded(operator: Operator) -> None:
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))"
    _, final = run(operator, code, limits={"memoryBytes": 64 * 1024 * 1024})
    assert (final["phase"], final["reason"]) == ("Terminated", "MemoryLimitExceeded")


THREADS_THEN_FORK = (
    "import os, threading, time\n"
    "n = 1\n"
    "try:\n"
    "    while True:\n"
    "        threading.Thread(target=time.sleep, args=(60,), daemon=True).start(); n += 1\n"
    "except RuntimeError:\n"
    "    pass\n"
    "try:\n"
    "    os.fork()\n"
    "    print('forked past the cap')\n"
    "except BlockingIOError:\n"
    "    print('tasks', n)\n"
    "os._exit(0)\n"
)


# The runner is one of the session's tasks: with pids=16 the program has 15.
def test_processes_and_threads_are_capped(operator: Operator) -> None:
    stdout, final = run(operator, THREADS_THEN_FORK, limits={"pids": 16})
    assert stdout == "tasks 15\n"
    assert final["reason"] == "Completed"


def test_processes_and_threads_are_capped_under_runc_too(runc_operator: Operator) -> None:
    stdout, final = run(runc_operator, THREADS_THEN_FORK, limits={"pids": 16})
    assert stdout == "tasks 15\n"
    assert final["reason"] == "Completed"


FORK_BOMB = (
    "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
)
MEMORY_BOMB = "chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))"


@pytest.mark.parametrize("runtime", ["gvisor", "runc"])
def test_bombs_end_their_own_session_only(
    runtime: str, operator: Operator, runc_operator: Operator
) -> None:
    op = operator if runtime == "gvisor" else runc_operator
    fork_bomb = create(op, FORK_BOMB, timeouts={"executionSeconds": 8})
    memory_bomb = create(op, MEMORY_BOMB)
    bombs = [attach(op, fork_bomb), attach(op, memory_bomb)]
    try:
        # Watched from now on: an ended session is deleted RETENTION_SECONDS after its
        # final status, which may come while the normal session below still starts.
        with ThreadPoolExecutor() as pool:
            memory_final = pool.submit(wait_phase, op, memory_bomb, FINAL)
            fork_final = pool.submit(wait_phase, op, fork_bomb, FINAL, 30)
            time.sleep(2)  # both bombs going off
            stdout, final = run(op, "print(sum(range(10**6)))")
            assert (stdout, final["reason"]) == ("499999500000\n", "Completed")
            assert memory_final.result()["reason"] == "MemoryLimitExceeded"
            assert fork_final.result()["reason"] == "TimeLimitExceeded"
        for bomb in bombs:
            bomb.communicate(timeout=30)
    finally:
        # Not left running after a failure (the next test would fail on its warning).
        for bomb in bombs:
            if bomb.poll() is None:
                bomb.kill()
                bomb.communicate()


def test_unknown_language_is_invalid_spec(operator: Operator) -> None:
    session_id = names.new_session_id()
    kubectl_json_create(
        {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "metadata": {"name": session_id, "namespace": operator.namespace},
            "spec": {"language": "cobol", "code": "DISPLAY 'HI'."},
        }
    )
    final = wait_phase(operator, session_id, FINAL)
    assert (final["phase"], final["reason"]) == ("Terminated", "InvalidSpec")
    assert "cobol" in final["message"]


def test_missing_image_is_start_failed(operator: Operator) -> None:
    session_id = create(operator, "hello", language="broken")
    final = wait_phase(operator, session_id, FINAL)
    assert (final["phase"], final["reason"]) == ("Terminated", "StartFailed")
    assert "ErrImageNeverPull" in final["message"]
    assert_cleaned_up(operator, session_id)


def test_pod_deleted_by_someone_else_is_pod_lost(operator: Operator) -> None:
    session_id = create(operator, "print(input())")
    wait_phase(operator, session_id, ("Running",))
    kubectl("delete", "pod", names.pod_name(session_id), "-n", operator.namespace, "--wait=false")
    final = wait_phase(operator, session_id, FINAL)
    assert (final["phase"], final["reason"]) == ("Terminated", "PodLost")


def test_retention_deletes_the_ended_codesession(operator: Operator) -> None:
    _, final = run(operator, "print('bye')")
    assert session(operator, final["id"]) is not None
    assert gone(operator, "codesession", final["id"], timeout=RETENTION_SECONDS + 20)


def test_session_that_ends_while_the_operator_is_down_ends_cleanly(operator: Operator) -> None:
    session_id = create(operator, "import time\nprint(input())\ntime.sleep(2)")
    attached = attach(operator, session_id, b"still here\n")
    read_until(attached, b"still here\n")
    operator.stop(crash=True)
    try:
        attached.communicate(timeout=60)  # the program ended, and nobody recorded it
        assert status(operator, session_id)["phase"] == "Running"
    finally:
        operator.start()
    final = wait_phase(operator, session_id, FINAL)
    assert (final["phase"], final["reason"], final["exitCode"]) == ("Finished", "Completed", 0)
    assert_cleaned_up(operator, session_id)
    assert gone(operator, "codesession", session_id, timeout=RETENTION_SECONDS + 20)


def test_pod_lost_while_the_operator_is_down_is_noticed_on_restart(operator: Operator) -> None:
    session_id = create(operator, "print(input())")
    wait_phase(operator, session_id, ("Running",))
    operator.stop()
    try:
        kubectl("delete", "pod", names.pod_name(session_id), "-n", operator.namespace)
    finally:
        operator.start()
    final = wait_phase(operator, session_id, FINAL)
    assert (final["phase"], final["reason"]) == ("Terminated", "PodLost")
    assert_cleaned_up(operator, session_id)


# -- level-triggered: what an event missed is repaired ------------------------------------


def _refuse_final_status(namespace: str, session_id: str) -> str:
    """A ValidatingAdmissionPolicy that refuses a final status for one session."""
    name = f"icee-it-refuse-final-{session_id[:8]}"
    refuse = (
        f"object.metadata.name != '{session_id}' || !has(object.status) || "
        "!has(object.status.phase) || !(object.status.phase in ['Finished', 'Terminated'])"
    )
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [names.GROUP],
                        "apiVersions": [names.VERSION],
                        "operations": ["UPDATE"],
                        "resources": [f"{names.PLURAL}/status"],
                    }
                ]
            },
            "validations": [{"expression": refuse, "message": "refused by the test"}],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    for obj in (policy, binding):
        kubectl_json_create(obj)
    return name


def _final_status_refused(namespace: str, session_id: str) -> bool:
    probe = json.dumps({"status": {"phase": "Finished"}})
    out = subprocess.run(
        [KUBECTL, "patch", "codesession", session_id, "-n", namespace, "--subresource=status",
         "--type=merge", "-p", probe, "--dry-run=server"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return out.returncode != 0 and "refused by the test" in out.stderr


def _container_terminated(namespace: str, session_id: str) -> bool:
    state = kubectl(
        "get", "pod", names.pod_name(session_id), "-n", namespace,
        "-o", "jsonpath={.status.containerStatuses[0].state.terminated.reason}", check=False,
    )  # fmt: skip
    return state != ""


def test_a_refused_final_status_write_is_repaired(long_retention_operator: Operator) -> None:
    """The pod's final event comes while the status write is refused: kopf drops
    that event's failure, the periodic repair still ends the session with its reason."""
    operator = long_retention_operator
    session_id = create(operator, "print(input())")
    wait_phase(operator, session_id, ("Running",))
    policy = _refuse_final_status(operator.namespace, session_id)
    try:
        wait_for(
            "the final status refused",
            lambda: _final_status_refused(operator.namespace, session_id),
            30,
            every=0.2,
        )
        raw, _ = attach(operator, session_id, b"done\n").communicate(timeout=60)
        assert program_stdout(raw) == b"done\n"
        wait_for(
            "the container terminated",
            lambda: _container_terminated(operator.namespace, session_id),
            30,
            every=0.2,
        )
        time.sleep(3)  # the operator saw the pod's end and could not write it
        assert status(operator, session_id)["phase"] == "Running"
    finally:
        kubectl("delete", "validatingadmissionpolicybinding", policy, check=False)
        kubectl("delete", "validatingadmissionpolicy", policy, check=False)
    # Repaired within a reconcile interval (10 s) once writes are allowed again.
    final = wait_phase(operator, session_id, FINAL, timeout=40)
    assert (final["phase"], final["reason"], final["exitCode"]) == ("Finished", "Completed", 0)
    assert_cleaned_up(operator, session_id)


def test_the_execution_deadline_ends_the_session_on_time(operator: Operator) -> None:
    seconds = 4
    session_id = create(
        operator, "import time\ntime.sleep(300)", timeouts={"executionSeconds": seconds}
    )
    attached = attach(operator, session_id)
    final = wait_phase(operator, session_id, FINAL, timeout=60)
    attached.communicate(timeout=30)
    assert (final["phase"], final["reason"]) == ("Terminated", "TimeLimitExceeded")
    ran = datetime.fromisoformat(final["finishedAt"]) - datetime.fromisoformat(final["startedAt"])
    # The operator's own timer, not the kubelet's sync: within a few seconds of the time.
    assert seconds <= ran.total_seconds() < seconds + 3, final


def test_kopf_keeps_no_second_copy_of_the_code_and_no_finalizer(operator: Operator) -> None:
    code = "print('a program whose text appears once')"
    _, final = run(operator, code)
    obj = session(operator, final["id"])
    assert obj is not None
    annotations = json.dumps(obj["metadata"].get("annotations") or {})
    assert "last-handled-configuration" in annotations
    assert "appears once" not in annotations
    # A CodeSession can always be deleted, even with no operator running.
    assert not obj["metadata"].get("finalizers")
