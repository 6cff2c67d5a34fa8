"""The CodeSession resource as pydantic models: spec (written by the api), status
(written only by the operator), limits and the server maxima that cap them.

Field names are snake_case in Python and camelCase on the wire, matching the CRD
in charts/icee/crds/codesession.yaml. The hard bounds below (`le=`, `ge=`) are the
CRD schema's bounds too; the configurable server maxima sit under them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from icee_core import names
from icee_core.sources import SourceEntry, check_files

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

CODE_MAX_BYTES = 64 * KiB
TERMINATION_MESSAGE_MAX_CHARS = 1024


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict for the Kubernetes API (camelCase, no nulls)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Limits(WireModel):
    """Per-session resource limits. Defaults are the SPEC's; hard bounds guard typos."""

    cpu_millis: int = Field(default=500, ge=10, le=8000)
    memory_bytes: int = Field(default=200 * MiB, ge=16 * MiB, le=16 * GiB)
    # Processes plus threads of the user program (RLIMIT_NPROC in the sandbox).
    pids: int = Field(default=32, ge=1, le=4096)
    # stdout+stderr together; enforced by the api on the stream.
    output_bytes: int = Field(default=1 * MiB, ge=1, le=1 * GiB)
    # Size of the memory-backed /workspace (counts against memory_bytes too).
    workspace_bytes: int = Field(default=32 * MiB, ge=1 * MiB, le=4 * GiB)
    # Total stdin a client may send; enforced by the api.
    stdin_bytes: int = Field(default=1 * MiB, ge=0, le=1 * GiB)


class Timeouts(WireModel):
    # Wall-clock cap from the program's start (the operator's deadline; the pod's
    # activeDeadlineSeconds is only a backstop).
    execution_seconds: int = Field(default=120, ge=1, le=86400)
    # No I/O in either direction for this long ends the session; enforced by the api.
    idle_seconds: int = Field(default=30, ge=1, le=86400)


class Phase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    FINISHED = "Finished"  # the program ended by itself
    TERMINATED = "Terminated"  # something ended it


FINAL_PHASES = frozenset({Phase.FINISHED, Phase.TERMINATED})


class Reason(StrEnum):
    # Finished:
    COMPLETED = "Completed"
    ERROR = "Error"
    COMPILATION_ERROR = "CompilationError"
    # Terminated by the operator from what the pod reports:
    TIME_LIMIT_EXCEEDED = "TimeLimitExceeded"
    MEMORY_LIMIT_EXCEEDED = "MemoryLimitExceeded"
    POD_LOST = "PodLost"
    START_FAILED = "StartFailed"  # image missing, unschedulable past the start timeout, ...
    INVALID_SPEC = "InvalidSpec"  # e.g. a hand-made CodeSession with an unknown language
    # Terminated on request (spec.termination, set by the api):
    IDLE_TIMEOUT = "IdleTimeout"
    OUTPUT_LIMIT_EXCEEDED = "OutputLimitExceeded"
    STDIN_LIMIT_EXCEEDED = "StdinLimitExceeded"
    USER_TERMINATED = "UserTerminated"
    SERVER_SHUTDOWN = "ServerShutdown"
    CLIENT_GONE = "ClientGone"


# The reasons a client of the CodeSession API (the api) may put in spec.termination.
TERMINATION_REASONS = frozenset(
    {
        Reason.IDLE_TIMEOUT,
        Reason.OUTPUT_LIMIT_EXCEEDED,
        Reason.STDIN_LIMIT_EXCEEDED,
        Reason.USER_TERMINATED,
        Reason.SERVER_SHUTDOWN,
        Reason.CLIENT_GONE,
        # The api's start gate gave the session no start slot in time.
        Reason.START_FAILED,
    }
)


class Termination(WireModel):
    """A request to end the session; the operator deletes the pod and reports it."""

    reason: Reason
    message: str = Field(default="", max_length=TERMINATION_MESSAGE_MAX_CHARS)

    @field_validator("reason")
    @classmethod
    def _requestable(cls, reason: Reason) -> Reason:
        if reason not in TERMINATION_REASONS:
            allowed = ", ".join(sorted(TERMINATION_REASONS))
            raise ValueError(f"{reason} cannot be requested; one of: {allowed}")
        return reason


