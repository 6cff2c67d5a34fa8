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
