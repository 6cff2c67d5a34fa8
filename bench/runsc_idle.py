"""CPU of N live gVisor sandboxes on the host, with and without a runsc flag (no cluster).

    python bench/runsc_idle.py --runsc PATH --sandboxes 25 --flag=--systrap-disable-fast-path
    python bench/runsc_idle.py --runsc PATH --runner OLD --runner NEW   # two runner builds

Starts N ``runsc do`` sandboxes (the host's root filesystem, ``--network=none
--platform=systrap`` as in the cluster), each running a Python echo loop that the
bench feeds a line every ``--interval`` seconds (an interactive session that is
mostly waiting), then samples their CPU (``cpu_by_process``: sentries, gofers)
for ``--seconds``. Runs the same with the extra flag, interleaved A, B, A, B, so
both see the same machine. With ``--runner`` (twice: A and B) the echo program runs
under those ``icee-runner`` builds instead, as in a sandbox pod (the request on
stdin, input as ``I`` frames), with the default flags. Reports CPU per sandbox and
echo round trips beside each other. Figures, not pass/fail: the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import select
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from _common import load_average, percentile
from cpu_by_process import Sampler
from icee_core.runner_protocol import frame

ECHO = "import sys\nfor line in sys.stdin:\n    print(line, end='', flush=True)\n"


def read_until(fd: int, needle: bytes, within: float) -> bool:
    """Read from ``fd`` until ``needle`` came (raw bytes: frames are fine here)."""
    got = b""
    deadline = time.monotonic() + within
    while needle not in got:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return False
        chunk = os.read(fd, 65536)
        if not chunk:
            return False
        got = got[-len(needle) :] + chunk
    return True


def descendants(roots: set[int]) -> set[int]:
    """``roots`` and every process below them (runsc do -> gofer, sandbox -> stubs)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except OSError:
                continue
    found = set(roots)
    while True:
        more = {pid for pid, ppid in parent.items() if ppid in found} - found
        if not more:
            return found
        found |= more


def run(
    runsc: str, flags: list[str], count: int, interval: float, seconds: float,
    runner: str | None = None,
) -> str:  # fmt: skip
    with tempfile.TemporaryDirectory() as root:
        argv = [runsc, "--network=none", "--platform=systrap", "--root", root, *flags, "do"]
        program = ["python3", "-u", "-c", ECHO]
        if runner is not None:
            program = [runner, "--workspace", root]
        procs = [
            subprocess.Popen(
                [*argv, *program],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                cwd="/tmp",
            )
            for _ in range(count)
        ]
        rtts: list[float] = []
        stop = threading.Event()

        def feed(p: subprocess.Popen[bytes]) -> None:
            assert p.stdin is not None
            assert p.stdout is not None
            if runner is not None:
                source = frame("F", b"main.py\0" + ECHO.encode())
                p.stdin.write(source + frame("R", b"exec python3 -u main.py") + frame("G"))
            i = 0
            while not stop.is_set():
                t0 = time.perf_counter()
                line = f"line {i}\n".encode()
                p.stdin.write(frame("I", line) if runner is not None else line)
                p.stdin.flush()
                if not read_until(p.stdout.fileno(), line, 30):
                    break
                if i:  # the first line waits for the sandbox to boot
                    rtts.append(time.perf_counter() - t0)
                i += 1
                stop.wait(interval)

        threads = [threading.Thread(target=feed, args=(p,), daemon=True) for p in procs]
        for t in threads:
            t.start()
        time.sleep(max(10.0, count * 0.4))  # all booted and echoing
        rtts.clear()
        mine = descendants({p.pid for p in procs})
        sampler = Sampler({pid: "these sandboxes" for pid in mine}, interval=1.0).start()
        time.sleep(seconds)
        usage = sampler.stop()
        stop.set()
        for p in procs:
            assert p.stdin is not None
            p.stdin.close()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for t in threads:
            t.join(5)
    sandbox = usage.by_group["these sandboxes"]
    per = sandbox / usage.seconds / count * 100
    ms = [r * 1000 for r in rtts]
    return (
        f"{runner or ' '.join(flags) or 'default':<34} {count} sandboxes: {per:.2f}% of a core "
        "each "
        f"(runsc processes {sandbox / usage.seconds * 100:.0f}% in all); echo p50/p99 "
        f"{statistics.median(ms):.1f}/{percentile(ms, 99):.1f} ms (n={len(ms)}); "
        f"load {usage.load[1]:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--runsc", required=True)
    parser.add_argument("--flag", action="append", default=[], help="the flag to compare")
    parser.add_argument("--runner", action="append", default=[], help="icee-runner builds")
    parser.add_argument("--sandboxes", type=int, default=25)
    parser.add_argument("--interval", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("runsc do needs root")
    print(f"runsc idle cost ({load_average()})")
    for _ in range(args.rounds):
        if args.runner:
            for runner in args.runner:
                line = run(args.runsc, [], args.sandboxes, args.interval, args.seconds, runner)
                print(line, flush=True)
            continue
        for flags in ([], args.flag):
            print(run(args.runsc, flags, args.sandboxes, args.interval, args.seconds), flush=True)


if __name__ == "__main__":
    main()
