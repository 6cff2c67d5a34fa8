"""The in-sandbox runner (runner/icee-runner.c) run directly on the host.

Each test starts the built binary with a temporary workspace and speaks
docs/runner.md to it. No cluster: these cover the runner's own behaviour
(framing, files, stages, relaying, waiting detection, tty, signals, usage,
limits); the cluster tests cover it inside gVisor.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from icee_core.runner_protocol import Decoder, Output, Quit, StageEnded
from runner_harness import Runner, build_runner, file_frame, frame, request

PY = "/usr/bin/python3"  # a system interpreter: the unprivileged-uid test can run it too
NODE = shutil.which("node")
# ICEE_RUNNER_WRAPPER="runsc ... do" runs these tests inside gVisor (see runner_harness);
# runsc do gives the sandbox a /tmp of its own, so the host cannot see the files written.
host_fs = pytest.mark.skipif(
    bool(os.environ.get("ICEE_RUNNER_WRAPPER")), reason="the runner's files are not on the host"
)


@pytest.fixture(scope="module", autouse=True)
def _runner_built() -> None:
    try:
        build_runner()
    except RuntimeError as e:
        pytest.fail(str(e))


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return tmp_path


def run_py(ws: Path, source: str, **kw: object) -> Runner:
    return Runner.start(
        ws,
        request(f"exec {PY} main.py", files=[("main.py", source.encode())], **kw),  # type: ignore[arg-type]
    )


def run_node(ws: Path, source: str, **kw: object) -> Runner:
    return Runner.start(
        ws,
        request(f"exec {NODE} main.js", files=[("main.js", source.encode())], **kw),  # type: ignore[arg-type]
    )


# ---------- framing ----------


def test_framing_round_trip_with_the_api_decoder(ws: Path) -> None:
    r = Runner.start(ws, request("printf 'a\\nb'; printf err >&2; exit 3"))
    code = r.finish()
    assert code == 3
    assert r.error is None
    assert r.kinds()[0] == "b"
    assert r.kinds()[-2:] == "xq"
    # The api's decoder reads the very same bytes.
    events = Decoder().feed(bytes(r.raw))
    assert [e.data for e in events if isinstance(e, Output) and e.stream == "stdout"] == [b"a\nb"]
    ended = [e for e in events if isinstance(e, StageEnded)]
    assert [e.exit_code for e in ended] == [3]
    assert isinstance(events[-1], Quit)
    assert events[-1].result == "error"
    x = r.last("x").fields()
    assert (x["stage"], x["exit"], x["signal"]) == ("run", "3", "0")
    assert {"cpu_ms", "mem_bytes", "wall_ms"} <= x.keys()


def test_exit_code_zero_is_completed(ws: Path) -> None:
    r = Runner.start(ws, request("true"))
    assert r.finish() == 0
    assert r.kinds() == "bxq"
    assert r.last("q").payload == b"result=completed"


# ---------- files ----------


@host_fs
def test_files_are_written_byte_exact_with_parents(ws: Path) -> None:
    blob = bytes(range(256)) * 3 + b"\0\n\r"
    files = [("main.py", b"print(1)\n"), ("pkg/sub/data.bin", blob), ("notes.txt", b"")]
    r = Runner.start(ws, request("ls -R", files=files))
    assert r.finish() == 0
    assert (ws / "pkg/sub/data.bin").read_bytes() == blob
    assert (ws / "main.py").read_bytes() == b"print(1)\n"
    assert (ws / "notes.txt").read_bytes() == b""
    assert oct((ws / "main.py").stat().st_mode & 0o777) == "0o644"


@pytest.mark.parametrize(
    "name",
    [
        b"../escape.py",
        b"/etc/escape.py",
        b"a/../../escape.py",
        b"a//b.py",
        b"./a.py",
        b"a/./b.py",
        b"dir/",
        b"",
        b"x" * 256,
    ],
)
def test_unsafe_file_names_are_refused(ws: Path, name: bytes) -> None:
    inner = ws / "inner"
    inner.mkdir()
    r = Runner.start(inner, file_frame(name, b"bad") + frame("R", b"true") + frame("G"))
    assert r.finish() == 125
    assert r.kinds() == "q"
    assert r.last("q").payload == b"result=setup-failed"
    assert "refused file name" in r.stderr()
    assert not (ws / "escape.py").exists()
    assert list(inner.iterdir()) == []


@host_fs
def test_a_file_through_a_symlink_is_refused(ws: Path) -> None:
    outside = ws / "outside"
    outside.mkdir()
    inner = ws / "inner"
    inner.mkdir()
    (inner / "link").symlink_to(outside)
    r = Runner.start(inner, file_frame("link/x.py", b"bad") + frame("R", b"true") + frame("G"))
    assert r.finish() == 125
    assert r.last("q").payload == b"result=setup-failed"
    assert list(outside.iterdir()) == []


def test_a_duplicate_file_is_refused(ws: Path) -> None:
    req = file_frame("a.py", b"1") + file_frame("a.py", b"2") + frame("R", b"true") + frame("G")
    r = Runner.start(ws, req)
    assert r.finish() == 125
    assert "a.py" in r.stderr()


# ---------- stages ----------


def test_compile_failure_ends_with_compile_error(ws: Path) -> None:
    r = Runner.start(ws, request("echo never", compile_cmd="echo oops >&2; exit 4"))
    assert r.finish() == 4
    assert r.kinds() == "bexq"
    assert r.events[0].payload == b"stage=compile"
    assert r.output("e") == b"oops\n"
    x = r.last("x").fields()
    assert (x["stage"], x["exit"]) == ("compile", "4")
    assert r.last("q").payload == b"result=compile-error"
    assert b"never" not in bytes(r.raw)


def test_compile_then_run_with_input_queued_during_compile(ws: Path) -> None:
    r = Runner.start(ws, request("cat built", compile_cmd="sleep 0.3; echo artefact > built"))
    r.send(frame("I", b"typed early\n") + frame("E"))
    assert r.finish() == 0
    assert [e.payload for e in r.events if e.kind == "b"] == [b"stage=compile", b"stage=run"]
    assert r.output() == b"artefact\n"
    (ws / "second").mkdir()
    r2 = Runner.start(ws / "second", request("cat", compile_cmd="sleep 0.3"))
    r2.send(frame("I", b"typed early\n") + frame("E"))
    assert r2.finish() == 0
    assert r2.output() == b"typed early\n"


def test_output_is_byte_exact_binary_and_partial_lines(ws: Path) -> None:
    src = (
        "import sys\n"
        "out = sys.stdout.buffer\n"
        "out.write(bytes(range(256))); out.flush()\n"
        "out.write(b'partial'); out.flush()\n"
        "out.write(b'x' * 300000 + b'\\n'); out.flush()\n"
        "out.write(b'o 5\\nfake!\\n\\0end')\n"
    )
    r = run_py(ws, src)
    assert r.finish() == 0
    assert r.output() == bytes(range(256)) + b"partial" + b"x" * 300000 + b"\no 5\nfake!\n\0end"


def test_stdout_and_stderr_stay_apart(ws: Path) -> None:
    r = Runner.start(ws, request("echo out1; echo err1 >&2; echo out2; echo err2 >&2"))
    assert r.finish() == 0
    assert r.output("o") == b"out1\nout2\n"
    assert r.output("e") == b"err1\nerr2\n"


def test_program_output_cannot_forge_frames(ws: Path) -> None:
    fake = (
        b"x 70\nstage=run exit=0 signal=0 cpu_ms=1 mem_bytes=1 wall_ms=1\n"
        b"q 16\nresult=completed\nw 0\n\n"
    )
    r = Runner.start(ws, request("cat forge; cat forge >&2; exit 9", files=[("forge", fake)]))
    assert r.finish() == 9
    assert r.kinds() == "boexq"
    assert r.output() == fake
    assert r.output("e") == fake
    assert r.last("q").payload == b"result=error"


def test_e_closes_stdin(ws: Path) -> None:
    r = Runner.start(ws, request("cat"))
    r.send(frame("I", b"one\n") + frame("I", b"two"))
    r.send(frame("E"))
    assert r.finish() == 0
    assert r.output() == b"one\ntwo"


def test_input_to_a_program_that_closed_its_stdin_is_dropped(ws: Path) -> None:
    # Nothing reads it, and the runner holds no read end: the input goes, signals still
    # get through behind it.
    r = Runner.start(ws, request("exec 0<&-; echo closed; exec sleep 30"))
    r.wait_output(b"closed")
    r.send(frame("I", b"x" * 1000000) + frame("I", b"y" * 1000000))
    r.send(frame("S", b"SIGTERM"))
    assert r.finish(timeout=10) == 128 + signal.SIGTERM


def test_end_of_the_runners_stdin_is_not_the_end_of_input(ws: Path) -> None:
    # A broken attach stream, not the user's EOF: the program's input stays open.
    r = Runner.start(ws, request("timeout 2 cat; echo rc=$?"))
    r.send(frame("I", b"data\n"))
    r.close_stdin()
    assert r.finish() == 0
    assert r.output() == b"data\nrc=124\n"
    assert "stdin ended without E" in r.stderr()


def test_e_then_the_end_of_the_runners_stdin(ws: Path) -> None:
    r = Runner.start(ws, request("cat; echo rc=$?"))
    r.send(frame("I", b"data") + frame("E", b""))
    r.close_stdin()
    assert r.finish() == 0
    assert r.output() == b"datarc=0\n"


def test_background_child_holding_stdout_does_not_hang(ws: Path) -> None:
    r = Runner.start(ws, request("sleep 30 & echo started"))
    started = time.monotonic()
    assert r.finish(timeout=10) == 0
    assert time.monotonic() - started < 10
    assert r.output() == b"started\n"
    assert r.kinds().endswith("xq")


def test_signal_frame_in_pipe_mode(ws: Path) -> None:
    r = run_py(ws, "import time\nprint('ready', flush=True)\ntime.sleep(30)\n")
    r.wait_output(b"ready")
    r.send(frame("S", b"SIGINT"))
    code = r.finish()
    x = r.last("x").fields()
    # Python re-raises SIGINT on an uncaught KeyboardInterrupt.
    assert (x["signal"], x["exit"]) == ("2", "-1")
    assert code == 130
    assert r.last("q").payload == b"result=signaled"


def test_sigterm_to_the_runner_is_forwarded(ws: Path) -> None:
    r = Runner.start(ws, request("exec sleep 30"))
    r.wait_kind("b")
    time.sleep(0.1)
    r.proc.send_signal(signal.SIGTERM)
    assert r.finish() == 128 + signal.SIGTERM
    assert r.last("x").fields()["signal"] == str(int(signal.SIGTERM))
    # Stopped from outside (a deadline, a deletion): the stopper names the outcome.
    assert r.last("q").payload == b"result=stopped"


def test_a_program_that_exits_cleanly_on_sigterm_is_still_stopped(ws: Path) -> None:
    handler = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    r = run_py(ws, handler)
    r.wait_output(b"ready")
    r.proc.send_signal(signal.SIGTERM)
    assert r.finish() == 0
    assert r.last("x").fields()["exit"] == "0"
    assert r.last("q").payload == b"result=stopped"


# ---------- usage ----------


def test_usage_of_a_one_second_busy_loop(ws: Path) -> None:
    r = run_py(ws, "import time\nwhile time.process_time() < 1.0:\n    pass\n")
    assert r.finish() == 0
    cpu = int(r.last("x").fields()["cpu_ms"])
    assert 950 <= cpu <= 1600, cpu


def test_usage_of_a_100_mb_allocation(ws: Path) -> None:
    r = run_py(ws, "x = b'a' * (100 << 20)\nprint(len(x))\n")
    assert r.finish() == 0
    mem = int(r.last("x").fields()["mem_bytes"])
    assert 100 << 20 <= mem <= 140 << 20, mem


# ---------- waiting detection ----------


def test_waiting_after_a_prompt_and_running_after_input(ws: Path) -> None:
    r = run_py(ws, "name = input('name? ')\nprint('hello', name)\n")
    prompt = r.wait_output(b"name? ")
    w = r.wait_kind("w", after=prompt.at)
    r.send(frame("I", b"bob\n"))
    rr = r.wait_kind("r", after=w.at)
    assert r.finish() == 0
    assert r.output() == b"name? hello bob\n"
    assert r.kinds().index("w") < r.kinds().index("r")
    assert rr.at >= w.at


def test_no_waiting_during_a_cpu_loop(ws: Path) -> None:
    r = run_py(ws, "import time\nt = time.time()\nwhile time.time() - t < 3:\n    pass\n")
    assert r.finish() == 0
    assert "w" not in r.kinds()


def test_no_waiting_while_output_flows(ws: Path) -> None:
    src = "import time\nfor i in range(200):\n    print(i, flush=True)\n    time.sleep(0.01)\n"
    r = run_py(ws, src)
    assert r.finish() == 0
    assert "w" not in r.kinds()


def test_no_waiting_while_input_is_unread(ws: Path) -> None:
    r = run_py(ws, "import time, sys\ntime.sleep(1.5)\nprint(sys.stdin.readline().strip())\n")
    r.send(frame("I", b"pending\n"))
    assert r.finish() == 0
    assert r.output() == b"pending\n"
    assert "w" not in r.kinds()


# ---------- tty ----------


def test_tty_isatty_and_one_stream(ws: Path) -> None:
    src = (
        "import os, sys\n"
        "print([os.isatty(i) for i in range(3)])\n"
        "print('to err', file=sys.stderr)\n"
    )
    r = run_py(ws, src, tty=(100, 30))
    assert r.finish() == 0
    assert r.output() == b"[True, True, True]\r\nto err\r\n"
    assert r.output("e") == b""


def test_tty_ctrl_c_interrupts(ws: Path) -> None:
    r = run_py(ws, "import time\nprint('ready', flush=True)\ntime.sleep(30)\n", tty=(80, 24))
    r.wait_output(b"ready")
    r.send(frame("I", b"\x03"))
    assert r.finish() == 130
    assert r.last("x").fields()["signal"] == "2"


def test_tty_resize_changes_the_size(ws: Path) -> None:
    r = Runner.start(ws, request("stty size; read x; stty size", tty=(80, 24)))
    r.wait_output(b"24 80")
    r.send(frame("Z", b"cols=132 rows=40"))
    r.send(frame("I", b"\r"))
    assert r.finish() == 0
    assert r.output().replace(b"\r\n", b"\n") == b"24 80\n\n40 132\n"


def test_tty_resize_reaches_the_program_as_sigwinch(ws: Path) -> None:
    src = (
        "import os, signal, sys\n"
        "def show(*a):\n"
        "    print('size', *os.get_terminal_size(), flush=True)\n"
        "signal.signal(signal.SIGWINCH, show)\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    r = run_py(ws, src, tty=(80, 24))
    r.wait_output(b"ready")
    r.send(frame("Z", b"cols=90 rows=20"))
    r.wait_output(b"size 90 20")
    r.send(frame("I", b"\r"))
    assert r.finish() == 0


@pytest.mark.skipif(NODE is None, reason="node is not installed on this host")
def test_tty_ctrl_d_ends_node_event_loop_stdin(ws: Path) -> None:
    # Node reads its terminal through epoll: the end of input must wake it (under
    # gVisor that took a patch to its pty's poll readiness: cluster/build-gvisor.sh).
    src = (
        "process.stdin.on('data', (d) => process.stdout.write('got ' + d.length + '\\n'));\n"
        "process.stdin.on('end', () => { console.log('the end'); process.exit(0); });\n"
        "console.log('ready');\n"
    )
    r = run_node(ws, src, tty=(80, 24))
    r.wait_output(b"ready")
    r.send(frame("I", b"ab\r"))
    r.wait_output(b"got 3")
    r.send(frame("I", b"\x04"))
    assert r.finish(timeout=15) == 0
    assert b"the end" in r.output()


@pytest.mark.skipif(NODE is None, reason="node is not installed on this host")
def test_tty_node_readline_close_exits_by_itself(ws: Path) -> None:
    src = (
        "const readline = require('readline');\n"
        "const rl = readline.createInterface({input: process.stdin, output: process.stdout});\n"
        "rl.question('name? ', (a) => { console.log('hi ' + a); rl.close(); });\n"
    )
    r = run_node(ws, src, tty=(80, 24))
    r.wait_output(b"name? ")
    r.send(frame("I", b"ann\r"))
    # No E: in a terminal rl.close() is enough for node to exit.
    assert r.finish(timeout=15) == 0
    assert b"hi ann" in r.output()


def test_tty_waiting_after_a_prompt(ws: Path) -> None:
    r = run_py(ws, "input('? ')\n", tty=(80, 24))
    r.wait_kind("w")
    r.send(frame("I", b"x\r"))
    assert r.finish() == 0


# ---------- limits ----------

# An unprivileged uid no other process on the host uses: RLIMIT_NPROC counts per uid.
NOBODY = 64711


@pytest.fixture
def shared_ws() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="icee-runner-"))
    d.chmod(0o777)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _tasks_of(uid: int) -> int:
    """Tasks (threads) the uid has already: RLIMIT_NPROC counts them all."""
    out = subprocess.run(["ps", "-e", "-L", "-o", "uid="], capture_output=True, text=True)
    return sum(1 for line in out.stdout.split() if line == str(uid))


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to an unprivileged uid needs root")
def test_output_past_the_cap_is_drained_and_dropped(ws: Path) -> None:
    # 3 MB over both streams, 100 kB relayed; the program is never blocked by the cap.
    flood = "head -c 1500000 /dev/zero | tr '\\0' o; head -c 1500000 /dev/zero | tr '\\0' e >&2"
    req = request(flood, limits=b"pids=64 output=100000")
    r = Runner.start(ws, req)
    assert r.finish(timeout=30) == 0
    relayed = sum(len(e.payload) for e in r.events if e.kind in "oe")
    assert relayed == 100000
    assert r.last("q").payload == b"result=completed"


def test_pids_limit_counts_the_runner_and_stops_a_fork_bomb(shared_ws: Path) -> None:
    # RLIMIT_NPROC does not bind root: run as an unprivileged uid, as in the pod.
    already = _tasks_of(NOBODY)
    src = (
        "import os, errno, sys, time\n"
        "kids = []\n"
        "while True:\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError as e:\n"
        "        print('fork failed', errno.errorcode[e.errno], 'after', len(kids), flush=True)\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "    kids.append(pid)\n"
    )
    req = request(f"exec {PY} main.py", files=[("main.py", src.encode())], pids=10 + already)
    r = Runner.start(shared_ws, req, user=NOBODY)
    assert r.finish(timeout=20) == 0
    # 10 tasks: the runner, the program and 8 children.
    assert r.output() == b"fork failed EAGAIN after 8\n"
    assert r.kinds().endswith("xq")


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to an unprivileged uid needs root")
def test_compile_leftovers_do_not_use_up_the_run_stages_tasks(shared_ws: Path) -> None:
    already = _tasks_of(NOBODY)
    compile_cmd = "sleep 30 & sleep 30 & sleep 30 & true"
    # The run stage needs two tasks besides the runner: its shell and ls.
    req = request("ls >/dev/null && echo ran", compile_cmd=compile_cmd, pids=5 + already)
    r = Runner.start(shared_ws, req, user=NOBODY)
    assert r.finish(timeout=20) == 0, r.stderr()
    assert r.output() == b"ran\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to an unprivileged uid needs root")
def test_shell_fork_bomb_is_contained(shared_ws: Path) -> None:
    # The program itself waits without forking: with the bomb holding every task, a
    # shell's own `sleep` could not start (dash then exits 2: "Cannot fork").
    src = (
        "import subprocess, time\n"
        "subprocess.Popen(['/bin/sh', '-c', 'bomb() { bomb | bomb & }; bomb'])\n"
        "time.sleep(1)\n"
        "print('survived', flush=True)\n"
    )
    req = request(f"exec {PY} main.py", files=[("main.py", src.encode())], pids=16)
    r = Runner.start(shared_ws, req, user=NOBODY)
    assert r.finish(timeout=30) == 0
    assert r.output().endswith(b"survived\n")
    assert r.last("q").payload == b"result=completed"


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to an unprivileged uid needs root")
def test_the_program_cannot_reach_the_runners_descriptors(shared_ws: Path) -> None:
    r = Runner.start(shared_ws, request("ls /proc/$PPID/fd; echo rc=$?"), user=NOBODY)
    assert r.finish() == 0
    # Non-dumpable: its /proc entries belong to root, so its own uid cannot open them.
    assert b"Permission denied" in r.output("e")
    assert r.output().endswith(b"rc=2\n")


# ---------- malformed input ----------

MALFORMED = [
    b"R 4\ntrue\nG 0\n\nX 0\n\n",  # unknown type after G
    b"F 3\nabc",  # ends inside a frame
    b"G 0\n\n",  # G without R
    b"I 1\nx\n",  # input before G
    b"R 4\ntrue\nR 4\ntrue\n",  # R twice
    b"R 4\ntrue",  # no trailing newline, then EOF
    b"R 4\ntrueXG 0\n\n",  # wrong trailer
    b"R  4\ntrue\n",  # two spaces
    b"R -4\ntrue\n",
    b"R 99999999\n",
    b"R 65537\n",  # over the command limit
    b"rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr\n",
    b"R 4\ntrue\nL 8\npids=abc\nG 0\n\n",
    b"R 4\ntrue\nL 15\npids=8 output=0\nG 0\n\n",
    b"R 4\ntrue\nL 16\npids=8 output=1x\nG 0\n\n",
    b"R 4\ntrue\nL 15\npids=8 outpux=5\nG 0\n\n",
    b"R 4\ntrue\nL 7\npids=8 \nG 0\n\n",
    b"R 4\ntrue\nT 7\ncols=80\nG 0\n\n",
    b"R 4\ntrue\nG 0\n\nS 7\nSIGSTOP\n",
    b"R 4\ntrue\nG 0\n\nF 2\na\0\n",  # request frame after G
    b"",  # nothing at all
]


@pytest.mark.parametrize("data", MALFORMED)
def test_malformed_input_exits_125_with_a_diagnostic(ws: Path, data: bytes) -> None:
    req = data.replace(b"R 4\ntrue\nG", b"R 7\nexec sleep 5\nG") if b"S 7" in data else data
    r = Runner.start(ws, req)
    r.close_stdin()
    code = r.finish(timeout=10)
    err = r.stderr()
    assert code == 125, (code, err)
    assert err.startswith("icee-runner: "), err
    assert "q" not in r.kinds()


def test_fuzzed_frames_never_crash_the_runner(ws: Path) -> None:
    rng = random.Random(1234)
    alphabet = b"FCRLTGIESZxq0123456789 \n\0=abc"
    for i in range(60):
        base = request("true") if rng.random() < 0.5 else b""
        data = bytearray(base)
        for _ in range(rng.randint(1, 8)):
            pos = rng.randint(0, len(data))
            data[pos:pos] = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        d = ws / str(i)
        d.mkdir()
        r = Runner.start(d, bytes(data))
        r.close_stdin()
        code = r.finish(timeout=10)
        # Never a crash: a protocol error or a refused file (125, with a diagnostic),
        # or stages that ran (whatever command the mutation made) and ended with q.
        assert code >= 0, (code, bytes(data))
        if code == 125 and "q" not in r.kinds():
            assert r.stderr().startswith("icee-runner: "), bytes(data)
        else:
            assert r.kinds().endswith("q"), (code, r.kinds(), bytes(data))
