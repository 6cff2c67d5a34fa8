"""stdin -> stdout round trip through the api: one session echoing each line back.

python bench/echo_rtt.py --url http://127.0.0.1:8000 --rounds 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx
from _common import create, loads, report, ws_url
from websockets.asyncio.client import connect

ECHO = "while True:\n    print(input())\n"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    async with httpx.AsyncClient(base_url=args.url, timeout=60) as http:
        sid = await create(http, ECHO)
    rtts = []
    async with connect(ws_url(args.url, sid)) as ws:
        while loads(await ws.recv()).get("state") != "running":
            pass
        for i in range(args.rounds):
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


if __name__ == "__main__":
    asyncio.run(main())
