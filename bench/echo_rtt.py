"""stdin -> stdout round trip through the api: one session echoing each line back.

python bench/echo_rtt.py --rounds 200                 # own api + operator
python bench/echo_rtt.py --url http://127.0.0.1:30080 # an api already running
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx
from _common import bench_namespace, create, load_average, loads, report, start_api, stop, ws_url
from websockets.asyncio.client import connect

ECHO = "while True:\n    print(input())\n"


async def bench(base: str, rounds: int) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        sid = await create(http, ECHO)
    rtts = []
    async with connect(ws_url(base, sid)) as ws:
        while loads(await ws.recv()).get("state") != "running":
            pass
        for i in range(rounds):
            line = f"ping {i}\n"
            t0 = time.perf_counter()
            await ws.send(json.dumps({"type": "input", "data": line}))
            got = ""
            while got != line:
                msg = loads(await ws.recv())
                if msg["type"] == "stdout":
                    got += msg["data"]
            rtts.append(time.perf_counter() - t0)
        await ws.send(json.dumps({"type": "terminate"}))
    report("stdin -> stdout echo round trip", rtts[5:])  # first few warm the path up
    print(f"({load_average()})")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", help="an api already running (default: start our own)")
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    if args.url:
        await bench(args.url, args.rounds)
        return
    with bench_namespace({}) as namespace:
        proc, base = start_api(namespace)
        try:
            await bench(base, args.rounds)
        finally:
            stop(proc)


if __name__ == "__main__":
    asyncio.run(main())
