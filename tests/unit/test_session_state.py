"""The session state machine accepts the life cycle and refuses every other move."""

import pytest
from icee_api.session.state import InvalidTransition, Outcome, Session, State

FINISHED = Outcome(State.FINISHED, 0, "Completed")
TERMINATED = Outcome(State.TERMINATED, None, "IdleTimeout", "idle")


def test_pending_running_finished() -> None:
    s = Session("id")
    assert s.state is State.PENDING
    s.start()
    assert s.state is State.RUNNING
    s.end(FINISHED)
    assert (s.state, s.outcome, s.ended) == (State.FINISHED, FINISHED, True)


def test_running_waiting_running_then_ends() -> None:
    s = Session("id")
    s.start()
    s.wait()
    assert s.state is State.WAITING
    s.resume()
    s.wait()
    s.end(FINISHED)
    assert s.state is State.FINISHED


def test_waiting_needs_running() -> None:
    s = Session("id")
    with pytest.raises(InvalidTransition, match="from pending to waiting"):
        s.wait()
    s.start()
    with pytest.raises(InvalidTransition, match="from running to running"):
        s.resume()
    s.wait()
    with pytest.raises(InvalidTransition, match="from waiting to waiting"):
        s.wait()


def test_pending_can_end_without_running() -> None:
    s = Session("id")
    s.end(TERMINATED)
    assert s.state is State.TERMINATED


def test_running_twice_is_refused() -> None:
    s = Session("id")
    s.start()
    with pytest.raises(InvalidTransition, match="from running to running"):
        s.start()


@pytest.mark.parametrize("outcome", [FINISHED, TERMINATED])
def test_terminal_states_accept_nothing(outcome: Outcome) -> None:
    s = Session("id")
    s.end(outcome)
    with pytest.raises(InvalidTransition):
        s.start()
    with pytest.raises(InvalidTransition):
        s.end(FINISHED)
    with pytest.raises(InvalidTransition):
        s.request_termination("UserTerminated", "late")


def test_outcome_must_be_terminal() -> None:
    with pytest.raises(ValueError, match="terminal"):
        Outcome(State.RUNNING, None, "")


def test_first_termination_reason_wins() -> None:
    s = Session("id")
    s.start()
    assert s.request_termination("IdleTimeout", "idle")
    assert not s.request_termination("UserTerminated", "bye")
    assert s.termination is not None
    assert s.termination.reason == "IdleTimeout"
    assert s.state is State.RUNNING  # still running until the operator's final status
