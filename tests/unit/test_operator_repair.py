"""The operator's level-triggered parts that need no cluster: kopf's stored copy of
the spec, and the execution deadline."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
from icee_core.languages import load_registry
from icee_core.models import ServerMaxima, Timeouts
from icee_operator.deadlines import Deadlines
from icee_operator.handlers import DIFFBASE_IGNORED
from icee_operator.kube import Conflict
from icee_operator.repair import arm_execution_deadline, execution_deadline
from icee_operator.sessions import Context
from icee_operator.settings import OperatorSettings

STARTED = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def body(phase: str | None, execution: int = 30, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "icee.dev/v1alpha1",
        "kind": "CodeSession",
        "metadata": {"name": "s", "namespace": "n", "labels": {"a": "b"}},
        "spec": {
            "language": "python",
            "code": "print('the user program')" * 100,
            "files": [{"name": "lib.py", "content": "x = 1"}],
            "timeouts": {"executionSeconds": execution},
        },
        "status": {"phase": phase, **status} if phase else {},
    }


def context(maxima: ServerMaxima | None = None) -> Context:
    settings = OperatorSettings(_env_file=None, maxima=maxima or ServerMaxima())  # type: ignore[call-arg]
    return Context(settings, load_registry(None), kube=None, deadlines=Deadlines())  # type: ignore[arg-type]


def test_kopf_keeps_no_copy_of_the_code() -> None:
    storage = kopf.AnnotationsDiffBaseStorage(
        prefix="icee.dev", key="last-handled-configuration", ignored_fields=list(DIFFBASE_IGNORED)
    )
    essence = storage.build(body=kopf.Body(body("Running")))
    assert essence["spec"] == {"language": "python", "timeouts": {"executionSeconds": 30}}
    assert "the user program" not in str(essence)


def test_execution_deadline_counts_from_the_start() -> None:
    running = body("Running", 30, startedAt=STARTED.isoformat())
    assert execution_deadline(context(), running) == STARTED + timedelta(seconds=30)


def test_execution_deadline_is_capped_by_the_server_maxima() -> None:
    maxima = ServerMaxima(timeouts=Timeouts(execution_seconds=5))
    running = body("Running", 30, startedAt=STARTED.isoformat())
    assert execution_deadline(context(maxima), running) == STARTED + timedelta(seconds=5)


def test_no_execution_deadline_before_the_program_runs() -> None:
    assert execution_deadline(context(), body("Pending")) is None
    assert execution_deadline(context(), body(None)) is None


class FakeKube:
    """The calls a status write makes; `conflicts` refused patches first."""

    def __init__(self, stored: dict[str, Any], conflicts: int = 0) -> None:
        self.stored = stored
        self.conflicts = conflicts
        self.calls: list[str] = []

    async def get_session(self, name: str) -> dict[str, Any]:
        self.calls.append("get")
        return self.stored

    async def patch_session_status(self, name: str, status: dict[str, Any], version: str) -> None:
        self.calls.append(f"patch@{version}")
        if self.conflicts:
            self.conflicts -= 1
            self.stored["metadata"]["resourceVersion"] = "8"
            raise Conflict(name)
        self.stored["status"] = status

    async def delete_pod(self, name: str, grace_seconds: int) -> None:
        self.calls.append("delete pod")


def running_session() -> dict[str, Any]:
    started = (datetime.now(UTC) - timedelta(seconds=60)).isoformat()
    running = body("Running", 30, startedAt=started, podName="run-s")
    running["metadata"] |= {"resourceVersion": "7", "creationTimestamp": started}
    return running


async def test_the_deadline_writes_from_the_object_it_saw_in_one_call() -> None:
    # A loaded API server answers slowly: no read before the write.
    ctx = context()
    kube = FakeKube(running_session())
    ctx.kube = kube  # type: ignore[assignment]
    arm_execution_deadline(ctx, kube.stored)
    await asyncio.sleep(0.05)
    assert kube.calls == ["patch@7", "delete pod"]
    assert kube.stored["status"]["reason"] == "TimeLimitExceeded"
    await ctx.deadlines.close()


async def test_the_deadline_reads_again_when_the_session_changed_meanwhile() -> None:
    ctx = context()
    kube = FakeKube(running_session(), conflicts=1)
    ctx.kube = kube  # type: ignore[assignment]
    arm_execution_deadline(ctx, kube.stored)
    await asyncio.sleep(0.05)
    assert kube.calls == ["patch@7", "get", "patch@8", "delete pod"]
    assert kube.stored["status"]["phase"] == "Terminated"
    await ctx.deadlines.close()
