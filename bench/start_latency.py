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
from contextlib import AsyncExitStack
from typing import Any

import httpx
from _common import percentile, report
from _timing import Watches, cluster_of, run_main, timed_session
from icee_core import names
from icee_kube.pods import ContainerState, container_state
from pod_start import one as bare_pod

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


class Timeline:
    """Arrival time of each step, per session id, from our own watches."""

    def __init__(self, watches: Watches) -> None:
        self.seen: dict[str, dict[str, float]] = {}
        watches.sessions.append(self._on_session)
        watches.pods.append(self._on_pod)
        watches.started.append(self._on_event)

    def mark(self, session_id: str, step: str, at: float | None = None) -> None:
        self.seen.setdefault(session_id, {}).setdefault(step, at or time.perf_counter())

    def _on_event(self, kind: str, obj: dict[str, Any]) -> None:
        sid = names.session_id_from_pod_name((obj.get("involvedObject") or {}).get("name") or "")
        if sid is not None and kind in ("ADDED", "MODIFIED"):
            self.mark(sid, "started")

    def _on_session(self, kind: str, obj: dict[str, Any]) -> None:
        if kind not in ("ADDED", "MODIFIED"):
            return
        self.mark(obj["metadata"]["name"], "cs_seen")
        if (obj.get("spec") or {}).get("start"):
            self.mark(obj["metadata"]["name"], "connected")

    def _on_pod(self, kind: str, obj: dict[str, Any]) -> None:
        sid = names.session_id_from_pod_name(obj["metadata"]["name"])
        if sid is None or kind not in ("ADDED", "MODIFIED"):
            return
        self.mark(sid, "pod_added")
        if (obj.get("spec") or {}).get("nodeName"):
            self.mark(sid, "scheduled")
        state: ContainerState = container_state(obj, names.CONTAINER_NAME)
        if state.kind == "waiting":
            self.mark(sid, "creating")
        elif state.kind in ("running", "terminated"):
            self.mark(sid, "running")


async def one(http: httpx.AsyncClient, base: str, steps: Timeline) -> dict[str, float]:
    """One session; returns its steps in seconds since the POST was sent."""
    t0 = time.perf_counter()
    times = await timed_session(http, base, HELLO)
    for key in ("posted", "running", "first", "final"):
        value = getattr(times, key)
        if value is not None:
            steps.mark(times.session_id, "attached" if key == "running" else key, t0 + value)
    await asyncio.sleep(0.2)  # late watch events
    return {step: at - t0 for step, at in steps.seen.pop(times.session_id, {}).items()}


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


async def bench(base: str, namespace: str, args: argparse.Namespace) -> None:
    apis: list[dict[str, float]] = []
    bare: list[float] = []
    loads_seen: list[float] = []
    async with AsyncExitStack() as stack:
        watches = Watches(await stack.enter_async_context(cluster_of(namespace)))
        steps = Timeline(watches)
        await stack.enter_async_context(watches.running())
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=base, timeout=60))
        await one(http, base, steps)  # warm-up: image cache, connections
        await asyncio.to_thread(bare_pod, "default", "gvisor")
        for _ in range(args.runs):
            bare.append(await asyncio.to_thread(bare_pod, "default", "gvisor"))
            apis.append(await one(http, base, steps))
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


if __name__ == "__main__":
    run_main(__doc__, bench, lambda p: p.add_argument("--runs", type=int, default=20))
