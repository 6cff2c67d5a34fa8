"""The runner protocol codec: encoding, incremental decoding, untrusted input."""

from __future__ import annotations

import random

import pytest
from icee_core import runner_protocol as rp
from icee_core.runner_protocol import (
    Decoder,
    Diagnostic,
    Output,
    Quit,
    Result,
    RunnerProtocolError,
    Running,
    RunRequest,
    SourceFile,
    Stage,
    StageBegan,
    StageEnded,
    TerminalSize,
    Waiting,
)

X_RUN = b"stage=run exit=3 signal=0 cpu_ms=1012 mem_bytes=104857600 wall_ms=1500"
STREAM = (
    b"b 13\nstage=compile\n"
    b"x 71\nstage=compile exit=0 signal=0 cpu_ms=700 mem_bytes=50000000 wall_ms=900\n"
    b"b 9\nstage=run\n"
    b"o 12\nName? \xe2\x82\xac\no\n\n"
    b"w 0\n\n"
    b"r 0\n\n"
    b"e 6\nboom!\n\n"
    b"o 0\n\n" + b"x %d\n%s\n" % (len(X_RUN), X_RUN) + b"q 12\nresult=error\n"
)
EXPECTED = [
    StageBegan(Stage.COMPILE),
    StageEnded(Stage.COMPILE, 0, 0, 700, 50_000_000, 900),
    StageBegan(Stage.RUN),
    Output("stdout", b"Name? \xe2\x82\xac\no\n"),
    Waiting(),
    Running(),
    Output("stderr", b"boom!\n"),
    StageEnded(Stage.RUN, 3, 0, 1012, 104_857_600, 1500),
    Quit(Result.ERROR),
]


def merged(events: list[rp.Event]) -> list[rp.Event]:
    """Adjacent output pieces of the same stream joined (frames arrive in pieces)."""
    out: list[rp.Event] = []
    for event in events:
        last = out[-1] if out else None
        if isinstance(event, Output) and isinstance(last, Output) and last.stream == event.stream:
            out[-1] = Output(event.stream, last.data + event.data)
        else:
            out.append(event)
    return out


def test_request_frames_in_protocol_order() -> None:
    req = RunRequest(
        files=(SourceFile("main.py", b"print(1)\n"), SourceFile("lib/util.py", b"")),
        compile="make",
        run="python3 -u main.py",
        pids=32,
        tty=TerminalSize(80, 24),
    )
    assert rp.request(req) == (
        b"F 17\nmain.py\0print(1)\n\n"
        b"F 12\nlib/util.py\0\n"
        b"C 4\nmake\n"
        b"R 18\npython3 -u main.py\n"
        b"L 7\npids=32\n"
        b"T 15\ncols=80 rows=24\n"
        b"G 0\n\n"
    )


def test_request_without_compile_or_tty() -> None:
    req = RunRequest(files=(SourceFile("a", b"x"),), run="r", pids=1)
    assert rp.request(req) == b"F 3\na\0x\nR 1\nr\nL 6\npids=1\nG 0\n\n"


def test_output_cap_goes_with_the_pids_limit() -> None:
    req = RunRequest(files=(), run="r", pids=4, output=1048577)
    assert b"L 21\npids=4 output=1048577\n" in rp.request(req)


def test_control_frames() -> None:
    assert rp.eof() == b"E 0\n\n"
    assert rp.signal(rp.Signal.SIGINT) == b"S 6\nSIGINT\n"
    assert rp.resize(TerminalSize(120, 40)) == b"Z 16\ncols=120 rows=40\n"
    assert rp.input_frames(b"hi\n") == [b"I 3\nhi\n\n"]
    assert rp.input_frames(b"") == []


def test_large_input_is_split_into_bounded_frames() -> None:
    data = b"a" * (rp.MAX_PAYLOAD + 5)
    frames = rp.input_frames(data)
    assert len(frames) == 2
    assert frames[1] == b"I 5\naaaaa\n"


@pytest.mark.parametrize(("cols", "rows"), [(0, 24), (80, 0), (1001, 24), (80, 1001)])
def test_terminal_size_is_bounded(cols: int, rows: int) -> None:
    with pytest.raises(ValueError, match=r"must be 1\.\.1000"):
        TerminalSize(cols, rows)


def test_decodes_a_whole_stream() -> None:
    decoder = Decoder()
    assert merged(decoder.feed(STREAM)) == EXPECTED
    decoder.close()
    assert decoder.finished


def test_decodes_byte_by_byte() -> None:
    decoder = Decoder()
    events = [e for i in range(len(STREAM)) for e in decoder.feed(STREAM[i : i + 1])]
    assert merged(events) == EXPECTED
    decoder.close()


def test_decodes_random_splits() -> None:
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(STREAM)), rng.randint(1, 20)))
        decoder = Decoder()
        events = []
        for start, end in zip([0, *cuts], [*cuts, len(STREAM)], strict=True):
            events += decoder.feed(STREAM[start:end])
        assert merged(events) == EXPECTED


def test_output_is_passed_on_as_it_arrives_not_gathered() -> None:
    decoder = Decoder()
    assert decoder.feed(b"o 1000000\n" + b"a" * 10) == [Output("stdout", b"a" * 10)]
    assert decoder.feed(b"b" * 5) == [Output("stdout", b"b" * 5)]


def test_program_output_cannot_forge_frames() -> None:
    forged = b"q 16\nresult=completed\n"
    stream = b"o %d\n%s\n" % (len(forged), forged) + b"q 12\nresult=error\n"
    assert merged(Decoder().feed(stream)) == [Output("stdout", forged), Quit(Result.ERROR)]


