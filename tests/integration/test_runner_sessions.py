"""The in-sandbox runner through the real api, operator and gVisor (issue 10).

For each language: `waiting` after a prompt and `running` after the input, no
`waiting` during a CPU loop, a tty session (isatty, Ctrl-C, resize), plus the
Node readline program that exits by itself on a terminal, usage per stage in the
final state and the CodeSession status, and stdout/stderr kept apart in a replay.
Each test runs its sessions at once (one per language), so a test costs about as
long as its slowest language.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from conftest import KUBECTL, kubectl
from icee_api.session.run_request import build_request
from icee_core import names
from icee_core import runner_protocol as rp
from icee_core.languages import load_registry
from icee_core.models import CodeSessionSpec

if TYPE_CHECKING:
    from conftest import ApiServer, Transcript

pytestmark = pytest.mark.cluster

LANGUAGES = ("python", "javascript", "java", "cpp", "ruby")
MiB = 1024 * 1024
WITHIN = 120.0


async def each_language(
    scenario: Callable[[str], Awaitable[None]], languages: tuple[str, ...] = LANGUAGES
) -> None:
    """Run ``scenario`` for every language at once; fail naming each language that failed."""
    results = await asyncio.gather(*(scenario(lang) for lang in languages), return_exceptions=True)
    failures = [
        f"{lang}: {type(res).__name__}: {res}"
        for lang, res in zip(languages, results, strict=True)
        if isinstance(res, BaseException)
    ]
    assert not failures, "\n".join(failures)


def state_changes(t: Transcript) -> list[str]:
    return [m["state"] for m in t.of("state")]


# -- waiting ---------------------------------------------------------------------------

PROMPT_THEN_READ = {
    "python": "name = input('name? ')\nprint('hi', name)\n",
    "javascript": (
        "process.stdout.write('name? ');\n"
        "process.stdin.once('data', (d) => { console.log('hi', String(d).trim());"
        " process.exit(0); });\n"
    ),
    "java": (
        "import java.util.Scanner;\npublic class Main {\n"
        "  public static void main(String[] a) {\n"
        '    System.out.print("name? "); System.out.flush();\n'
        '    System.out.println("hi " + new Scanner(System.in).nextLine());\n  }\n}\n'
    ),
    "cpp": (
        "#include <iostream>\n#include <string>\nint main() {\n"
        '  std::string n; std::cout << "name? " << std::flush;\n'
        '  std::getline(std::cin, n); std::cout << "hi " << n << std::endl;\n}\n'
    ),
    "ruby": "print 'name? '\nname = gets.chomp\nputs \"hi #{name}\"\n",
}


async def test_prompt_then_read_is_waiting_then_running(api: ApiServer) -> None:
    async def scenario(language: str) -> None:
        async with api.live(PROMPT_THEN_READ[language], language) as s:
            await s.until_stdout("name? ", WITHIN)
            await s.until_state("waiting", 30)
            await s.input("Ada\n")
            await s.until_state("running", 30)
            t = await s.finish(WITHIN)
        assert "hi Ada" in t.stdout, t.messages
        assert (t.final["state"], t.final["reason"]) == ("finished", "Completed"), t.final
        # waiting came after the prompt, running after the input, nothing in between
        changes = state_changes(t)
        assert changes[changes.index("waiting") + 1] == "running", changes

    await each_language(scenario)


CPU_LOOP = {
    "python": (
        "import time\nend = time.time() + 3\nwhile time.time() < end:\n    pass\nprint('done')\n"
    ),
    "javascript": (
        "const end = Date.now() + 3000;\nwhile (Date.now() < end) {}\nconsole.log('done');\n"
    ),
    "java": (
        "public class Main {\n  public static void main(String[] a) {\n"
        "    long end = System.currentTimeMillis() + 3000; long n = 0;\n"
        "    while (System.currentTimeMillis() < end) n++;\n"
        '    System.out.println("done");\n  }\n}\n'
    ),
    "cpp": (
        "#include <chrono>\n#include <iostream>\nint main() {\n"
        "  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(3);\n"
        "  volatile long n = 0; while (std::chrono::steady_clock::now() < end) n++;\n"
        '  std::cout << "done" << std::endl;\n}\n'
    ),
    "ruby": "t = Time.now + 3\nn = 0\nn += 1 while Time.now < t\nputs 'done'\n",
}


async def test_cpu_loop_is_never_waiting(api: ApiServer) -> None:
    async def scenario(language: str) -> None:
        _, t = await _run(api, CPU_LOOP[language], language)
        assert t.stdout == "done\n", t.messages
        assert "waiting" not in state_changes(t), state_changes(t)
        assert t.final["reason"] == "Completed", t.final

    await each_language(scenario)


async def _run(api: ApiServer, code: str, language: str, **extra: Any) -> tuple[str, Transcript]:
    """A session with no input, to its end: (session id, transcript)."""
    session_id = await api.create(code, language, **extra)
    async with api.connect(session_id) as s:
        return session_id, await s.finish(WITHIN)


# -- tty -------------------------------------------------------------------------------

# Each prints "tty yes" when stdin and stdout are terminals, then "size C R" now and
# after every SIGWINCH, and "interrupted" on SIGINT (then exits 0).
TTY_PROGRAMS = {
    "python": (
        "import os, signal, sys, time\n"
        "print('tty', 'yes' if sys.stdin.isatty() and sys.stdout.isatty() else 'no')\n"
        "def size(*_):\n    print('size', *os.get_terminal_size(), flush=True)\n"
        "signal.signal(signal.SIGWINCH, size)\nsize()\n"
        "try:\n    while True:\n        time.sleep(1)\n"
        "except KeyboardInterrupt:\n    print('interrupted')\n"
    ),
    "javascript": (
        "const tty = process.stdin.isTTY && process.stdout.isTTY;\n"
        "console.log('tty', tty ? 'yes' : 'no');\n"
        "const size = () => console.log('size', process.stdout.columns, process.stdout.rows);\n"
        "process.stdout.on('resize', size);\nsize();\n"
        "process.on('SIGINT', () => { console.log('interrupted'); process.exit(0); });\n"
        "setInterval(() => {}, 1000);\n"
    ),
    "java": (
        "public class Main {\n  public static void main(String[] a) throws Exception {\n"
        '    System.out.println("tty " + (System.console() != null ? "yes" : "no"));\n'
        "    Runtime.getRuntime().addShutdownHook(new Thread(() ->"
        ' System.out.println("interrupted")));\n'
        '    System.out.println("size ?");\n'
        "    Thread.sleep(600000);\n  }\n}\n"
    ),
    "cpp": (
        "#include <csignal>\n#include <cstdio>\n#include <sys/ioctl.h>\n#include <unistd.h>\n"
        "volatile sig_atomic_t winch = 1, intr = 0;\n"
        "int main() {\n"
        '  std::printf("tty %s\\n", isatty(0) && isatty(1) ? "yes" : "no");\n'
        "  std::signal(SIGWINCH, [](int) { winch = 1; });\n"
        "  std::signal(SIGINT, [](int) { intr = 1; });\n"
        "  while (!intr) {\n"
        "    if (winch) { winch = 0; winsize w{}; ioctl(1, TIOCGWINSZ, &w);\n"
        '      std::printf("size %d %d\\n", w.ws_col, w.ws_row); std::fflush(stdout); }\n'
        "    pause();\n  }\n"
        '  std::printf("interrupted\\n");\n}\n'
    ),
    "ruby": (
        "require 'io/console'\n"
        "puts \"tty #{$stdin.tty? && $stdout.tty? ? 'yes' : 'no'}\"\n"
        'def size = puts("size #{$stdout.winsize[1]} #{$stdout.winsize[0]}")\n'
        "Signal.trap('WINCH') { size }\nsize\n"
        "begin\n  sleep\nrescue Interrupt\n  puts 'interrupted'\nend\n"
    ),
}


async def test_tty_session_isatty_ctrl_c_and_resize(api: ApiServer) -> None:
    async def scenario(language: str) -> None:
        code = TTY_PROGRAMS[language]
        async with api.live(code, language, tty=True, cols=80, rows=24) as s:
            await s.until_stdout("tty yes", WITHIN)
            if language != "java":  # Java has no terminal size or SIGWINCH API
                await s.until_stdout("size 80 24", 30)
                await s.send({"type": "resize", "cols": 100, "rows": 30})
                await s.until_stdout("size 100 30", 30)
            else:
                await s.until_stdout("size ?", 30)
            await s.input("\x03")  # Ctrl-C typed in the terminal
            await s.until_stdout("interrupted", 30)
            t = await s.finish(WITHIN)
        assert t.stderr == "", "a terminal has one stream"
        assert "\r\n" in t.stdout, "the terminal's line discipline adds \\r"
        assert t.final["state"] == "finished", t.final

    await each_language(scenario)


async def test_signal_message_interrupts_a_pipe_session(api: ApiServer) -> None:
    code = (
        "import time\nprint('up', flush=True)\n"
        "try:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    print('interrupted')\n"
    )
    async with api.live(code) as s:
        await s.until_stdout("up\n")
        await s.send({"type": "signal", "signal": "SIGINT"})
        t = await s.finish(30)
    assert t.stdout == "up\ninterrupted\n"
    assert (t.final["state"], t.final["reason"], t.final["exitCode"]) == (
        "finished",
        "Completed",
        0,
    )


NODE_READLINE = (
    "const readline = require('node:readline');\n"
    "const rl = readline.createInterface({ input: process.stdin, output: process.stdout });\n"
    "rl.question('name? ', (name) => { console.log(`hi ${name}`); rl.close(); });\n"
)


async def test_node_readline_close_exits_by_itself_on_a_terminal(api: ApiServer) -> None:
    async with api.live(NODE_READLINE, "javascript", tty=True) as s:
        await s.until_stdout("name? ", WITHIN)
        await s.input("Ada\r")  # Enter on a terminal
        # Well before the idle timeout (30 s): the program ended by itself.
        t = await s.finish(15)
    assert "hi Ada" in t.stdout
    assert (t.final["state"], t.final["reason"]) == ("finished", "Completed"), t.final


# -- usage ------------------------------------------------------------------------------

BUSY_SECOND = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1:\n    pass\n"
ALLOCATE_100_MB = "b = bytearray(100 * 1024 * 1024)\nb[::4096] = b'x' * len(b[::4096])\n"


async def test_usage_is_reported_and_plausible(api: ApiServer) -> None:
    (sid, busy), (_, big), (_, compiled) = await asyncio.gather(
        _run(api, BUSY_SECOND, "python"),
        _run(api, ALLOCATE_100_MB, "python"),
        _run(api, CPU_LOOP["cpp"].replace("seconds(3)", "seconds(0)"), "cpp"),
    )
    run = busy.final["usage"]["run"]
    # At least the second the program spun (by the same clock: the sandbox kernel's
    # accounting), and no more CPU than wall time for one thread. Under a loaded host
    # gVisor's accounting grows (the interpreter's start-up alone took seconds of
    # "CPU" at load 20), so the upper bound is the wall time, not 1 s.
    assert run["cpuMillis"] >= 950, run
    assert run["cpuMillis"] <= run["wallMillis"] + 50, run
    assert run["exitCode"] == 0
    peak = big.final["usage"]["run"]["memoryBytes"]
    assert 95 * MiB <= peak <= 180 * MiB, peak
    assert set(compiled.final["usage"]) == {"compile", "run"}, compiled.final
    assert compiled.final["usage"]["compile"]["cpuMillis"] > 50
    # The operator reads the same reports into the CodeSession's status.
    for _ in range(60):
        obj = json.loads(kubectl("get", "codesession", sid, "-n", api.namespace, "-o", "json"))
        if (obj.get("status") or {}).get("phase") in ("Finished", "Terminated"):
            break
        await asyncio.sleep(0.5)
    assert obj["status"]["usage"]["run"] == run, obj["status"]


# -- replay ------------------------------------------------------------------------------

BOTH_STREAMS = "import sys\nprint('out 1')\nprint('err 1', file=sys.stderr)\nprint('out 2')\n"


async def test_replay_keeps_stdout_and_stderr_apart(api: ApiServer) -> None:
    """The program ran (attached by hand, as the api would); a client coming after reads
    the pod log, whose runner frames keep the streams apart."""
    session_id = await api.create(BOTH_STREAMS)
    spec = CodeSessionSpec.model_validate(
        json.loads(kubectl("get", "codesession", session_id, "-n", api.namespace, "-o", "json"))[
            "spec"
        ]
    )
    request = rp.request(build_request(spec, load_registry().get("python")))
    # Lazy start: mark the client connected, as the api does when a WebSocket comes.
    start = {"spec": {"start": {"at": datetime.now(UTC).isoformat().replace("+00:00", "Z")}}}
    kubectl("patch", "codesession", session_id, "-n", api.namespace, "--type=merge",
            "-p", json.dumps(start))  # fmt: skip
    pod = names.pod_name(session_id)
    for _ in range(120):
        phase = kubectl(
            "get", "pod", pod, "-n", api.namespace, "-o", "jsonpath={.status.phase}", check=False
        )
        if phase == "Running":
            break
        await asyncio.sleep(0.5)
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, "attach", "-i", "-n", api.namespace, pod, "-c", names.CONTAINER_NAME,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    raw, _ = await asyncio.wait_for(proc.communicate(request), 60)
    assert rp.Decoder().feed(raw)[-1] == rp.Quit(rp.Result.COMPLETED)
    async with api.connect(session_id) as s:
        t: Transcript = await s.finish(60)
    assert (t.stdout, t.stderr) == ("out 1\nout 2\n", "err 1\n"), t.messages
    assert t.final["reason"] == "Completed"


# -- several files, Java's own class name ----------------------------------------------

TWO_FILES: dict[str, list[dict[str, Any]]] = {
    "python": [
        {"name": "main.py", "content": "from lib.greet import hello\nprint(hello('Ada'))\n"},
        {"name": "lib/greet.py", "content": "def hello(n):\n    return f'hello {n}'\n"},
    ],
    "javascript": [
        {"name": "main.js", "content": "console.log(require('./greet').hello('Ada'));\n"},
        {"name": "greet.js", "content": "exports.hello = (n) => `hello ${n}`;\n"},
    ],
    "java": [
        {
            "name": "App.java",
            "content": "public class App {\n  public static void main(String[] a) {\n"
            '    System.out.println(Greet.hello("Ada"));\n  }\n}\n',
            "main": True,
        },
        {
            "name": "Greet.java",
            "content": "class Greet {\n"
            '  static String hello(String n) { return "hello " + n; }\n}\n',
        },
    ],
    "cpp": [
        {
            "name": "main.cpp",
            "content": '#include <iostream>\n#include "greet.h"\n'
            'int main() { std::cout << hello("Ada") << std::endl; }\n',
        },
        {
            "name": "greet.h",
            "content": "#include <string>\n"
            'inline std::string hello(const std::string& n) { return "hello " + n; }\n',
        },
    ],
    "ruby": [
        {"name": "main.rb", "content": "require_relative 'greet'\nputs hello('Ada')\n"},
        {"name": "greet.rb", "content": 'def hello(n) = "hello #{n}"\n'},
    ],
}


async def test_two_file_program_imports_its_second_file(api: ApiServer) -> None:
    async def scenario(language: str) -> None:
        async with api.http() as http:
            r = await http.post(
                "/session", json={"language": language, "files": TWO_FILES[language]}
            )
            assert r.status_code == 201, r.text
        async with api.connect(r.json()["sessionId"]) as s:
            t = await s.finish(WITHIN)
        assert t.stdout == "hello Ada\n", t.messages
        assert t.final["reason"] == "Completed", t.final

    await each_language(scenario)


async def test_java_runs_whatever_its_public_class_is_called(api: ApiServer) -> None:
    code = (
        "import java.util.*;\n\npublic class Solution {\n"
        "    public static void main(String[] args) {\n"
        '        System.out.println("solved " + new Solution().getClass().getSimpleName());\n'
        "    }\n}\n"
    )
    _, t = await _run(api, code, "java")
    assert t.stdout == "solved Solution\n", t.messages
    assert t.final["reason"] == "Completed", t.final
