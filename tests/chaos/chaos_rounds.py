"""Rounds of chaos: sessions in every state, one component killed with SIGKILL
and brought back, and what became of each session.

Judged from outside: each CodeSession's status as the API server has it (one
list a second), what each client's WebSocket saw, and (in the test) the pods and
ConfigMaps left in the namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

FINAL_PHASES = frozenset({"Finished", "Terminated"})
FINAL_STATES = frozenset({"finished", "terminated"})
# How long a killed component stays down before it is started again.
DOWN_SECONDS = 2.0
# Every session reaches a final state within this long of the kill it lived through.
FINAL_WITHIN = 120.0
# Once its CodeSession is final, the api tells the client and closes its socket within
# this long (it waits up to half a second for the program's last output first).
CLOSED_WITHIN = 30.0

# The sessions' own idle timeout (a request may lower it): the ones left running
# end sooner after the last round, so the suite's tail is shorter; long enough
# that none idles out while its round's other sessions start on a loaded node.
IDLE_SECONDS = 25

HELLO = "print('hello')\n"
ECHO = "print('ready', flush=True)\nwhile True:\n    print('echo', input(), flush=True)\n"
PROGRAMS = {
    # Interactive: echoes each line it reads.
    "running-input": ECHO,
    # Busy without reading its input (the stdin the attach held is not its concern).
    "running-busy": "import time\nprint('ready', flush=True)\nwhile True:\n    time.sleep(0.2)\n",
    # Ends by itself one second after its input: while the component is down.
    "finishing": (
        "import time\nprint('ready', flush=True)\ninput()\nprint('going', flush=True)\n"
        "time.sleep(1)\nprint('done', flush=True)\n"
    ),
    # Connected at the moment of the kill: its pod is not running yet.
    "connecting": ECHO,
    # Created, never connected: no sandbox; ends ClientGone.
    "unconnected": "print('never runs')\n",
}


class Client:
    """One session's WebSocket, read to its end by a task of its own."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self.closed_at: float | None = None
        self.close_code: int | None = None
        # Still open when the test closed it: the server never ended the stream.
        self.closed_by_test = False
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, ws_url: str, session_id: str) -> Client:
        ws = await connect(f"{ws_url}/ws/session/{session_id}", max_size=None, open_timeout=30)
        return cls(ws)

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed, OSError):
            async for raw in self.ws:
                self.messages.append(json.loads(raw))
                self._changed.set()
        self.closed_at = time.monotonic()
        self.close_code = self.ws.close_code
        self._changed.set()

    @property
    def stdout(self) -> str:
        return "".join(m["data"] for m in self.messages if m["type"] == "stdout")

    @property
    def final(self) -> dict[str, Any] | None:
        states = [m for m in self.messages if m["type"] == "state"]
        if states and states[-1]["state"] in FINAL_STATES:
            return states[-1]
        return None

    @property
    def errors(self) -> list[str]:
        return [m["message"] for m in self.messages if m["type"] == "error"]

    async def until(self, check: Callable[[], bool], within: float) -> None:
        async with asyncio.timeout(within):
            while not check():
                if self.closed_at is not None:
                    raise AssertionError(f"socket closed ({self.close_code}): {self.messages}")
                self._changed.clear()
                await self._changed.wait()

    async def until_stdout(self, text: str, within: float = 60) -> None:
        await self.until(lambda: text in self.stdout, within)

    async def until_closed(self, within: float) -> None:
        async with asyncio.timeout(within):
            await asyncio.shield(self._task)

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def close(self) -> None:
        self.closed_by_test = self.closed_by_test or self.closed_at is None
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@dataclass
class Round:
    component: str
    number: int
    killed_at: float = 0.0
    back_after: float = 0.0  # kill -> the component answers again
    hello_after: float = 0.0  # kill -> a new session's output arrived
    open_clients: list[Tracked] = field(default_factory=list)  # sockets open at the kill
    sessions: list[Tracked] = field(default_factory=list)


@dataclass
class Tracked:
    id: str
    kind: str
    round: Round
    client: Client | None = None
    phase: str | None = None
    reason: str | None = None
    message: str | None = None
    final_at: float | None = None  # when its final status was first seen
    vanished: bool = False  # deleted before a final status was seen

    @property
    def final(self) -> bool:
        return self.phase in FINAL_PHASES

    @property
    def final_after(self) -> float | None:
        """Seconds from its round's kill to its final status (negative: ended before)."""
        if self.final_at is None or not self.round.killed_at:
            return None
        return self.final_at - self.round.killed_at


