"""The in-sandbox runner's wire protocol (docs/runner.md), both directions. Pure, no I/O.

Frames are ``<type> <length>\\n<payload>\\n``. The api encodes the request and the
control frames (:func:`request`, :func:`input_frames`, :func:`eof`, :func:`signal`,
:func:`resize`); :class:`Decoder` turns the runner's stdout, cut into chunks
anywhere, into typed events. The runner runs as the session's uid, so its stream
is untrusted input: every header, size and field is checked, buffering is bounded
(a header line, or one small event payload; program output is passed on as it
arrives, never gathered), and anything off raises :class:`RunnerProtocolError`.

The operator reads the same frames from the container log: :func:`read_tail` its
end (the ``q`` frame is the last thing the runner writes, the last stage's ``x``
frame comes right before it), :func:`stage_ends` its beginning.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, TypeVar

MAX_PAYLOAD = 1 << 20
MAX_HEADER = 32  # bytes, the "\n" included
# Events are a handful of key=value pairs; anything longer is not the runner speaking.
MAX_EVENT_PAYLOAD = 512
# A file name in an F frame (the runner refuses longer ones too).
MAX_FILE_NAME = 255
# The runner's own diagnostics on its stderr; in a merged pod log they sit between frames.
DIAGNOSTIC_PREFIX = b"icee-runner:"
MAX_DIAGNOSTIC = 4096
MAX_TERMINAL = 1000

_HEADER = re.compile(rb"([A-Za-z]) (0|[1-9][0-9]{0,6})")
_KEY_VALUE = re.compile(r"([a-z][a-z_]{0,31})=([\x21-\x7e]{0,64})")
_INT = re.compile(r"-?(0|[1-9][0-9]{0,18})")


class RunnerProtocolError(ValueError):
    """The runner's stream broke the protocol; the message says where and how."""


class Stage(StrEnum):
    COMPILE = "compile"
    RUN = "run"


class Result(StrEnum):
    COMPLETED = "completed"
    ERROR = "error"
    COMPILE_ERROR = "compile-error"
    SIGNALED = "signaled"
    SETUP_FAILED = "setup-failed"
    # A signal from outside the sandbox (the container being stopped) was forwarded:
    # whoever stopped it (the operator's deadline, a deletion) names the outcome.
    STOPPED = "stopped"


_E = TypeVar("_E", bound=StrEnum)


class Signal(StrEnum):
    SIGINT = "SIGINT"
    SIGTERM = "SIGTERM"
    SIGKILL = "SIGKILL"
    SIGQUIT = "SIGQUIT"
    SIGHUP = "SIGHUP"


# -- api -> runner ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TerminalSize:
    cols: int
    rows: int

    def __post_init__(self) -> None:
        for name, value in (("cols", self.cols), ("rows", self.rows)):
            if not 1 <= value <= MAX_TERMINAL:
                raise ValueError(f"{name} must be 1..{MAX_TERMINAL}, not {value}")

    def payload(self) -> bytes:
        return f"cols={self.cols} rows={self.rows}".encode()


@dataclass(frozen=True, slots=True)
class SourceFile:
    name: str  # relative, already validated
    content: bytes


@dataclass(frozen=True, slots=True)
class RunRequest:
    """What the runner needs to start: sent once, right after attach."""

    files: tuple[SourceFile, ...]
    run: str
    pids: int
    compile: str | None = None
    tty: TerminalSize | None = None
    output: int | None = None  # o/e payload bytes the runner relays at most


def frame(kind: str, payload: bytes = b"") -> bytes:
    if len(kind) != 1 or not kind.isascii() or not kind.isalpha():
        raise ValueError(f"a frame type is one ASCII letter, not {kind!r}")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes; at most {MAX_PAYLOAD}")
    return b"%s %d\n%s\n" % (kind.encode(), len(payload), payload)