class Start(WireModel):
    """Set by the api when the session's client connects: only then does the session
    get a sandbox (lazy start). Set once, never changed or removed (CRD CEL rules)."""

    # When the client connected (the operator's start timeout runs from here).
    at: datetime
    # A warm pod the api claimed for the session (issue 12): the operator adopts it
    # instead of creating one. None: a cold start.
    pod_name: str | None = Field(default=None, min_length=1, max_length=253)


TERMINAL_MAX = 1000
DEFAULT_COLS = 80
DEFAULT_ROWS = 24


class CodeSessionSpec(WireModel):
    language: str = Field(min_length=1, max_length=63, pattern=r"^[a-z][a-z0-9-]*$")
    # Exactly one: `code` (one file, named by the language) or `files` (icee_core.sources).
    code: str | None = None
    files: tuple[SourceEntry, ...] | None = None
    limits: Limits = Limits()
    timeouts: Timeouts = Timeouts()
    # A pseudo-terminal for the program (stdout and stderr become one stream).
    tty: bool = False
    cols: int | None = Field(default=None, ge=1, le=TERMINAL_MAX)
    rows: int | None = Field(default=None, ge=1, le=TERMINAL_MAX)
    termination: Termination | None = None
    start: Start | None = None

    @field_validator("code")
    @classmethod
    def _code_size(cls, code: str | None) -> str | None:
        if code is None:
            return None
        if not code.strip():
            raise ValueError("code is empty")
        size = len(code.encode("utf-8"))
        if size > CODE_MAX_BYTES:
            raise ValueError(f"code is {size} bytes; at most {CODE_MAX_BYTES} are accepted")
        return code

    @model_validator(mode="after")
    def _code_or_files(self) -> CodeSessionSpec:
        if (self.code is None) == (self.files is None):
            raise ValueError("give either code or files")
        if self.files is not None:
            check_files(self.files)
        return self


class StageUsage(WireModel):
    """What one stage (compile or run) cost, as the runner measured it (wait4)."""

    exit_code: int = Field(ge=-1, le=255)  # -1: killed by a signal
    signal: int = Field(default=0, ge=0, le=128)
    cpu_millis: int = Field(ge=0)
    memory_bytes: int = Field(ge=0)
    wall_millis: int = Field(ge=0)


class Usage(WireModel):
    compile: StageUsage | None = None
    run: StageUsage | None = None


class Condition(WireModel):
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str | None = None
    message: str | None = None
    last_transition_time: datetime | None = None


class CodeSessionStatus(WireModel):
    # Ignore rather than reject: other controllers may leave fields in status.
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )

    phase: Phase | None = None
    pod_name: str | None = None
    exit_code: int | None = None
    reason: Reason | None = None
    message: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    usage: Usage | None = None
    conditions: list[Condition] = []

    @property
    def is_final(self) -> bool:
        return self.phase in FINAL_PHASES


class ServerMaxima(WireModel):
    """The most a session may get on this server; a request may lower, never raise."""

    limits: Limits = Limits()
    timeouts: Timeouts = Timeouts()


def _field_minimum(requested: WireModel, maxima: WireModel) -> dict[str, int]:
    return {
        name: min(getattr(requested, name), getattr(maxima, name))
        for name in type(requested).model_fields
    }


def clamp_limits(requested: Limits, maxima: Limits) -> Limits:
    return Limits(**_field_minimum(requested, maxima))


def clamp_timeouts(requested: Timeouts, maxima: Timeouts) -> Timeouts:
    return Timeouts(**_field_minimum(requested, maxima))


def clamp_spec(spec: CodeSessionSpec, maxima: ServerMaxima) -> CodeSessionSpec:
    """The spec with every limit and timeout lowered to the server maxima where above."""
    return spec.model_copy(
        update={
            "limits": clamp_limits(spec.limits, maxima.limits),
            "timeouts": clamp_timeouts(spec.timeouts, maxima.timeouts),
        }
    )


def codesession_manifest(
    session_id: str, spec: CodeSessionSpec, namespace: str, client: str | None = None
) -> dict[str, Any]:
    """The CodeSession object the api creates for a new session.

    ``client``: the label value naming who created it (``names.LABEL_CLIENT``).
    """
    labels = {names.LABEL_MANAGED_BY: names.MANAGED_BY, names.LABEL_LANGUAGE: spec.language}
    if client is not None:
        labels[names.LABEL_CLIENT] = client
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {
            "name": names.codesession_name(session_id),
            "namespace": namespace,
            "labels": labels,
        },
        "spec": spec.to_wire(),
    }
