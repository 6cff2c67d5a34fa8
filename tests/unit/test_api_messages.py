"""Client message validation and server message shapes (the SPEC's WebSocket protocol)."""

import pytest
from icee_api import messages
from icee_api.messages import Eof, Input, MessageError, Terminate, parse_client_message
from icee_api.session import Outcome, State


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"type": "input", "data": "user input\\n"}', Input("user input\n")),
        ('{"type": "input", "data": ""}', Input("")),
        ('{"type": "eof"}', Eof()),
        ('{"type": "terminate"}', Terminate()),
        ('{"type": "eof", "extra": 1}', Eof()),
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
        ('{"type": "resize"}', "unknown message type 'resize'"),
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
