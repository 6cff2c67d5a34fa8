"""Program exit -> final ``state`` frame on the WebSocket, beside the operator's status.

    python bench/exit_to_final.py --runs 20        # own api + operator

Each run: a Python program prints the wall-clock time and exits. The api now sends
the final state from the runner's last frame (``x`` + ``q``); before, it waited for
the operator's status, which waits for the kubelet to notice the exit (its relist
runs every second). Both are measured in the same run: the final frame's arrival on
the client, and the CodeSession turning Finished on a watch of our own (the old
path, which the operator still writes). Clocks: the sandbox's clock is the node's
(gVisor reads the host's), and client, watch and node are one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from _common import (
    bench_namespace,
    create,
    load_average,
    loads,
    report,
    start_api,
    stop,
    ws_url,
)
from icee_api.session.cluster import Cluster
from icee_core import names
from icee_kube.client import KubeClient
from icee_kube.kubeconfig import load as load_kubeconfig
from websockets.asyncio.client import connect

# The last thing the program does: print the time (a float, seconds) and exit.
PROGRAM = "import time\nprint(repr(time.time()), flush=True)\n"


class FinalStatuses:
    """When each CodeSession's status turned final, from a watch of our own."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self.at: dict[str, float] = {}
        self.changed = asyncio.Event()

    async def _follow(self) -> None:
        version: str | None = None
        while True:
            async for kind, obj in self._cluster.watch_sessions(version, 280):
                version = obj.get("metadata", {}).get("resourceVersion") or version
                phase = (obj.get("status") or {}).get("phase")
                if kind != "DELETED" and phase in ("Finished", "Terminated"):
                    self.at.setdefault(obj["metadata"]["name"], time.time())
                    self.changed.set()

    async def wait(self, session_id: str, seconds: float = 30) -> float | None:
        async with asyncio.timeout(seconds):
            while session_id not in self.at:
                self.changed.clear()
                await self.changed.wait()
        return self.at.get(session_id)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FinalStatuses]:
        task = asyncio.create_task(self._follow())
        await asyncio.sleep(0.5)  # the watch is open
        try:
            yield self
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def one(http: httpx.AsyncClient, base: str, statuses: FinalStatuses) -> tuple[float, float]:
    """(exit -> final frame, exit -> final status) in seconds for one session."""
    sid = await create(http, PROGRAM)
    printed = final = None
    async with connect(ws_url(base, sid)) as ws:
        async for raw in ws:
            msg = loads(raw)
            if msg["type"] == "stdout" and printed is None:
                printed = float(msg["data"])
            if msg["type"] == "state" and msg["state"] in ("finished", "terminated"):
                final = time.time()
                if msg.get("reason") != "Completed":
                    raise SystemExit(f"session {sid} ended {msg}")
    status = await statuses.wait(sid)
    if printed is None or final is None or status is None:
        raise SystemExit(f"session {sid}: printed={printed} final={final} status={status}")
    return final - printed, status - printed


async def bench(base: str, namespace: str, runs: int) -> None:
    cluster = Cluster(KubeClient(load_kubeconfig()), namespace)
    frames: list[float] = []
    statuses_seen: list[float] = []
    async with AsyncExitStack() as stack:
        stack.push_async_callback(cluster.close)
        statuses = await stack.enter_async_context(FinalStatuses(cluster).running())
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=base, timeout=60))
        await one(http, base, statuses)  # warm-up: image cache, connections
        for _ in range(runs):
            frame, status = await one(http, base, statuses)
            frames.append(frame)
            statuses_seen.append(status)
    report("program exit -> final state frame (runner's report)", frames)
    report("program exit -> CodeSession status final (operator; the old path)", statuses_seen)
    print(f"({load_average()} after the runs)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", help="an api already running (default: start our own)")
    parser.add_argument("--namespace", help="its sandbox namespace (with --url)")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    print(f"exit -> final state ({load_average()})")
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
