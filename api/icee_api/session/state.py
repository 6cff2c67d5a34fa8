"""The life of one streamed session, as one explicit state machine.

::

    pending ──> running <──> waiting
       │           │            │
       └───────────┴────────────┴──> finished | terminated

``waiting``: the program consumed all input sent so far and is blocked reading
more (the runner's ``w`` report), ``running`` again once it resumes.
``finished``: the program ended by itself; ``terminated``: something ended it
(a limit, the user, the server). Terminal states accept no further move, and an
invalid move raises instead of being ignored, so a bug shows up where it happens.
Termination is a request sent to the operator, not a state: the session stays
``running`` until the operator's final status arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from icee_core.models import CodeSessionStatus, Phase


class State(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    FINISHED = "finished"
    TERMINATED = "terminated"


TERMINAL = frozenset({State.FINISHED, State.TERMINATED})

_MOVES: dict[State, frozenset[State]] = {
    State.PENDING: frozenset({State.RUNNING, State.FINISHED, State.TERMINATED}),
    State.RUNNING: frozenset({State.WAITING, State.FINISHED, State.TERMINATED}),
    State.WAITING: frozenset({State.RUNNING, State.FINISHED, State.TERMINATED}),
    State.FINISHED: frozenset(),
    State.TERMINATED: frozenset(),
}


# The one map from the operator's CodeSession phase to the state clients see (no
# phase yet: the operator has not seen the session).
_STATE_OF_PHASE: dict[Phase | None, State] = {
    None: State.PENDING,
    Phase.PENDING: State.PENDING,
    Phase.RUNNING: State.RUNNING,
    Phase.FINISHED: State.FINISHED,
    Phase.TERMINATED: State.TERMINATED,
}


def state_of(phase: Phase | None) -> State:
    return _STATE_OF_PHASE[phase]


class InvalidTransition(RuntimeError):
    def __init__(self, current: State, target: State) -> None:
        super().__init__(f"session cannot move from {current} to {target}")
        self.current = current
        self.target = target


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a session ended, as the operator recorded it in the CodeSession status."""

    state: State
    exit_code: int | None
    reason: str
    message: str = ""
    # Per stage (compile, run): exitCode, cpuMillis, memoryBytes, wallMillis.
    usage: dict[str, dict[str, int]] | None = None

    def __post_init__(self) -> None:
        if self.state not in TERMINAL:
            raise ValueError(f"an outcome must be terminal, not {self.state}")


@dataclass(frozen=True, slots=True)
class TerminationRequest:
    reason: str
    message: str


class Session:
    def __init__(self, session_id: str) -> None:
        self.id = session_id
        self.state = State.PENDING
        self.outcome: Outcome | None = None
        self.termination: TerminationRequest | None = None

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL

    def _move(self, target: State) -> None:
        if target not in _MOVES[self.state]:
            raise InvalidTransition(self.state, target)
        self.state = target

    def start(self) -> None:
        self._move(State.RUNNING)

    def wait(self) -> None:
        self._move(State.WAITING)

    def resume(self) -> None:
        self._move(State.RUNNING)

    def end(self, outcome: Outcome) -> None:
        self._move(outcome.state)
        self.outcome = outcome

    def request_termination(self, reason: str, message: str) -> bool:
        """Record why the session should end; only the first reason counts.

        Returns True if this call made the request (the caller then asks the operator).
        """
        if self.ended:
            raise InvalidTransition(self.state, State.TERMINATED)
        if self.termination is not None:
            return False
        self.termination = TerminationRequest(reason, message)
        return True


def status_of(obj: dict[str, Any]) -> CodeSessionStatus:
    """A CodeSession's status (ValidationError for one this api cannot read)."""
    return CodeSessionStatus.model_validate(obj.get("status") or {})


def outcome_of(status: CodeSessionStatus) -> Outcome | None:
    """The session's outcome if the operator recorded a final phase."""
    if not status.is_final:
        return None
    reason = status.reason.value if status.reason is not None else ""
    usage = status.usage.to_wire() if status.usage is not None else None
    return Outcome(
        state_of(status.phase), status.exit_code, reason, status.message or "", usage or None
    )
