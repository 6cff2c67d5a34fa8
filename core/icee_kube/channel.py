"""The Kubernetes remote-command channel protocol (``v5.channel.k8s.io`` / ``v4``).

Every binary WebSocket frame starts with one channel byte: 0 stdin, 1 stdout,
2 stderr, 3 error (a JSON ``metav1.Status``), 4 resize. ``v5`` adds 255, the close
signal: the frame ``[255, channel]`` closes that one stream. We never send it: stdin
EOF reaches the runner in-band (its ``E`` frame). Pure functions, no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
SUBPROTOCOLS = (V5, V4)


class Channel(IntEnum):
    STDIN = 0
    STDOUT = 1
    STDERR = 2
    ERROR = 3
    RESIZE = 4
    CLOSE = 255


class ChannelProtocolError(ValueError):
    """A frame that does not follow the channel protocol."""


@dataclass(frozen=True, slots=True)
class Frame:
    channel: Channel
    data: bytes


@dataclass(frozen=True, slots=True)
class RemoteStatus:
    """What the error channel reported (``metav1.Status``)."""

    success: bool
    reason: str
    message: str


def encode(channel: Channel, data: bytes) -> bytes:
    return bytes((channel,)) + data


def decode(frame: bytes | str) -> Frame:
    if isinstance(frame, str):
        raise ChannelProtocolError("text frame on a binary channel protocol")
    if not frame:
        raise ChannelProtocolError("empty frame without a channel byte")
    try:
        channel = Channel(frame[0])
    except ValueError:
        raise ChannelProtocolError(f"unknown channel {frame[0]}") from None
    return Frame(channel, frame[1:])


def parse_status(data: bytes) -> RemoteStatus:
    """Read the error channel's payload; anything unparseable is reported as a failure."""
    try:
        status = json.loads(data)
    except ValueError:
        return RemoteStatus(False, "Unknown", data.decode("utf-8", "replace"))
    if not isinstance(status, dict):
        return RemoteStatus(False, "Unknown", str(status))
    return RemoteStatus(
        success=status.get("status") == "Success",
        reason=str(status.get("reason") or ""),
        message=str(status.get("message") or ""),
    )
