"""RSS of the api process at N idle session WebSockets.

    python bench/idle_ws_memory.py                     # pending sessions: 0, 100, 1000
    python bench/idle_ws_memory.py --running 40        # attached, running sessions

Starts its own ``icee-api`` in a namespace of its own. A node cannot run 1,000
sandbox pods, so by default the sessions stay *pending*: no operator serves the
namespace, their CodeSessions exist but no pod is ever made; a pending stream holds
the client WebSocket and a subscription to the api's shared watches. With
``--running N`` an operator serves the namespace and each session is a real sandbox
blocked in ``input()``: the stream then also holds its attach WebSocket (TLS to the
API server). Reports RSS at each step and the cost per socket over the idle api.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

import httpx
from _common import (
    bench_namespace,
    create,
    load_average,
    loads,
    rss_bytes,
    start_api,
    stop,
    ws_url,
)
from websockets.asyncio.client import ClientConnection, connect

MiB = 1024 * 1024
# Long enough that no session ends while the bench still counts it.
LONG = "3600"


async def open_sessions(
    base: str, count: int, running: bool, stack: contextlib.AsyncExitStack
) -> list[ClientConnection]:
    sockets: list[ClientConnection] = []
    batch = 10 if running else 50
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        for start in range(0, count, batch):
            ids = await asyncio.gather(
                *(create(http, "input()") for _ in range(start, min(count, start + batch)))
            )
            opened = [await stack.enter_async_context(connect(ws_url(base, sid))) for sid in ids]
            want = "running" if running else "pending"
            for ws in opened:
                while (msg := loads(await asyncio.wait_for(ws.recv(), 120))).get("state") != want:
                    if msg.get("state") in ("finished", "terminated"):
                        raise SystemExit(f"a session ended: {msg}")
            sockets += opened
    return sockets


async def measure(namespace: str, steps: list[int], running: bool) -> None:
    proc, base = start_api(
        namespace,
        start_timeout_seconds=LONG,
        max_starting_sessions="5000",
        max_unconnected_sessions="5000",
        max_live_sessions="5000",
        client_max_sessions="5000",
        client_burst="5000",
        shutdown_grace_seconds="0",
        maxima__timeouts__idle_seconds=LONG,
        maxima__timeouts__execution_seconds=LONG,
    )
    kind = "running" if running else "pending"
    try:
        async with contextlib.AsyncExitStack() as stack:
            opened: list[ClientConnection] = []
            await asyncio.sleep(2)
            base_rss = rss_bytes(proc.pid)
            print(f"{kind} sockets=0 rss={base_rss / MiB:.1f} MiB ({load_average()})", flush=True)
            for step in steps:
                if step <= len(opened):
                    continue
                t0 = time.monotonic()
                opened += await open_sessions(base, step - len(opened), running, stack)
                took = time.monotonic() - t0
                await asyncio.sleep(5)  # let pooled HTTP connections idle out of the picture
                rss = rss_bytes(proc.pid)
                per = (rss - base_rss) / len(opened) / 1024
                print(
                    f"{kind} sockets={len(opened)} rss={rss / MiB:.1f} MiB "
                    f"(+{per:.1f} KiB per socket; opened in {took:.0f} s; {load_average()})",
                    flush=True,
                )
    finally:
        stop(proc)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", default="100,1000", help="pending sockets to measure at")
    parser.add_argument("--running", type=int, default=0, help="attached sessions instead")
    args = parser.parse_args()
    running = args.running > 0
    steps = (
        [args.running // 2, args.running] if running else [int(s) for s in args.steps.split(",")]
    )
    operator = {"ICEE_MAXIMA__TIMEOUTS__EXECUTION_SECONDS": LONG} if running else None
    with bench_namespace(operator) as namespace:
        await measure(namespace, steps, running)


if __name__ == "__main__":
    asyncio.run(main())
