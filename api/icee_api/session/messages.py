"""The WebSocket protocol between the api and its clients (JSON text frames).

client -> server: ``input`` {data}, ``eof``, ``terminate``, ``signal`` {signal},
``resize`` {cols, rows}.
server -> client: ``stdout`` / ``stderr`` {data}, ``state`` {state, exitCode?,
reason?, message?, usage?}, ``error`` {message}.
Close codes below 4000 are the RFC 6455 ones; 44xx mirror the HTTP status they mean.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from icee_core.runner_protocol import MAX_TERMINAL, Signal

from icee_api.session.state import Outcome, State


class CloseCode(IntEnum):
    NORMAL = 1000
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    NOT_FOUND = 4404
    ALREADY_ATTACHED = 4409


@dataclass(frozen=True, slots=True)
class Input:
    data: str


@dataclass(frozen=True, slots=True)
class Eof:
    pass


@dataclass(frozen=True, slots=True)
class Terminate:
    pass


@dataclass(frozen=True, slots=True)
class SendSignal:
    signal: Signal


@dataclass(frozen=True, slots=True)
class Resize:
    cols: int
    rows: int


ClientMessage = Input | Eof | Terminate | SendSignal | Resize

CLIENT_TYPES = ("input", "eof", "terminate", "signal", "resize")
# What a client may send to the program's process group.
CLIENT_SIGNALS = (Signal.SIGINT, Signal.SIGTERM, Signal.SIGKILL)


class MessageError(ValueError):
    """A client frame that is not a valid message; the text is sent back to the client."""


def parse_client_message(raw: str) -> ClientMessage:
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise MessageError(f"malformed JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MessageError("a message must be a JSON object with a 'type'")
    kind = obj.get("type")
    if kind == "input":
        data = obj.get("data")
        if not isinstance(data, str):
            raise MessageError("an 'input' message needs a string 'data'")
        return Input(data)
    if kind == "eof":
        return Eof()
    if kind == "terminate":
        return Terminate()
    if kind == "signal":
        name = obj.get("signal")
        if name not in CLIENT_SIGNALS:
            names = ", ".join(CLIENT_SIGNALS)
            raise MessageError(f"a 'signal' message needs 'signal': one of {names}")
        return SendSignal(Signal(name))
    if kind == "resize":
        cols, rows = obj.get("cols"), obj.get("rows")
        for key, value in (("cols", cols), ("rows", rows)):
            if type(value) is not int or not 1 <= value <= MAX_TERMINAL:
                raise MessageError(f"a 'resize' message needs integer '{key}' in 1..{MAX_TERMINAL}")
        return Resize(int(cols), int(rows))  # type: ignore[arg-type]
    if kind is None:
        raise MessageError("message has no 'type'")
    shown = repr(kind)[:40]  # never echo more than a short prefix of what was sent
    raise MessageError(f"unknown message type {shown}; expected one of {', '.join(CLIENT_TYPES)}")


def output(stream: str, data: str) -> dict[str, Any]:
    return {"type": stream, "data": data}


def state(current: State) -> dict[str, Any]:
    return {"type": "state", "state": current.value}


def final_state(outcome: Outcome) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "type": "state",
        "state": outcome.state.value,
        "exitCode": outcome.exit_code,
        "reason": outcome.reason,
    }
    if outcome.message:
        msg["message"] = outcome.message
    if outcome.usage:
        msg["usage"] = outcome.usage
    return msg


def error(message: str) -> dict[str, Any]:
    return {"type": "error", "message": message}
