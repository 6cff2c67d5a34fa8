"""Runs attacks as real sessions through the api, each beside a normal session.

An attack is a program (tests/security/programs.py) sent with `POST /session`
and streamed over the WebSocket like any user's. While it runs, the node is
watched from outside (host.py): the pod's cgroups, its disk, its log. Once the
attack runs, a normal "canary" session is started next to it; the canary must
still echo its input and finish cleanly, and the api must stay healthy.
Attacks that do not disturb each other run concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import host
import programs
from websockets.exceptions import ConnectionClosed

if TYPE_CHECKING:
    from icee_it_conftest import ApiServer, LiveSession, Transcript

FINAL = ("finished", "terminated")
POD_LOGS = Path("/var/log/pods")


@dataclass
class Canary:
    stdout: str = ""
    final: dict[str, Any] = field(default_factory=dict)
    healthz: list[int] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and self.stdout == programs.CANARY_STDOUT
            and (self.final.get("state"), self.final.get("exitCode")) == ("finished", 0)
            and all(code == 200 for code in self.healthz)
        )


@dataclass
class Run:
    """Everything one attack session showed, inside and out."""

    attack: str
    session_id: str = ""
    pod_uid: str = ""
    container_ids: list[str] = field(default_factory=list)
    lines: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    transcript: Transcript | None = None
    host: dict[str, Any] = field(default_factory=dict)
    canary: Canary | None = None
    error: str | None = None
    seconds: float = 0.0

    def tagged(self, tag: str) -> list[dict[str, Any]]:
        return [payload for t, payload in self.lines if t == tag]

    @property
    def result(self) -> dict[str, Any]:
        found = self.tagged("RESULT")
        assert found, f"{self.attack}: no RESULT line\n{self.describe()}"
        return found[-1]

    @property
    def final(self) -> dict[str, Any]:
        assert self.transcript is not None, self.describe()
        assert self.transcript.of("state"), self.describe()
        return self.transcript.final

    def describe(self) -> str:
        t = self.transcript
        return json.dumps(
            {
                "attack": self.attack,
                "session": self.session_id,
                "error": self.error,
                "final": t.final if t and t.of("state") else None,
                "stdout_tail": t.stdout[-1500:] if t else "",
                "stderr_tail": t.stderr[-1500:] if t else "",
                "ws_errors": t.errors if t else [],
                "host": self.host,
                "canary": self.canary.__dict__ if self.canary else None,
            },
            indent=1,
            default=str,
        )


Hook = Callable[["Live", str, dict[str, Any]], Awaitable[None]]


@dataclass
class Attack:
    name: str
    code: str
    request: dict[str, Any] = field(default_factory=dict)
    on_line: Hook | None = None
    within: float = 150
    canary: bool = True


@dataclass
class Live:
    """An attack in progress: its run record and its WebSocket."""

    run: Run
    session: LiveSession
    namespace: str


async def kubectl_json(*args: str) -> dict[str, Any]:
    from icee_it_conftest import kubectl

    out = await asyncio.to_thread(kubectl, *args, "-o", "json", check=False)
    return json.loads(out) if out.strip() else {}


async def find_pod(run: Run, namespace: str) -> None:
    """The pod's uid as soon as it exists, its container ids once they run."""
    while not run.container_ids:
        pod = await kubectl_json("get", "pod", f"run-{run.session_id}", "-n", namespace)
        run.pod_uid = run.pod_uid or pod.get("metadata", {}).get("uid", "")
        statuses = pod.get("status", {}).get("containerStatuses", [])
        run.container_ids = [
            s["containerID"].split("://", 1)[-1] for s in statuses if s.get("containerID")
        ]
        await asyncio.sleep(0.1)
    run.host["disk_baseline"] = await asyncio.to_thread(
        host.node_disk_bytes, run.pod_uid, run.container_ids
    )


def sample(run: Run, namespace: str) -> None:
    """One look at the pod's cgroups and container log; peaks are kept."""
    uid, h = run.pod_uid, run.host
    logs = list(POD_LOGS.glob(f"{namespace}_run-{run.session_id}_{uid}/*/*.log"))
    samples = {
        "memory_limit": host.cgroup_value("memory", uid, "memory.limit_in_bytes"),
        "memory_max_usage": host.cgroup_value("memory", uid, "memory.max_usage_in_bytes"),
        "pids_current": host.cgroup_value("pids", uid, "pids.current"),
        "cpu_quota_us": host.cgroup_value("cpu", uid, "cpu.cfs_quota_us"),
        "cpu_period_us": host.cgroup_value("cpu", uid, "cpu.cfs_period_us"),
        "log_bytes": sum(p.stat().st_size for p in logs if p.exists()) if logs else None,
    }
    for key, value in samples.items():
        if value is None:
            continue
        if key.endswith(("_max_usage", "_current", "log_bytes")):
            h[f"{key}_peak"] = max(value, h.get(f"{key}_peak", 0))
        else:
            h[key] = value


async def watch_pod(run: Run, namespace: str) -> None:
    """Find the pod, then sample it from the node every 0.1 s until cancelled."""
    finder = asyncio.create_task(find_pod(run, namespace))
    try:
        while True:
            if run.pod_uid:
                await asyncio.to_thread(sample, run, namespace)
            await asyncio.sleep(0.1)
    finally:
        finder.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await finder


