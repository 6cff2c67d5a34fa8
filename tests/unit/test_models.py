"""CodeSession models: defaults, validation, clamping, and agreement with the CRD."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from icee_core import names
from icee_core.models import (
    CODE_MAX_BYTES,
    TERMINATION_REASONS,
    CodeSessionSpec,
    CodeSessionStatus,
    Limits,
    MiB,
    Phase,
    Reason,
    ServerMaxima,
    Termination,
    Timeouts,
    clamp_spec,
    codesession_manifest,
)
from pydantic import ValidationError

CRD_PATH = Path(__file__).parents[2] / "charts/icee/crds/codesession.yaml"
SESSION_ID = "0b7c1f8e-3c1d-4e6a-9b2f-5d8e7a6c4b3a"


def test_defaults_are_the_spec_limits() -> None:
    spec = CodeSessionSpec(language="python", code="print('Hello World')")
    assert spec.to_wire() == {
        "language": "python",
        "code": "print('Hello World')",
        "limits": {
            "cpuMillis": 500,
            "memoryBytes": 200 * MiB,
            "pids": 32,
            "outputBytes": 1 * MiB,
            "workspaceBytes": 32 * MiB,
            "stdinBytes": 1 * MiB,
        },
        "timeouts": {"executionSeconds": 120, "idleSeconds": 30},
        "tty": False,
    }


def test_wire_round_trip_with_camel_case() -> None:
    wire = {
        "language": "cpp",
        "code": "int main() {}",
        "limits": {"memoryBytes": 64 * MiB},
        "timeouts": {"idleSeconds": 5},
        "termination": {"reason": "UserTerminated", "message": "stop button"},
    }
    spec = CodeSessionSpec.model_validate(wire)
    assert spec.limits.memory_bytes == 64 * MiB
    assert spec.limits.cpu_millis == 500
    assert spec.termination == Termination(reason=Reason.USER_TERMINATED, message="stop button")
    assert CodeSessionSpec.model_validate(spec.to_wire()) == spec


@pytest.mark.parametrize("code", ["", "   \n\t"])
def test_empty_code_is_rejected(code: str) -> None:
    with pytest.raises(ValidationError, match="code is empty"):
        CodeSessionSpec(language="python", code=code)


def test_code_size_is_counted_in_utf8_bytes() -> None:
    CodeSessionSpec(language="python", code="x" * CODE_MAX_BYTES)
    # 2 bytes per character: within the limit in characters, over it in bytes.
    with pytest.raises(ValidationError, match=r"at most 65536"):
        CodeSessionSpec(language="python", code="é" * (CODE_MAX_BYTES // 2 + 1))


@pytest.mark.parametrize("language", ["Python", "py thon", "", "x" * 64, "-x"])
def test_malformed_language_ids_are_rejected(language: str) -> None:
    with pytest.raises(ValidationError):
        CodeSessionSpec(language=language, code="1")


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="extra"):
        CodeSessionSpec.model_validate({"language": "python", "code": "1", "image": "evil"})
    with pytest.raises(ValidationError, match="extra"):
        Limits.model_validate({"cpu": 4})


def test_limits_have_hard_bounds() -> None:
    with pytest.raises(ValidationError):
        Limits(memory_bytes=1)
    with pytest.raises(ValidationError):
        Limits(pids=0)
    with pytest.raises(ValidationError):
        Timeouts(execution_seconds=0)


@pytest.mark.parametrize(
    "reason", [Reason.COMPLETED, Reason.POD_LOST, Reason.MEMORY_LIMIT_EXCEEDED]
)
def test_only_request_reasons_can_terminate(reason: Reason) -> None:
    with pytest.raises(ValidationError, match="cannot be requested"):
        Termination(reason=reason)


def test_clamp_lowers_to_the_maxima_and_keeps_lower_requests() -> None:
    maxima = ServerMaxima(
        limits=Limits(cpu_millis=250, memory_bytes=100 * MiB),
        timeouts=Timeouts(execution_seconds=60),
    )
    requested = CodeSessionSpec(
        language="python",
        code="1",
        limits=Limits(cpu_millis=4000, memory_bytes=50 * MiB, pids=1000),
        timeouts=Timeouts(execution_seconds=3600, idle_seconds=10),
    )
    clamped = clamp_spec(requested, maxima)
    assert clamped.limits == Limits(
        cpu_millis=250,  # lowered to the maximum
        memory_bytes=50 * MiB,  # a request may lower
        pids=32,
        output_bytes=1 * MiB,
        workspace_bytes=32 * MiB,
        stdin_bytes=1 * MiB,
    )
    assert clamped.timeouts == Timeouts(execution_seconds=60, idle_seconds=10)
    assert clamped.code == requested.code


def test_clamp_of_a_default_request_under_default_maxima_changes_nothing() -> None:
    spec = CodeSessionSpec(language="python", code="1")
    assert clamp_spec(spec, ServerMaxima()) == spec


def test_status_parses_what_the_operator_writes() -> None:
    status = CodeSessionStatus.model_validate(
        {
            "phase": "Finished",
            "exitCode": 0,
            "reason": "Completed",
            "podName": "run-x",
            "startedAt": "2025-01-01T10:00:00Z",
            "finishedAt": "2025-01-01T10:00:01Z",
            "someoneElses": "field",
        }
    )
    assert status.phase is Phase.FINISHED
    assert status.is_final
    assert status.to_wire()["finishedAt"] == "2025-01-01T10:00:01Z"
    assert not CodeSessionStatus().is_final


def test_codesession_manifest() -> None:
    spec = CodeSessionSpec(language="python", code="print(1)")
    assert codesession_manifest(SESSION_ID, spec, "icee-sandbox") == {
        "apiVersion": "icee.dev/v1alpha1",
        "kind": "CodeSession",
        "metadata": {
            "name": SESSION_ID,
            "namespace": "icee-sandbox",
            "labels": {"app.kubernetes.io/managed-by": "icee", "icee.dev/language": "python"},
        },
        "spec": spec.to_wire(),
    }


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (SESSION_ID, True),
        (SESSION_ID.upper(), False),
        ("0b7c1f8e-3c1d-1e6a-9b2f-5d8e7a6c4b3a", False),  # UUID1
        ("0b7c1f8e3c1d4e6a9b2f5d8e7a6c4b3a", False),
        ("../etc/passwd", False),
        ("", False),
    ],
)
def test_session_ids(value: str, valid: bool) -> None:
    assert names.is_session_id(value) is valid
    if not valid:
        with pytest.raises(ValueError, match="not a session id"):
            names.pod_name(value)


def test_new_session_ids_are_valid_and_name_their_objects() -> None:
    session_id = names.new_session_id()
    assert names.is_session_id(session_id)
    assert names.pod_name(session_id) == f"run-{session_id}"
    assert names.session_id_from_pod_name(names.pod_name(session_id)) == session_id
    assert names.session_id_from_pod_name("run-nope") is None


# The CRD's schema must accept what the models accept and bound what they bound.


def _crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD_PATH.read_text())
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def test_crd_names_match_core_names() -> None:
    crd = yaml.safe_load(CRD_PATH.read_text())
    assert crd["metadata"]["name"] == f"{names.PLURAL}.{names.GROUP}"
    assert crd["spec"]["group"] == names.GROUP
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["kind"] == names.KIND
    assert crd["spec"]["names"]["plural"] == names.PLURAL
    assert crd["spec"]["names"]["shortNames"] == [names.SHORT_NAME]
    (version,) = crd["spec"]["versions"]
    assert version["name"] == names.VERSION
    assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize(("section", "model"), [("limits", Limits), ("timeouts", Timeouts)])
def test_crd_bounds_match_the_models(section: str, model: type[Limits | Timeouts]) -> None:
    properties = _crd_schema()["properties"]["spec"]["properties"][section]["properties"]
    expected = {}
    for field in model.model_fields.values():
        bounds = {type(m).__name__: m for m in field.metadata}
        expected[field.alias] = {
            "type": "integer",
            "minimum": bounds["Ge"].ge,
            "maximum": bounds["Le"].le,
            "default": field.default,
        }
    actual = {
        key: {k: v for k, v in value.items() if k in ("type", "minimum", "maximum", "default")}
        for key, value in properties.items()
    }
    assert actual == expected


def test_crd_enums_match_the_models() -> None:
    schema = _crd_schema()
    termination = schema["properties"]["spec"]["properties"]["termination"]
    assert set(termination["properties"]["reason"]["enum"]) == set(TERMINATION_REASONS)
    status = schema["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == list(Phase)
    assert status["reason"]["enum"] == list(Reason)