def request(req: RunRequest) -> bytes:
    """The request frames in the protocol's order, ending with ``G``."""
    parts = []
    for source in req.files:
        name = source.name.encode()
        if not name or len(name) > MAX_FILE_NAME or b"\0" in name:
            raise ValueError(f"bad file name {source.name!r}")
        parts.append(frame("F", name + b"\0" + source.content))
    if req.compile is not None:
        parts.append(frame("C", req.compile.encode()))
    parts.append(frame("R", req.run.encode()))
    if req.pids < 1:
        raise ValueError("pids must be >= 1")
    limits = f"pids={req.pids}" if req.output is None else f"pids={req.pids} output={req.output}"
    parts.append(frame("L", limits.encode()))
    if req.tty is not None:
        parts.append(frame("T", req.tty.payload()))
    parts.append(frame("G"))
    return b"".join(parts)


def input_frames(data: bytes) -> list[bytes]:
    """Input for the program's stdin, in frames of at most MAX_PAYLOAD bytes."""
    return [frame("I", data[i : i + MAX_PAYLOAD]) for i in range(0, len(data), MAX_PAYLOAD)]


def eof() -> bytes:
    return frame("E")


def signal(sig: Signal) -> bytes:
    return frame("S", sig.value.encode())


def resize(size: TerminalSize) -> bytes:
    return frame("Z", size.payload())


# -- runner -> api ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Output:
    """Program output (a piece of one o/e frame: frames are passed on as they arrive)."""

    stream: Literal["stdout", "stderr"]
    data: bytes


@dataclass(frozen=True, slots=True)
class StageBegan:
    stage: Stage


@dataclass(frozen=True, slots=True)
class StageEnded:
    stage: Stage
    exit_code: int  # -1 when killed by a signal
    signal: int  # 0 if none
    cpu_ms: int
    mem_bytes: int
    wall_ms: int

    def usage(self) -> dict[str, int]:
        """The wire form in a final state and in the CodeSession status."""
        return {
            "exitCode": self.exit_code,
            "signal": self.signal,
            "cpuMillis": self.cpu_ms,
            "memoryBytes": self.mem_bytes,
            "wallMillis": self.wall_ms,
        }


@dataclass(frozen=True, slots=True)
class Waiting:
    pass


@dataclass(frozen=True, slots=True)
class Running:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    result: Result


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """A line of the runner's stderr found between frames of a merged pod log."""

    text: str


Event = Output | StageBegan | StageEnded | Waiting | Running | Quit | Diagnostic

_OUTPUT: dict[int, Literal["stdout", "stderr"]] = {ord("o"): "stdout", ord("e"): "stderr"}
_EVENTS = frozenset(b"bxwrq")
_LIMITS = {
    "exit": (-1, 255),
    "signal": (0, 128),
    "cpu_ms": (0, 10**15),
    "mem_bytes": (0, 10**15),
    "wall_ms": (0, 10**15),
}


def _fields(kind: str, payload: bytes, required: Iterable[str]) -> dict[str, str]:
    """``key=value`` pairs; every required key once. Unknown keys are ignored (newer runner)."""
    try:
        text = payload.decode("ascii")
    except UnicodeDecodeError:
        raise RunnerProtocolError(f"{kind!r} frame: payload is not ASCII") from None
    found: dict[str, str] = {}
    for pair in text.split(" ") if text else []:
        match = _KEY_VALUE.fullmatch(pair)
        if match is None:
            raise RunnerProtocolError(f"{kind!r} frame: {pair[:40]!r} is not key=value")
        key, value = match.groups()
        if key in found:
            raise RunnerProtocolError(f"{kind!r} frame: {key} given twice")
        found[key] = value
    missing = [key for key in required if key not in found]
    if missing:
        raise RunnerProtocolError(f"{kind!r} frame: missing {', '.join(missing)}")
    return found


def _int(kind: str, key: str, value: str) -> int:
    low, high = _LIMITS[key]
    if _INT.fullmatch(value) is None or not low <= int(value) <= high:
        raise RunnerProtocolError(f"{kind!r} frame: {key}={value[:20]} is not in {low}..{high}")
    return int(value)


def _enum(kind: str, key: str, value: str, enum: type[_E]) -> _E:
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(e.value for e in enum)
        raise RunnerProtocolError(f"{kind!r} frame: {key}={value[:20]}; one of {choices}") from None


