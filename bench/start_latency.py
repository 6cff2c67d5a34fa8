"""POST /session -> first stdout byte of a Python hello world, through the real api.

    python bench/start_latency.py --runs 20              # own api + operator
    python bench/start_latency.py --url http://127.0.0.1:30080 --namespace icee-sandbox

Each run: POST, open the WebSocket right away, stop the clock at the first stdout
frame. Runs are sequential, so each one is a cold start of its own sandbox pod.
Interleaved with the api runs, the same number of bare gVisor pods (``pod_start.py``:
create -> first output line, no api or operator) give the floor the api's figure is
compared with, measured under the same machine load.

A watch of our own on the namespace's CodeSessions and pods timestamps the steps in
between (the api sees the same events through its own watches), so each run also
yields a timeline: POST answered -> CodeSession seen -> client connected (spec.start,
lazy start) -> Pod created (operator) ->
scheduled -> container created -> running in the pod status -> attach open
("running" on the WebSocket) -> first output.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
from _common import (
    bench_namespace,
    create,
    load_average,
    loads,
    percentile,
    report,
    start_api,
    stop,
    ws_url,
)
from icee_api.session.cluster import Cluster
from icee_core import names
from icee_kube.client import KubeClient
from icee_kube.kubeconfig import load as load_kubeconfig
from icee_kube.pods import ContainerState, container_state
from pod_start import one as bare_pod
from websockets.asyncio.client import connect

HELLO = "print('Hello World')"
# Timeline steps in order: (key, what it marks).
STEPS = [
    ("posted", "POST answered (CodeSession created)"),
    ("cs_seen", "CodeSession seen on a watch"),
    ("connected", "spec.start seen (client connected: lazy start may begin)"),
    ("pod_added", "Pod created by the operator"),
    ("scheduled", "Pod bound to the node"),
    ("creating", "container status: waiting (ContainerCreating)"),
    ("started", "kubelet's Started event (StartContainer returned)"),
    ("attached", "api: attach open, program released ('running' frame)"),
    ("running", "container status: running (kubelet relist; the api no longer waits for it)"),
    ("first", "first stdout byte"),
]


class Observer:
    """Arrival time of each step, per session id, from our own watches."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self.seen: dict[str, dict[str, float]] = {}

    def mark(self, session_id: str, step: str) -> None:
        self.seen.setdefault(session_id, {}).setdefault(step, time.perf_counter())

    async def _follow(
        self,
        watch: Callable[[str | None, float], AsyncIterator[tuple[str, dict[str, Any]]]],
        on: Callable[[dict[str, Any]], None],
    ) -> None:
        version: str | None = None
        while True:
            async for kind, obj in watch(version, 280):
                version = obj.get("metadata", {}).get("resourceVersion") or version
                if kind in ("ADDED", "MODIFIED"):
                    on(obj)

    def _on_event(self, obj: dict[str, Any]) -> None:
        sid = names.session_id_from_pod_name((obj.get("involvedObject") or {}).get("name") or "")
        if sid is not None:
            self.mark(sid, "started")

    def _on_session(self, obj: dict[str, Any]) -> None:
        self.mark(obj["metadata"]["name"], "cs_seen")
        if (obj.get("spec") or {}).get("start"):
            self.mark(obj["metadata"]["name"], "connected")

    def _on_pod(self, obj: dict[str, Any]) -> None:
        sid = names.session_id_from_pod_name(obj["metadata"]["name"])
        if sid is None:
            return
        self.mark(sid, "pod_added")
        if (obj.get("spec") or {}).get("nodeName"):
            self.mark(sid, "scheduled")
        state: ContainerState = container_state(obj, names.CONTAINER_NAME)
        if state.kind == "waiting":
            self.mark(sid, "creating")
        elif state.kind in ("running", "terminated"):
            self.mark(sid, "running")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Observer]:
        tasks = [
            asyncio.create_task(self._follow(self._cluster.watch_sessions, self._on_session)),
            asyncio.create_task(self._follow(self._cluster.watch_pods, self._on_pod)),
            asyncio.create_task(self._follow(self._cluster.watch_started, self._on_event)),
        ]
        await asyncio.sleep(0.5)  # the watches are open
        try:
            yield self
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def one(http: httpx.AsyncClient, base: str, observer: Observer) -> dict[str, float]:
    """One session; returns its steps in seconds since the POST was sent."""
    t0 = time.perf_counter()
    sid = await create(http, HELLO)
    observer.mark(sid, "posted")
    async with connect(ws_url(base, sid)) as ws:
        async for raw in ws:
            msg = loads(raw)
            if msg["type"] == "state" and msg["state"] == "running":
                observer.mark(sid, "attached")
            if msg["type"] == "stdout":
                observer.mark(sid, "first")
            if msg["type"] == "state" and msg["state"] in ("finished", "terminated"):
                observer.mark(sid, "final")
    await asyncio.sleep(0.2)  # late watch events
    return {step: at - t0 for step, at in observer.seen.pop(sid, {}).items()}


def timeline(runs: list[dict[str, float]]) -> None:
    print("timeline, p50 over the runs (ms since POST sent; +delta from the step before):")
    previous = 0.0
    for key, label in STEPS:
        values = [r[key] * 1000 for r in runs if key in r]
        if not values:
            print(f"  {'-':>7}          {label} (not seen)")
            continue
        at = statistics.median(values)
        print(f"  {at:7.0f}  (+{at - previous:5.0f})  {label}")
        previous = at
    print("slowest runs (ms):")
    for r in sorted(runs, key=lambda r: r.get("first", 1e9))[-3:]:
        print("  " + " ".join(f"{k}={r[k] * 1000:.0f}" for k, _ in STEPS if k in r))


async def bench(base: str, namespace: str, runs: int) -> None:
    cluster = Cluster(KubeClient(load_kubeconfig()), namespace)
    apis: list[dict[str, float]] = []
    bare: list[float] = []
    loads_seen: list[float] = []
    async with AsyncExitStack() as stack:
        stack.push_async_callback(cluster.close)
        observer = await stack.enter_async_context(Observer(cluster).running())
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=base, timeout=60))
        await one(http, base, observer)  # warm-up: image cache, connections
        await asyncio.to_thread(bare_pod, "default", "gvisor")
        for _ in range(runs):
            bare.append(await asyncio.to_thread(bare_pod, "default", "gvisor"))
            apis.append(await one(http, base, observer))
            loads_seen.append(os.getloadavg()[0])
    firsts = [r["first"] for r in apis if "first" in r]
    report("api: POST -> first stdout byte", firsts)
    report("api: POST -> final state", [r["final"] for r in apis if "final" in r])
    report("bare gVisor pod: create -> first line", bare)
    ratio = statistics.median(firsts) / statistics.median(bare)
    print(
        f"api p50 / bare pod p50 = {ratio:.2f}; api p95 {percentile(firsts, 95):.3f} s "
        f"(load during runs: min {min(loads_seen):.1f} max {max(loads_seen):.1f})"
    )
    timeline(apis)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", help="an api already running (default: start our own)")
    parser.add_argument("--namespace", help="its sandbox namespace (with --url)")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    print(f"start latency ({load_average()})")
    if args.url:
        await bench(args.url, args.namespace or names.DEFAULT_NAMESPACE, args.runs)
        return
    with bench_namespace({}) as namespace:
        proc, base = start_api(namespace)
        try:
            await bench(base, namespace, args.runs)
        finally:
            stop(proc)


if __name__ == "__main__":
    asyncio.run(main())
