"""The in-sandbox runner's figures, measured on the host (no cluster).

- prompt -> `w`: a program prints a prompt and blocks reading stdin; the time
  from the frame that carried the prompt to the `w` frame, per language, in pipe
  and tty mode.
- last output -> `q`: a program prints a line and exits; the time from that
  output frame to the `q` frame (an upper bound of program exit -> `q`).
- the runner's own cost: binary size, peak RSS (VmHWM) and CPU time while a
  program waits for input for a few seconds (sampling /proc every 40 ms).

With --runsc PATH the runner runs under gVisor (`runsc do`, the host's root
filesystem), as in a sandbox pod; without it, directly on the host, in a PID
namespace of its own (`unshare`), so /proc holds the session only, as in the pod.

Usage: python bench/runner.py [--runs 5] [--runsc PATH]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))
from runner_harness import RUNNER, Runner, build_runner, frame, request

PROMPTS: dict[str, tuple[str, str, str | None]] = {
    # language: (file, source, compile command); run command follows the file name
    "python": ("main.py", "name = input('name? ')\nprint('hi', name)\n", None),
    "javascript": (
        "main.js",
        "const rl = require('readline').createInterface({input: process.stdin});\n"
        "process.stdout.write('name? ');\n"
        "rl.on('line', (l) => { console.log('hi ' + l); rl.close(); });\n",
        None,
    ),
    "java": (
        "Main.java",
        "public class Main { public static void main(String[] a) throws Exception {\n"
        '  System.out.print("name? "); System.out.flush();\n'
        "  var r = new java.io.BufferedReader(new java.io.InputStreamReader(System.in));\n"
        '  System.out.println("hi " + r.readLine()); } }\n',
        None,
    ),
    "cpp": (
        "main.cpp",
        "#include <iostream>\n#include <string>\n"
        'int main() { std::string s; std::cout << "name? " << std::flush;\n'
        '  std::getline(std::cin, s); std::cout << "hi " << s << std::endl; }\n',
        "g++ -O1 -o main main.cpp",
    ),
    "ruby": ("main.rb", "print 'name? '\n$stdout.flush\nn = gets\nputs \"hi #{n}\"\n", None),
}
RUN = {
    "python": "exec python3 main.py",
    "javascript": "exec node main.js",
    "java": "exec java -XX:+UseSerialGC -XX:TieredStopAtLevel=1 Main.java",
    "cpp": "exec ./main",
    "ruby": "exec ruby main.rb",
}
NEEDS = {"python": "python3", "javascript": "node", "java": "java", "cpp": "g++", "ruby": "ruby"}


def wrapper(runsc: str | None, root: Path) -> list[str]:
    if runsc:
        return [runsc, "--network=none", "--platform=systrap", "--root", str(root), "do"]
    return ["unshare", "--pid", "--fork", "--mount-proc"]


def prompt_to_w(lang: str, tty: bool, wrap: list[str]) -> float:
    name, src, compile_cmd = PROMPTS[lang]
    with tempfile.TemporaryDirectory() as d:
        req = request(
            RUN[lang],
            files=[(name, src.encode())],
            compile_cmd=compile_cmd,
            tty=(80, 24) if tty else None,
        )
        r = Runner.start(Path(d), req, wrapper=wrap)
        try:
            prompt = r.wait_output(b"name? ", timeout=60)
            w = r.wait_kind("w", after=prompt.at, timeout=10)
            # (pipe mode: E too, node waits for the end of its input)
            r.send(frame("I", b"x\r") if tty else frame("I", b"x\n") + frame("E"))
            r.wait_kind("q", timeout=30)
        finally:
            r.finish(timeout=30)
        return (w.at - prompt.at) * 1000


def output_to_q(wrap: list[str], tty: bool) -> float:
    with tempfile.TemporaryDirectory() as d:
        r = Runner.start(Path(d), request("echo bye", tty=(80, 24) if tty else None), wrapper=wrap)
        r.finish(timeout=30)
        return (r.last("q").at - r.last("o").at) * 1000


def runner_cost(wrap: list[str], seconds: float) -> tuple[int, float]:
    """Peak RSS (KiB) and CPU ms per second of the runner while a program waits."""
    with tempfile.TemporaryDirectory() as d:
        r = Runner.start(Path(d), request("read x"), wrapper=wrap)
        r.wait_kind("w", timeout=10)
        pid = r.proc.pid
        if wrap:  # unshare --fork: the runner is its child
            pid = int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])

        def cpu() -> int:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return int(f[11]) + int(f[12])  # utime, stime in 1/100 s

        c0, t0 = cpu(), time.monotonic()
        time.sleep(seconds)
        c1, t1 = cpu(), time.monotonic()
        hwm = next(
            int(line.split()[1])
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("VmHWM:")
        )
        r.send(frame("I", b"\n"))
        r.finish()
        return hwm, (c1 - c0) * 10 / (t1 - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--runsc", help="run under gVisor: path to runsc")
    a = ap.parse_args()
    build_runner()
    root = Path(tempfile.mkdtemp(prefix="runsc-"))
    wrap = wrapper(a.runsc, root)
    where = "gVisor (runsc do)" if a.runsc else "host, own PID namespace"
    print(f"icee-runner {RUNNER.stat().st_size // 1024} KiB static; measured on {where}")
    print(f"{'language':<12}{'mode':<6}{'prompt->w p50':>15}{'max':>8}   (target <= 250 ms)")
    for lang in PROMPTS:
        if not shutil.which(NEEDS[lang]):
            print(f"{lang:<12}-     not installed on this host")
            continue
        for tty in (False, True):
            ms = [prompt_to_w(lang, tty, wrap) for _ in range(a.runs)]
            mode = "tty" if tty else "pipe"
            print(f"{lang:<12}{mode:<6}{statistics.median(ms):>13.0f}ms{max(ms):>6.0f}ms")
    for tty in (False, True):
        q = [output_to_q(wrap, tty) for _ in range(a.runs * 2)]
        mode = "tty" if tty else "pipe"
        print(f"last output -> q ({mode}): p50 {statistics.median(q):.1f} ms, max {max(q):.1f} ms")
    if not a.runsc:
        hwm, cpu = runner_cost(wrap, 5.0)
        print(f"runner while the program waits: peak RSS {hwm} KiB, CPU {cpu:.1f} ms/s")
        n = sum(1 for p in Path("/proc").iterdir() if p.name.isdigit())
        hwm, cpu = runner_cost([], 5.0)
        print(f"  the same seeing the host's /proc ({n} processes): CPU {cpu:.1f} ms/s")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
