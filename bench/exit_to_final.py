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
from contextlib import AsyncExitStack
from typing import Any

import httpx
from _common import load_average, report
from _timing import Watches, cluster_of, run_main, timed_session

# The last thing the program does: print the time (a float, seconds) and exit.
PROGRAM = "import time\nprint(repr(time.time()), flush=True)\n"


class FinalStatuses:
    """When each CodeSession's status turned final (wall clock), from our own watch."""

    def __init__(self, watches: Watches) -> None:
        self.at: dict[str, float] = {}
        self.changed = asyncio.Event()
        watches.sessions.append(self._on_session)

    def _on_session(self, kind: str, obj: dict[str, Any]) -> None:
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


async def one(http: httpx.AsyncClient, base: str, statuses: FinalStatuses) -> tuple[float, float]:
    """(exit -> final frame, exit -> final status) in seconds for one session."""
    times = await timed_session(http, base, PROGRAM)
    if times.reason != "Completed":
        raise SystemExit(f"session {times.session_id} ended {times.frames}")
    status = await statuses.wait(times.session_id)
    if not times.stdout or times.final_wall is None or status is None:
        raise SystemExit(f"session {times.session_id}: {times} status={status}")
    printed = float(times.stdout.split()[0])
    return times.final_wall - printed, status - printed


async def bench(base: str, namespace: str, args: argparse.Namespace) -> None:
    frames: list[float] = []
    statuses_seen: list[float] = []
    async with AsyncExitStack() as stack:
        watches = Watches(await stack.enter_async_context(cluster_of(namespace)))
        statuses = FinalStatuses(watches)
        await stack.enter_async_context(watches.running())
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=base, timeout=60))
        await one(http, base, statuses)  # warm-up: image cache, connections
        for _ in range(args.runs):
            frame, status = await one(http, base, statuses)
            frames.append(frame)
            statuses_seen.append(status)
    report("program exit -> final state frame (runner's report)", frames)
    report("program exit -> CodeSession status final (operator; the old path)", statuses_seen)
    print(f"({load_average()} after the runs)")


if __name__ == "__main__":
    run_main(__doc__, bench, lambda p: p.add_argument("--runs", type=int, default=20))