def parse_event(kind: str, payload: bytes) -> Event:
    """One complete non-output frame as its event."""
    if kind in "wr":
        if payload:
            raise RunnerProtocolError(f"{kind!r} frame must be empty")
        return Waiting() if kind == "w" else Running()
    if kind == "b":
        fields = _fields(kind, payload, ["stage"])
        return StageBegan(_enum(kind, "stage", fields["stage"], Stage))
    if kind == "x":
        keys = ["stage", *_LIMITS]
        fields = _fields(kind, payload, keys)
        return StageEnded(
            stage=_enum(kind, "stage", fields["stage"], Stage),
            exit_code=_int(kind, "exit", fields["exit"]),
            signal=_int(kind, "signal", fields["signal"]),
            cpu_ms=_int(kind, "cpu_ms", fields["cpu_ms"]),
            mem_bytes=_int(kind, "mem_bytes", fields["mem_bytes"]),
            wall_ms=_int(kind, "wall_ms", fields["wall_ms"]),
        )
    if kind == "q":
        fields = _fields(kind, payload, ["result"])
        return Quit(_enum(kind, "result", fields["result"], Result))
    raise RunnerProtocolError(f"unknown frame type {kind!r}")


class Decoder:
    """The runner's stdout, fed in chunks as they arrive, as events.

    ``log=True`` reads a pod log instead, where the runner's stderr lines
    (``icee-runner: ...``) are merged in between frames: they come out as
    :class:`Diagnostic` events. Buffered at most: one header line, one event payload
    (MAX_EVENT_PAYLOAD) or one diagnostic line (MAX_DIAGNOSTIC).
    """

    def __init__(self, *, log: bool = False) -> None:
        self._log = log
        self._buf = bytearray()  # header, event payload or diagnostic being gathered
        self._kind = 0  # frame type being read (0: at a header)
        self._left = 0  # payload bytes still to come
        self._trailer = False  # the payload is read, its "\n" is next
        self._diagnostic = False
        self.finished = False  # the q frame was read

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            if self.finished and not self._log:
                raise RunnerProtocolError("data after the final 'q' frame")
            if self._diagnostic:
                pos = self._read_diagnostic(view, pos, events)
            elif self._trailer:
                if view[pos] != 0x0A:
                    raise RunnerProtocolError("a frame's payload is not followed by a newline")
                pos += 1
                self._trailer = False
                self._end_payload(events)
            elif self._kind:
                pos = self._read_payload(view, pos, events)
            else:
                pos = self._read_header(view, pos, events)
        return events

    def close(self) -> None:
        """End of stream: raises if it stopped in the middle of a frame."""
        if self._kind or self._trailer or self._buf:
            raise RunnerProtocolError("the stream ended in the middle of a frame")

    def _read_header(self, view: memoryview, pos: int, events: list[Event]) -> int:
        room = MAX_HEADER - len(self._buf)
        end = bytes(view[pos : pos + room]).find(b"\n")
        take = end + 1 if end >= 0 else min(len(view) - pos, room)
        self._buf += view[pos : pos + take]
        pos += take
        if self._log and self._buf[: len(DIAGNOSTIC_PREFIX)] == DIAGNOSTIC_PREFIX[: len(self._buf)]:
            if len(self._buf) >= len(DIAGNOSTIC_PREFIX):
                self._diagnostic = True
                return self._read_diagnostic(view, pos, events)
            if end < 0:
                return pos  # could still become a diagnostic line
        if not self._buf.endswith(b"\n"):
            if len(self._buf) >= MAX_HEADER:
                raise RunnerProtocolError(
                    f"no frame header: {bytes(self._buf[:MAX_HEADER])!r} has no newline"
                )
            return pos
        match = _HEADER.fullmatch(bytes(self._buf[:-1]))
        if match is None:
            raise RunnerProtocolError(f"not a frame header: {bytes(self._buf[:-1])!r}")
        kind, length = match.group(1)[0], int(match.group(2))
        if kind not in _OUTPUT and kind not in _EVENTS:
            raise RunnerProtocolError(f"unknown frame type {chr(kind)!r}")
        if length > MAX_PAYLOAD:
            raise RunnerProtocolError(f"frame of {length} bytes; at most {MAX_PAYLOAD}")
        if kind in _EVENTS and length > MAX_EVENT_PAYLOAD:
            raise RunnerProtocolError(
                f"{chr(kind)!r} frame of {length} bytes; events are at most {MAX_EVENT_PAYLOAD}"
            )
        self._buf.clear()
        self._kind, self._left = kind, length
        if length == 0:
            self._trailer = True
        return pos

    def _read_payload(self, view: memoryview, pos: int, events: list[Event]) -> int:
        take = min(self._left, len(view) - pos)
        chunk = view[pos : pos + take]
        self._left -= take
        stream = _OUTPUT.get(self._kind)
        if stream is not None:
            if take:
                events.append(Output(stream, bytes(chunk)))
        else:
            self._buf += chunk
        if self._left == 0:
            self._trailer = True
        return pos + take

    def _end_payload(self, events: list[Event]) -> None:
        kind, self._kind = chr(self._kind), 0
        if kind in "oe":
            return
        payload = bytes(self._buf)
        self._buf.clear()
        event = parse_event(kind, payload)
        if self.finished:
            raise RunnerProtocolError(f"{kind!r} frame after the final 'q' frame")
        if isinstance(event, Quit):
            self.finished = True
        events.append(event)

    def _read_diagnostic(self, view: memoryview, pos: int, events: list[Event]) -> int:
        if not self._buf.endswith(b"\n"):
            end = bytes(view[pos : pos + MAX_DIAGNOSTIC]).find(b"\n")
            take = end + 1 if end >= 0 else min(len(view) - pos, MAX_DIAGNOSTIC)
            self._buf += view[pos : pos + take]
            pos += take
            if len(self._buf) > MAX_DIAGNOSTIC:
                raise RunnerProtocolError(f"a runner diagnostic line over {MAX_DIAGNOSTIC} bytes")
            if not self._buf.endswith(b"\n"):
                return pos
        events.append(Diagnostic(bytes(self._buf[:-1]).decode("utf-8", "replace")))
        self._buf.clear()
        self._diagnostic = False
        return pos