class Observer:
    """Follows every tracked session's CodeSession from outside: a kubectl watch
    sees each status it goes through, also one held for less than a second before
    the retention deletes it (restarted if it ends)."""

    def __init__(self, kubectl: list[str], namespace: str) -> None:
        self._argv = [
            *kubectl, "-n", namespace, "get", "codesessions",
            "--watch", "--output-watch-events", "-o", "json",
        ]  # fmt: skip
        self.tracked: dict[str, Tracked] = {}
        self._task: asyncio.Task[None] | None = None

    def track(self, session: Tracked) -> Tracked:
        self.tracked[session.id] = session
        session.round.sessions.append(session)
        return session

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            proc = await asyncio.create_subprocess_exec(
                *self._argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
            )
            try:
                assert proc.stdout is not None
                await self._follow(proc.stdout)
            finally:
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()
            await asyncio.sleep(0.5)

    async def _follow(self, out: asyncio.StreamReader) -> None:
        decoder = json.JSONDecoder()
        buffer = ""
        while chunk := await out.read(1 << 16):
            buffer += chunk.decode()
            while buffer.strip():
                buffer = buffer.lstrip()
                try:
                    event, end = decoder.raw_decode(buffer)
                except ValueError:
                    break  # an object cut in two: wait for the rest
                buffer = buffer[end:]
                self.observe(event.get("type", ""), event.get("object") or {}, time.monotonic())

    def observe(self, kind: str, body: dict[str, Any], now: float) -> None:
        session = self.tracked.get((body.get("metadata") or {}).get("name", ""))
        if session is None or session.final:
            return
        if kind == "DELETED":
            session.vanished = True
            return
        status = body.get("status") or {}
        if status.get("phase") in FINAL_PHASES:
            session.phase = status["phase"]
            session.reason = status.get("reason")
            session.message = status.get("message")
            session.final_at = now

    def pending(self) -> list[Tracked]:
        return [s for s in self.tracked.values() if not s.final and not s.vanished]


Killer = Callable[[], Awaitable[None]]


@dataclass
class Chaos:
    """What a round needs: the api to use now, the observer, and how to kill/restart."""

    api: Callable[[], Any]  # the current icee_it_conftest.ApiServer
    observer: Observer

    async def client(self, session_id: str) -> Client:
        return await Client.open(self.api().ws_url, session_id)

    async def create(self, code: str) -> str:
        timeouts = {"idleSeconds": IDLE_SECONDS}
        session_id: str = await self.api().create(code, timeouts=timeouts)
        return session_id

    async def live(self, rnd: Round, kind: str) -> Tracked:
        session = self.observer.track(Tracked(await self.create(PROGRAMS[kind]), kind, rnd))
        session.client = await self.client(session.id)
        try:
            await session.client.until_stdout("ready\n")
            if kind == "running-input":
                await session.client.send({"type": "input", "data": "before\n"})
                await session.client.until_stdout("echo before\n")
        except AssertionError:
            # Ended before the kill (e.g. its sandbox failed to start after the last
            # round's chaos): judged like the others, by its final state and reason.
            if session.client.final is None:
                raise
            session.kind = f"{kind} (ended before the kill)"
        return session

    async def run_round(self, rnd: Round, kill: Killer, restart: Killer) -> None:
        """Sessions in every state, the kill, the restart, then a new session."""
        unconnected = Tracked(await self.create(PROGRAMS["unconnected"]), "unconnected", rnd)
        self.observer.track(unconnected)
        running = await asyncio.gather(
            self.live(rnd, "running-input"),
            self.live(rnd, "running-busy"),
            self.live(rnd, "finishing"),
        )
        finishing = running[-1]
        assert finishing.client is not None
        if finishing.kind == "finishing":
            await finishing.client.send({"type": "input", "data": "go\n"})
            await finishing.client.until_stdout("going\n")
        connecting = self.observer.track(
            Tracked(await self.create(PROGRAMS["connecting"]), "connecting", rnd)
        )
        connecting.client = await self.client(connecting.id)
        rnd.open_clients = [
            s
            for s in self.observer.tracked.values()
            if s.client is not None and s.client.closed_at is None
        ]

        rnd.killed_at = time.monotonic()
        await kill()
        await restart()
        rnd.back_after = time.monotonic() - rnd.killed_at

        hello = self.observer.track(Tracked(await self.create(HELLO), "new", rnd))
        hello.client = await self.client(hello.id)
        await hello.client.until_closed(90)
        rnd.hello_after = time.monotonic() - rnd.killed_at
        assert hello.client.stdout == "hello\n", hello.client.messages
        final = hello.client.final
        assert final is not None, hello.client.messages
        assert (final["state"], final["reason"]) == ("finished", "Completed"), final


def describe(rnd: Round) -> str:
    parts = [
        f"{rnd.component} round {rnd.number}: back after {rnd.back_after:.1f} s,"
        f" new session done {rnd.hello_after:.1f} s after the kill;"
    ]
    for s in rnd.sessions:
        when = f"{s.final_after:.0f} s" if s.final_after is not None else "not final"
        client = ""
        if s.client is not None:
            final = s.client.final
            seen = f"{final['state']}/{final.get('reason')}" if final else "no final state"
            client = f" (client: {seen}, close {s.client.close_code})"
        parts.append(f"  {s.kind}: {s.phase}/{s.reason} after {when}{client}")
    return "\n".join(parts)
