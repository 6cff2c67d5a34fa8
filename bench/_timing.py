"""Session clocks shared by the benchmarks: one timed session through the api, watches
of our own that timestamp what the cluster does, and the common command line.

Every bench that times a session uses ``timed_session`` (POST, open the WebSocket at
once, clock each frame kind) and, when it needs the cluster's side, ``Watches``
(CodeSessions, pods and the kubelet's Started events, each followed from its
resourceVersion). ``run_main`` gives a bench the usual ``--url/--namespace`` choice
between an api already running and one of its own (api + operator in a namespace
of its own, removed afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from _common import (
    bench_namespace,
    create,
    create_admitted,
    load_average,
    loads,
    start_api,
    stop,
    ws_url,
)
from icee_api.session.cluster import Cluster
from icee_core import names
from icee_kube.client import KubeClient
from icee_kube.kubeconfig import load as load_kubeconfig
from websockets.asyncio.client import ClientConnection, connect

FINAL = ("finished", "terminated")


@dataclass
class SessionTimes:
    """One session's clock: seconds since the POST was sent (perf_counter), and the
    wall-clock time of the final frame (to compare with times printed in the sandbox)."""

    session_id: str = ""
    posted: float | None = None  # the 201
    opened: float | None = None  # WebSocket handshake done
    pending: float | None = None  # 'pending' frame: the api read, claimed and started it
    running: float | None = None  # 'running' frame: attach open, program released
    first: float | None = None  # first stdout byte
    final: float | None = None
    final_wall: float | None = None
    reason: str | None = None
    refusals: list[str] = field(default_factory=list)  # admission's 429/503 before the 201
    stdout: str = ""
    stderr: str = ""  # the program's, kept to say why a run failed
    frames: list[dict[str, Any]] = field(default_factory=list)


async def timed_session(
    http: httpx.AsyncClient,
    base: str,
    code: str,
    language: str = "python",
    *,
    during: Callable[[ClientConnection, SessionTimes], Awaitable[None]] | None = None,
    admit_within: float = 0,
    client: str | None = None,
    **extra: Any,
) -> SessionTimes:
    """POST a session, open its WebSocket at once and clock it until the final state.

    ``during``, if given, runs once the program is released (the 'running' frame) and
    may drive the session (send input, terminate); frames keep being clocked after it.
    ``admit_within``: retry refusals (429/503, after their Retry-After) that long; the
    clock then runs from the first POST, so waiting for admission counts; ``client``
    (with ``admit_within``): the X-Forwarded-For address it creates as.
    """
    t0 = time.perf_counter()
    times = SessionTimes()
    if admit_within:
        times.session_id, times.refusals = await create_admitted(
            http, code, admit_within, client, language=language, **extra
        )
    else:
        times.session_id = await create(http, code, language=language, **extra)
    times.posted = time.perf_counter() - t0
    async with connect(ws_url(base, times.session_id)) as ws:
        times.opened = time.perf_counter() - t0
        async for raw in ws:
            msg = loads(raw)
            now = time.perf_counter() - t0
            if msg["type"] == "state" and msg["state"] == "pending" and times.pending is None:
                times.pending = now
            elif msg["type"] == "state" and msg["state"] == "running" and times.running is None:
                times.running = now
                if during is not None:
                    await during(ws, times)
            elif msg["type"] == "stdout":
                times.first = now if times.first is None else times.first
                times.stdout += msg["data"]
            elif msg["type"] == "stderr":
                times.stderr = (times.stderr + msg["data"])[-2000:]
            elif msg["type"] == "state" and msg["state"] in FINAL:
                times.final, times.final_wall = now, time.time()
                times.reason = msg.get("reason")
                times.frames.append(msg)
                break
    return times


Handler = Callable[[str, dict[str, Any]], None]


class Watches:
    """Our own watches on the bench namespace; each event goes to its handlers with
    its arrival time on ``perf_counter``'s clock (``self.now``)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.sessions: list[Handler] = []
        self.pods: list[Handler] = []
        self.started: list[Handler] = []  # kubelet's Started events

    @staticmethod
    async def _follow(
        watch: Callable[[str | None, float], AsyncIterator[tuple[str, dict[str, Any]]]],
        handlers: list[Handler],
    ) -> None:
        version: str | None = None
        while True:
            async for kind, obj in watch(version, 280):
                version = obj.get("metadata", {}).get("resourceVersion") or version
                if kind in ("ADDED", "MODIFIED", "DELETED"):  # not BOOKMARK
                    for handler in handlers:
                        handler(kind, obj)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Watches]:
        pairs = [
            (self.cluster.watch_sessions, self.sessions),
            (self.cluster.watch_pods, self.pods),
            (self.cluster.watch_started, self.started),
        ]
        tasks = [asyncio.create_task(self._follow(w, h)) for w, h in pairs if h]
        await asyncio.sleep(0.5)  # the watches are open
        try:
            yield self
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


@asynccontextmanager
async def cluster_of(namespace: str) -> AsyncIterator[Cluster]:
    """A Kubernetes client on the bench namespace (the kubeconfig of $KUBECONFIG)."""
    cluster = Cluster(KubeClient(load_kubeconfig()), namespace)
    try:
        yield cluster
    finally:
        await cluster.close()


Bench = Callable[[str, str, argparse.Namespace], Awaitable[None]]


def run_main(
    doc: str, bench: Bench, add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    *, own_only: bool = False, operator_env: dict[str, str] | None = None,
    **api_settings: str,
) -> None:  # fmt: skip
    """The command line of a session bench: ``bench(base_url, namespace, args)`` runs
    against ``--url`` (sandbox namespace ``--namespace``) or against an api and operator
    of this tree in a namespace of its own (with ``api_settings``, and ``operator_env``
    for the operator). ``own_only``: the
    bench changes its namespace (pools), so never one already in use."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    if not own_only:
        parser.add_argument("--url", help="an api already running (default: start our own)")
        parser.add_argument("--namespace", help="its sandbox namespace (with --url)")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args()
    print(f"{doc.strip().splitlines()[0]} ({load_average()})")
    if getattr(args, "url", None):
        asyncio.run(bench(args.url.rstrip("/"), args.namespace or names.DEFAULT_NAMESPACE, args))
        return
    with bench_namespace(operator_env or {}) as namespace:
        proc, base = start_api(namespace, **api_settings)
        try:
            asyncio.run(bench(base, namespace, args))
        finally:
            stop(proc)


# A hello world per language (the bench's program; languages the api serves
# without one here are reported, not run).
HELLO = {
    "python": "print('Hello World')\n",
    "javascript": "console.log('Hello World');\n",
    "java": (
        "public class Main {\n    public static void main(String[] args) {\n"
        '        System.out.println("Hello World");\n    }\n}\n'
    ),
    "cpp": '#include <iostream>\nint main() { std::cout << "Hello World" << std::endl; }\n',
    "ruby": 'puts "Hello World"\n',
}


async def first_byte(http: httpx.AsyncClient, base: str, language: str = "python") -> float:
    """POST -> first stdout byte of the language's hello world (seconds); the session
    must complete."""
    times = await timed_session(http, base, HELLO[language], language)
    if times.first is None or times.reason != "Completed":
        raise RuntimeError(
            f"{language} hello world: {times.frames} stdout={times.stdout!r} "
            f"stderr={times.stderr!r}"
        )
    return times.first