@pytest.mark.parametrize(
    ("garbage", "message"),
    [
        (b"hello world\n", "not a frame header"),
        (b"o 5\nabcdeX", "not followed by a newline"),
        (b"o -1\n\n", "not a frame header"),
        (b"o 01\na\n", "not a frame header"),
        (b"o 1048577\n", "at most"),
        (b"o 99999999\n", "not a frame header"),
        (b"k 0\n\n", "unknown frame type"),
        (b"G 0\n\n", "unknown frame type"),
        (b"x 600\n", "events are at most"),
        (b"w 1\na\n", "must be empty"),
        (b"b 9\nstage=foo\n", "stage=foo"),
        (b"b 0\n\n", "missing stage"),
        (b"b 19\nstage=run stage=run\n", "twice"),
        (b"b 10\nstage=run \n", "not key=value"),
        (b"b 10\nstage=r\xc3\xa9n\n", "not ASCII"),
        (b"q 14\nresult=success\n", "result=success"),
        (b"x 9\nstage=run\n", "missing exit"),
        (b"a" * 40, "has no newline"),
        (b"q 12\nresult=error\nb 9\nstage=run\n", "after the final"),
    ],
)
def test_garbage_raises_a_clear_error(garbage: bytes, message: str) -> None:
    with pytest.raises(RunnerProtocolError, match=message):
        Decoder().feed(garbage)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("exit", "256"),
        ("exit", "-2"),
        ("signal", "129"),
        ("cpu_ms", "-1"),
        ("mem_bytes", "1" * 20),
        ("wall_ms", "1.5"),
        ("wall_ms", "+3"),
        ("cpu_ms", "007"),
    ],
)
def test_stage_end_fields_are_bounded(field: str, value: str) -> None:
    values = {"exit": "0", "signal": "0", "cpu_ms": "1", "mem_bytes": "1", "wall_ms": "1"}
    values[field] = value
    payload = ("stage=run " + " ".join(f"{k}={v}" for k, v in values.items())).encode()
    with pytest.raises(RunnerProtocolError, match=field):
        Decoder().feed(b"x %d\n%s\n" % (len(payload), payload))


def test_unknown_event_keys_are_ignored() -> None:
    payload = b"stage=run future_key=1"
    assert Decoder().feed(b"b %d\n%s\n" % (len(payload), payload)) == [StageBegan(Stage.RUN)]


def test_killed_stage_reports_its_signal() -> None:
    payload = b"stage=run exit=-1 signal=9 cpu_ms=0 mem_bytes=0 wall_ms=5"
    (event,) = Decoder().feed(b"x %d\n%s\n" % (len(payload), payload))
    assert isinstance(event, StageEnded)
    assert (event.exit_code, event.signal) == (-1, 9)
    assert event.usage() == {
        "exitCode": -1,
        "signal": 9,
        "cpuMillis": 0,
        "memoryBytes": 0,
        "wallMillis": 5,
    }


def test_stream_cut_mid_frame_is_an_error_at_close() -> None:
    decoder = Decoder()
    decoder.feed(b"o 5\nab")
    with pytest.raises(RunnerProtocolError, match="middle of a frame"):
        decoder.close()
    decoder = Decoder()
    decoder.feed(b"o 2\nab")  # the trailing newline missing
    with pytest.raises(RunnerProtocolError):
        decoder.close()


def test_log_mode_reads_runner_diagnostics_between_frames() -> None:
    log = b"icee-runner: starting\no 3\nhi\n\nicee-runner: bye\nq 16\nresult=completed\n"
    events = []
    decoder = Decoder(log=True)
    for i in range(len(log)):
        events += decoder.feed(log[i : i + 1])
    assert merged(events) == [
        Diagnostic("icee-runner: starting"),
        Output("stdout", b"hi\n"),
        Diagnostic("icee-runner: bye"),
        Quit(Result.COMPLETED),
    ]


def test_live_mode_does_not_accept_diagnostics_on_stdout() -> None:
    with pytest.raises(RunnerProtocolError):
        Decoder().feed(b"icee-runner: hello\n")


def test_log_mode_bounds_a_diagnostic_line() -> None:
    with pytest.raises(RunnerProtocolError, match="diagnostic line over"):
        Decoder(log=True).feed(b"icee-runner: " + b"a" * rp.MAX_DIAGNOSTIC + b"\n")


def test_tail_reads_the_final_frames_from_the_end() -> None:
    tail = b"...lo\n\n" + b"x %d\n%s\n" % (len(X_RUN), X_RUN) + b"q 12\nresult=error\n"
    found = rp.read_tail(tail)
    assert found.result is Result.ERROR
    assert found.ended == StageEnded(Stage.RUN, 3, 0, 1012, 104_857_600, 1500)


def test_tail_with_a_trailing_diagnostic_and_no_newline() -> None:
    tail = "q 20\nresult=compile-error\nicee-runner: compile stage failed"
    assert rp.read_tail(tail) == rp.Tail(Result.COMPILE_ERROR, None)


@pytest.mark.parametrize(
    "tail",
    [
        "",
        "Traceback...\nValueError\n",
        "q 16\nresult=complete\n",  # length does not match
        "q 14\nresult=success\n",
        "q 16\nresult=completed\nmore output\n",
    ],
)
def test_tail_without_a_valid_final_frame(tail: str) -> None:
    assert rp.read_tail(tail) == rp.Tail()


def test_stage_ends_from_the_head_of_a_log() -> None:
    assert rp.stage_ends(STREAM[:120]) == [StageEnded(Stage.COMPILE, 0, 0, 700, 50_000_000, 900)]
    assert rp.stage_ends(b"garbage\n") == []
