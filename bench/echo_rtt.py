"""stdin -> stdout round trip through the api: one session echoing each line back.

python bench/echo_rtt.py --rounds 200                 # own api + operator
python bench/echo_rtt.py --url http://127.0.0.1:30080 # an api already running

``bench/density.py`` measures the same round trip with many live sessions.
"""

from __future__ import annotations

import argparse
import json
import time

import httpx
from _common import load_average, loads, report
from _timing import SessionTimes, run_main, timed_session
from websockets.asyncio.client import ClientConnection

ECHO = "while True:\n    print(input())\n"


async def echo_once(ws: ClientConnection, line: str) -> float:
    """Send one line, wait until it came back on stdout; seconds."""
    t0 = time.perf_counter()
    await ws.send(json.dumps({"type": "input", "data": line}))
    got = stderr = ""
    while got != line:
        msg = loads(await ws.recv())
        if msg["type"] == "stdout":
            got += msg["data"]
        elif msg["type"] == "stderr":
            stderr += msg["data"]
        elif msg["type"] == "state" and msg["state"] in ("finished", "terminated"):
            raise RuntimeError(f"the echo session ended: {msg}; stderr {stderr[-2000:]!r}")
    return time.perf_counter() - t0


async def terminate(ws: ClientConnection) -> None:
    await ws.send(json.dumps({"type": "terminate"}))


async def bench(base: str, _namespace: str, args: argparse.Namespace) -> None:
    rtts: list[float] = []

    async def rounds(ws: ClientConnection, _times: SessionTimes) -> None:
        for i in range(args.rounds):
            rtts.append(await echo_once(ws, f"ping {i}\n"))
        await terminate(ws)

    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        await timed_session(http, base, ECHO, during=rounds)
    report("stdin -> stdout echo round trip", rtts[5:])  # first few warm the path up
    print(f"({load_average()})")


if __name__ == "__main__":
    run_main(__doc__, bench, lambda p: p.add_argument("--rounds", type=int, default=200))