# -- the end of a container log (the operator's reading) ------------------------------


@dataclass(frozen=True, slots=True)
class Tail:
    """What the last frames of a runner's log say (None where absent or unreadable)."""

    result: Result | None = None
    ended: StageEnded | None = None  # the last stage's end (the compile stage's if it failed)


def read_tail(text: str | bytes) -> Tail:
    """The ``q`` frame at the very end of a log tail and the ``x`` frame before it.

    A tail starts anywhere (the kubelet keeps the last 2 KiB / 80 lines as the
    termination message), so it is read from its end, line by line: trailing runner
    diagnostics are skipped, then ``q <n>`` + payload, then ``x <n>`` + payload.
    Program output cannot pose as these: the runner writes them after all of it.
    """
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    while lines and lines[-1].startswith(DIAGNOSTIC_PREFIX):
        lines.pop()
    quit_event = _last_frame(lines, "q")
    if not isinstance(quit_event, Quit):
        return Tail()
    ended = _last_frame(lines, "x")
    return Tail(quit_event.result, ended if isinstance(ended, StageEnded) else None)


def _last_frame(lines: list[bytes], kind: str) -> Event | None:
    """Pop a one-line-payload frame of ``kind`` off the end of ``lines``."""
    if len(lines) < 2:
        return None
    header = _HEADER.fullmatch(lines[-2])
    if header is None or header.group(1).decode() != kind:
        return None
    payload = lines[-1]
    if int(header.group(2)) != len(payload):
        return None
    try:
        event = parse_event(kind, payload)
    except RunnerProtocolError:
        return None
    del lines[-2:]
    return event


def stage_ends(head: bytes) -> list[StageEnded]:
    """The ``x`` frames in the beginning of a pod log, up to where it is cut or breaks."""
    decoder = Decoder(log=True)
    try:
        events = decoder.feed(head)
    except RunnerProtocolError:
        return []  # the events before the break are lost with it; rare (a merged diagnostic)
    return [event for event in events if isinstance(event, StageEnded)]
