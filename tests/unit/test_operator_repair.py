"""The operator's level-triggered parts that need no cluster: kopf's stored copy of
the spec, and the execution deadline."""

from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
from icee_core.languages import load_registry
from icee_core.models import ServerMaxima, Timeouts
from icee_operator.deadlines import Deadlines
from icee_operator.handlers import DIFFBASE_IGNORED
from icee_operator.repair import execution_deadline
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
