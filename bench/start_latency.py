"""POST /session -> first stdout byte of a Python hello world, through the real api.

    python bench/start_latency.py --url http://127.0.0.1:8000 --runs 20

Each run: POST, open the WebSocket right away, stop the clock at the first stdout
frame. Runs are sequential, so each one is a cold start of its own sandbox pod.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx
from _common import create, loads, report, ws_url
from websockets.asyncio.client import connect


async def one(http: httpx.AsyncClient, base: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    sid = await create(http, "print('Hello World')")
    first = done = 0.0
    async with connect(ws_url(base, sid)) as ws:
        async for raw in ws:
            msg = loads(raw)
            if msg["type"] == "stdout" and not first:
                first = time.perf_counter() - t0
            if msg["type"] == "state" and msg["state"] in ("finished", "terminated"):
                done = time.perf_counter() - t0
    return first, done


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    firsts, dones = [], []
    async with httpx.AsyncClient(base_url=args.url, timeout=60) as http:
        await one(http, args.url)  # warm-up: image cache, connections
        for _ in range(args.runs):
            first, done = await one(http, args.url)
            firsts.append(first)
            dones.append(done)
    report("POST -> first stdout byte", firsts)
    report("POST -> final state", dones)


if __name__ == "__main__":
    asyncio.run(main())