async def canary(api: ApiServer) -> Canary:
    """A normal interactive session and the api's health, beside an attack."""
    result = Canary()
    try:
        async with api.http() as http:
            for path in ("/healthz", "/readyz"):
                result.healthz.append((await http.get(path)).status_code)
        async with api.live(programs.CANARY) as s:
            await s.until_state("running", within=90)
            await s.input("ping\n")
            t = await s.finish(within=90)
        result.stdout, result.final = t.stdout, t.final
        async with api.http() as http:
            for path in ("/healthz", "/readyz"):
                result.healthz.append((await http.get(path)).status_code)
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def _parse(line: str) -> tuple[str, dict[str, Any]] | None:
    tag, _, rest = line.partition(" ")
    if not tag.isupper() or not rest.startswith("{"):
        return None
    try:
        return tag, json.loads(rest)
    except json.JSONDecodeError:
        return None


async def run_attack(api: ApiServer, attack: Attack) -> Run:
    run = Run(attack.name)
    started = time.monotonic()
    watcher: asyncio.Task[None] | None = None
    canary_task: asyncio.Task[Canary] | None = None
    try:
        run.session_id = await api.create(attack.code, **attack.request)
        watcher = asyncio.create_task(watch_pod(run, api.namespace))
        async with api.connect(run.session_id) as s:
            live = Live(run, s, api.namespace)
            pending = ""
            with contextlib.suppress(ConnectionClosed):
                async with asyncio.timeout(attack.within):
                    while True:
                        msg = await s.next(attack.within)
                        running = msg["type"] == "state" and msg["state"] == "running"
                        if running and attack.canary and canary_task is None:
                            canary_task = asyncio.create_task(canary(api))
                        if msg["type"] != "stdout":
                            continue
                        pending += msg["data"]
                        *complete, pending = pending.split("\n")
                        for line in complete[-200:]:
                            parsed = _parse(line)
                            if parsed is None:
                                continue
                            run.lines.append(parsed)
                            if attack.on_line is not None:
                                await attack.on_line(live, *parsed)
            run.transcript = s.transcript
    except Exception:
        run.error = traceback.format_exc()
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
    if canary_task is not None:
        run.canary = await canary_task
    elif attack.canary:
        run.canary = await canary(api)
    run.seconds = time.monotonic() - started
    return run


# -- hooks: what the test does while an attack holds a state -----------------------------


async def measure_disk(live: Live, tag: str, payload: dict[str, Any]) -> None:
    """After each fill: how much the pod's footprint on the node's disk grew."""
    if tag != "FILLED":
        return
    run = live.run
    for _ in range(20):  # the baseline is taken once the container is known
        if "disk_baseline" in run.host:
            break
        await asyncio.sleep(0.5)
    now = await asyncio.to_thread(host.node_disk_bytes, run.pod_uid, run.container_ids)
    growth = now - run.host.get("disk_baseline", now)
    run.host.setdefault("fills", []).append(payload | {"node_disk_growth": growth})
    await live.session.input("\n")


async def measure_cpu(live: Live, tag: str, payload: dict[str, Any]) -> None:
    """While the program's workers spin: the pod's CPU use from its host cgroup."""
    if tag != "BUSY":
        return
    run = live.run
    await asyncio.sleep(1)  # past the start of every worker (and the pod's uid known)
    usage = "cpuacct.usage"
    u0, t0 = host.cgroup_value("cpuacct", run.pod_uid, usage), time.monotonic()
    await asyncio.sleep(5)
    u1, t1 = host.cgroup_value("cpuacct", run.pod_uid, usage), time.monotonic()
    if u0 is not None and u1 is not None:
        run.host["cpu_rate"] = (u1 - u0) / 1e9 / (t1 - t0)


async def run_all(api: ApiServer, attacks: list[Attack], parallel: int) -> dict[str, Run]:
    gate = asyncio.Semaphore(parallel)

    async def one(attack: Attack) -> Run:
        async with gate:
            return await run_attack(api, attack)

    runs = await asyncio.gather(*(one(a) for a in attacks))
    return {r.attack: r for r in runs}


# -- attacks that need two sessions ------------------------------------------------------


async def persistence(api: ApiServer, marker: str) -> tuple[Run, Run]:
    """One session leaves files everywhere it can; the next one looks for them."""
    writer = await run_attack(
        api, Attack("persist-write", programs.program(programs.PERSIST_WRITE_BODY, MARKER=marker))
    )
    reader = await run_attack(
        api, Attack("persist-read", programs.program(programs.PERSIST_READ_BODY, MARKER=marker))
    )
    return writer, reader


async def cross_session(api: ApiServer, marker: str) -> tuple[Run, Run]:
    """An intruder looks for and signals everything it can while a victim runs."""
    victim = Run("victim")
    code = programs.program(programs.VICTIM_BODY, MARKER=marker)
    try:
        victim.session_id = await api.create(code)
        async with api.connect(victim.session_id) as s:
            victim.transcript = s.transcript
            await s.until_stdout("VICTIM ", within=120)
            intruder = await run_attack(
                api,
                Attack("intruder", programs.program(programs.INTRUDER_BODY, MARKER=marker)),
            )
            await s.input("still here\n")
            await s.until_stdout("ECHO ", within=30)
            await s.input("bye\n")
            victim.transcript = await s.finish(within=60)
        for line in victim.transcript.stdout.splitlines():
            parsed = _parse(line)
            if parsed is not None:
                victim.lines.append(parsed)
    except Exception:
        victim.error = traceback.format_exc()
        intruder = locals().get("intruder") or Run("intruder", error="not run")
    return victim, intruder
