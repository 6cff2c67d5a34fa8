"""Drive the built icee-runner binary on the host: frames in, timed events out.

The tests and bench/runner.py use it; no cluster is involved. The runner is
built with `make -C runner` (a no-op when it is up to date).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from icee_core.runner_protocol import frame

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "runner" / "build" / "icee-runner"


def build_runner() -> Path:
    """Build runner/build/icee-runner, or raise saying why it could not be."""
    proc = subprocess.run(
        ["make", "-s", "-C", str(REPO / "runner")], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0 or not RUNNER.is_file():
        raise RuntimeError(f"building the runner failed (make -C runner):\n{proc.stderr}")
    return RUNNER


def file_frame(name: str | bytes, content: bytes) -> bytes:
    raw = name.encode() if isinstance(name, str) else name
    return frame("F", raw + b"\0" + content)


def request(
    run: str,
    files: Sequence[tuple[str, bytes]] = (),
    compile_cmd: str | None = None,
    tty: tuple[int, int] | None = None,
    pids: int | None = None,
    limits: bytes | None = None,
) -> bytes:
    """The request frames; ``limits`` is the whole L payload (else ``pids=<pids>``)."""
    out = b"".join(file_frame(n, c) for n, c in files)
    if compile_cmd is not None:
        out += frame("C", compile_cmd.encode())
    out += frame("R", run.encode())
    if limits is None and pids is not None:
        limits = b"pids=%d" % pids
    if limits is not None:
        out += frame("L", limits)
    if tty is not None:
        out += frame("T", b"cols=%d rows=%d" % tty)
    return out + frame("G")


@dataclass
class Event:
    kind: str
    payload: bytes
    at: float  # time.monotonic() when it was read

    def fields(self) -> dict[str, str]:
        return dict(kv.split("=", 1) for kv in self.payload.decode().split())


@dataclass
class Runner:
    """One runner process; a thread decodes its stdout into events."""

    proc: subprocess.Popen[bytes]
    events: list[Event] = field(default_factory=list)
    raw: bytearray = field(default_factory=bytearray)
    error: str | None = None
    _stderr: str = ""
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None

    @classmethod
    def start(
        cls,
        workspace: Path,
        req: bytes | None = None,
        user: int | None = None,
        argv: Sequence[str] = (),
        wrapper: Sequence[str] = (),
    ) -> Runner:
        """Start the runner (under wrapper, e.g. runsc do, if given) and send req.

        ICEE_RUNNER_WRAPPER (e.g. "runsc --network=none do") wraps every runner
        started without an explicit wrapper: the same tests, inside gVisor.
        """
        if not wrapper and user is None:
            wrapper = os.environ.get("ICEE_RUNNER_WRAPPER", "").split()
        proc = subprocess.Popen(
            [*wrapper, str(RUNNER), "--workspace", str(workspace), *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            user=user,
            group=user,
            extra_groups=[] if user is not None else None,
        )
        r = cls(proc)
        r._thread = threading.Thread(target=r._read, daemon=True)
        r._thread.start()
        if req is not None:
            r.send(req)
        return r

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        buf = b""
        while True:
            chunk = os.read(fd, 65536)
            now = time.monotonic()
            if not chunk:
                break
            with self._cond:
                self.raw += chunk
            buf += chunk
            while True:
                nl = buf.find(b"\n")
                if nl < 0:
                    break
                kind, _, size = buf[:nl].decode("ascii", "replace").partition(" ")
                if len(kind) != 1 or not size.isdigit():
                    self.error = f"bad header {buf[:nl]!r}"
                    break
                n = int(size)
                if len(buf) < nl + 1 + n + 1:
                    break
                payload = buf[nl + 1 : nl + 1 + n]
                if buf[nl + 1 + n : nl + 2 + n] != b"\n":
                    self.error = f"frame {kind} without its trailing newline"
                with self._cond:
                    self.events.append(Event(kind, payload, now))
                    self._cond.notify_all()
                buf = buf[nl + 2 + n :]
        with self._cond:
            if buf and self.error is None:
                self.error = f"trailing bytes {buf[:64]!r}"
            self._cond.notify_all()

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def wait_for(self, pred: Callable[[Event], bool], timeout: float = 10.0) -> Event:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for ev in self.events[seen:]:
                    if pred(ev):
                        return ev
                seen = len(self.events)
                left = deadline - time.monotonic()
                if left <= 0 or (self._thread is not None and not self._thread.is_alive()):
                    raise AssertionError(f"no such event within {timeout} s; got {self.events}")
                self._cond.wait(left)

    def wait_output(self, needle: bytes, timeout: float = 10.0, kind: str = "o") -> Event:
        """Wait until the output so far contains needle (output arrives in pieces)."""
        acc = bytearray()

        def pred(e: Event) -> bool:
            if e.kind == kind:
                acc.extend(e.payload)
            return needle in acc

        return self.wait_for(pred, timeout)

    def wait_kind(self, kind: str, timeout: float = 10.0, after: float = 0.0) -> Event:
        return self.wait_for(lambda e: e.kind == kind and e.at >= after, timeout)

    def finish(self, timeout: float = 20.0) -> int:
        """Wait for the runner to exit; close its pipes; return its exit status."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            if self._thread is not None:
                self._thread.join(5)
            assert self.proc.stdin is not None
            assert self.proc.stderr is not None
            assert self.proc.stdout is not None
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
            self._stderr = self.proc.stderr.read().decode(errors="replace")
            self.proc.stderr.close()
            self.proc.stdout.close()
        return code

    def stderr(self) -> str:
        """The runner's diagnostics (after finish())."""
        return self._stderr

    def kinds(self) -> str:
        return "".join(e.kind for e in self.events)

    def output(self, kind: str = "o") -> bytes:
        return b"".join(e.payload for e in self.events if e.kind == kind)

    def last(self, kind: str) -> Event:
        found = [e for e in self.events if e.kind == kind]
        assert found, f"no {kind!r} frame in {self.kinds()}"
        return found[-1]
