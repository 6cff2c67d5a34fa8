"""Client message validation and server message shapes (the SPEC's WebSocket protocol)."""

import pytest
from icee_api.session import messages
from icee_api.session.messages import (
    Eof,
    Input,
    MessageError,
    Resize,
    SendSignal,
    Terminate,
    parse_client_message,
)
from icee_api.session.state import Outcome, State
from icee_core.runner_protocol import Signal


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"type": "input", "data": "user input\\n"}', Input("user input\n")),
        ('{"type": "input", "data": ""}', Input("")),
        ('{"type": "eof"}', Eof()),
        ('{"type": "terminate"}', Terminate()),
        ('{"type": "eof", "extra": 1}', Eof()),
        ('{"type": "signal", "signal": "SIGINT"}', SendSignal(Signal.SIGINT)),
        ('{"type": "signal", "signal": "SIGKILL"}', SendSignal(Signal.SIGKILL)),
        ('{"type": "resize", "cols": 120, "rows": 40}', Resize(120, 40)),
        ('{"type": "resize", "cols": 1, "rows": 1000}', Resize(1, 1000)),
    ],
)
def test_valid_messages(raw: str, expected: object) -> None:
    assert parse_client_message(raw) == expected


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "JSON object"),
        ('"input"', "JSON object"),
        ('{"data": "x"}', "no 'type'"),
        ('{"type": "dance"}', "unknown message type 'dance'"),
        ('{"type": "resize"}', "integer 'cols'"),
        ('{"type": "resize", "cols": 80}', "integer 'rows'"),
        ('{"type": "resize", "cols": 80, "rows": 1001}', "integer 'rows' in 1..1000"),
        ('{"type": "resize", "cols": true, "rows": 10}', "integer 'cols'"),
        ('{"type": "resize", "cols": 8.5, "rows": 10}', "integer 'cols'"),
        ('{"type": "signal"}', "one of SIGINT, SIGTERM, SIGKILL"),
        ('{"type": "signal", "signal": "SIGHUP"}', "one of SIGINT"),
        ('{"type": "input"}', "string 'data'"),
        ('{"type": "input", "data": 5}', "string 'data'"),
    ],
)
def test_invalid_messages_say_what_is_wrong(raw: str, says: str) -> None:
    with pytest.raises(MessageError, match=says):
        parse_client_message(raw)


def test_server_messages() -> None:
    assert messages.output("stdout", "Hello World\n") == {"type": "stdout", "data": "Hello World\n"}
    assert messages.state(State.RUNNING) == {"type": "state", "state": "running"}
    assert messages.final_state(Outcome(State.FINISHED, 0, "Completed")) == {
        "type": "state",
        "state": "finished",
        "exitCode": 0,
        "reason": "Completed",
    }
    assert messages.error("bad") == {"type": "error", "message": "bad"}
    assert messages.state(State.WAITING) == {"type": "state", "state": "waiting"}
    usage = {"run": {"exitCode": 0, "cpuMillis": 1, "memoryBytes": 2, "wallMillis": 3}}
    assert messages.final_state(Outcome(State.FINISHED, 0, "Completed", usage=usage)) == {
        "type": "state",
        "state": "finished",
        "exitCode": 0,
        "reason": "Completed",
        "usage": usage,
    }
