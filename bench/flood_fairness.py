"""A flood from one client against another client's session start (brief: at most 1.5x).

    python bench/flood_fairness.py --runs 8 --flooders 20

The victim, one client, runs Python hello worlds one after another (POST -> first
stdout byte, the clock of every start bench). The flooder, another client (its own
X-Forwarded-For address), runs ``--flooders`` tasks that each press Run as fast as
they can: POST, connect, run to the end, again, ignoring Retry-After (a refused POST
is retried after 50 ms). Rounds alternate, in one process and one namespace: victim
alone (the baseline), victim during the flood, alone, flood, ... so that the ratio
compares runs under the same machine; after each flood the next round waits until
the flood's sandboxes are gone. The api's default settings apply (admission: per-client
rate, burst and starting cap, the node-wide starting cap; the start gate), unless
ICEE_* variables in the environment say otherwise (e.g. ICEE_START_GATE_SLOTS=3);
no pool.

Printed: the victim's p50/p95 alone and during the flood, their ratio, the victim's
refusals, and what the flooder got (sessions run, refusals by limit).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import time
from pathlib import Path

import httpx
from _common import OWN, kubectl, load_average, percentile, ws_url
from _timing import run_main, timed_session
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

HELLO = "print('Hello World')\n"
VICTIM = "198.51.100.20"
FLOODER = "203.0.113.7"
# The flood must be on (its sessions starting) before the victim's first run.
FLOOD_LEAD_SECONDS = 3.0
# After a flood, at most this long for its sandboxes to go before the next round.
SETTLE_SECONDS = 120.0
SETTINGS = {"trusted_proxies": '["127.0.0.1"]'}


class Flood:
    """``tasks`` loops of POST, connect, run to the end; counts what the api answered."""

    def __init__(self, base: str, tasks: int) -> None:
        self.base = base
        self.tasks = tasks
        self.ran = 0
        self.refused: collections.Counter[str] = collections.Counter()
        self.failed = 0

    async def one(self, http: httpx.AsyncClient) -> None:
        body = {"language": "python", "code": HELLO}
        while True:
            r = await http.post("/session", json=body, headers={"x-forwarded-for": FLOODER})
            if r.status_code in (429, 503):
                with contextlib.suppress(ValueError):
                    self.refused[str(r.json().get("limit") or r.status_code)] += 1
                await asyncio.sleep(0.05)
                continue
            if r.status_code != 201:
                self.failed += 1
                await asyncio.sleep(0.05)
                continue
            try:
                async with connect(ws_url(self.base, r.json()["sessionId"])) as ws:
                    async for _ in ws:
                        pass
                self.ran += 1
            except (OSError, WebSocketException):
                self.failed += 1

    async def run(self, http: httpx.AsyncClient) -> None:
        await asyncio.gather(*(self.one(http) for _ in range(self.tasks)))


async def victim(http: httpx.AsyncClient, base: str, runs: int) -> tuple[list[float], list[str]]:
    firsts: list[float] = []
    refusals: list[str] = []
    for _ in range(runs):
        t = await timed_session(http, base, HELLO, admit_within=120, client=VICTIM)
        refusals += t.refusals
        if t.first is not None and t.stdout == "Hello World\n":
            firsts.append(t.first)
        else:
            print(f"  victim run failed: {t.reason} {t.stderr[-200:]!r}")
    return firsts, refusals


async def settle(namespace: str) -> float:
    """Wait until the namespace has no sandbox pod left (at most SETTLE_SECONDS)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < SETTLE_SECONDS:
        pods = await asyncio.to_thread(
            kubectl, "get", "pods", "-n", namespace, "-l", "app.kubernetes.io/managed-by=icee",
            "-o", "name",
        )  # fmt: skip
        if not pods.strip():
            break
        await asyncio.sleep(1)
    await asyncio.sleep(5)  # their teardown's last work on the node
    return time.monotonic() - t0


def cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by our own api and operator processes."""
    used: dict[str, float] = {}
    for pid, name in OWN.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def cpu_share(before: dict[str, float], after: dict[str, float], seconds: float) -> str:
    return ", ".join(
        f"{name} {100 * (after[name] - before.get(name, 0.0)) / seconds:.0f}%"
        for name in sorted(after)
    )


def line(name: str, firsts: list[float], refusals: list[str], load: str) -> str:
    if not firsts:
        return f"{name:<26} no successful run ({load})"
    p50, p95 = percentile(firsts, 50) * 1000, percentile(firsts, 95) * 1000
    return (
        f"{name:<26} first byte p50 {p50:6.0f} ms  p95 {p95:6.0f} ms  runs {len(firsts)}"
        f"  refusals {len(refusals)}  ({load})"
    )


async def bench(base: str, namespace: str, args: argparse.Namespace) -> None:
    alone: list[float] = []
    flooded: list[float] = []
    refusals: dict[str, list[str]] = {"alone": [], "flood": []}
    flood = Flood(base, args.flooders)
    flood_seconds = 0.0
    limits = httpx.Limits(max_connections=args.flooders + 10)
    gate = os.environ.get("ICEE_START_GATE_SLOTS", "the default")
    print(f"start gate slots: {gate}; flooder tasks: {args.flooders}")
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        await timed_session(http, base, HELLO, client=VICTIM, admit_within=60)  # warm-up
        for number in range(1, args.rounds + 1):
            cpu, t0 = cpu_seconds(), time.monotonic()
            firsts, refused = await victim(http, base, args.runs)
            alone += firsts
            refusals["alone"] += refused
            print(line(f"round {number}: alone", firsts, refused, load_average()))
            print(f"  cpu of a core: {cpu_share(cpu, cpu_seconds(), time.monotonic() - t0)}")
            task = asyncio.create_task(flood.run(http))
            cpu, started = cpu_seconds(), time.monotonic()
            await asyncio.sleep(FLOOD_LEAD_SECONDS)
            firsts, refused = await victim(http, base, args.runs)
            flooded += firsts
            refusals["flood"] += refused
            print(line(f"round {number}: flood", firsts, refused, load_average()))
            print(f"  cpu of a core: {cpu_share(cpu, cpu_seconds(), time.monotonic() - started)}")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            flood_seconds += time.monotonic() - started
            # The flood's last sandboxes end and go (their teardown loads the node):
            # the next "alone" round must not run beside it.
            print(f"  settled in {await settle(namespace):.0f} s ({load_average()})")
    print()
    print(line("victim alone (baseline)", alone, refusals["alone"], "all rounds"))
    print(line("victim during the flood", flooded, refusals["flood"], "all rounds"))
    if alone and flooded:
        ratio = percentile(flooded, 50) / percentile(alone, 50)
        ratio95 = percentile(flooded, 95) / percentile(alone, 95)
        print(f"flood / alone: p50 {ratio:.2f}x, p95 {ratio95:.2f}x (target: p50 <= 1.5x)")
    per_minute = flood.ran / flood_seconds * 60 if flood_seconds else 0.0
    print(
        f"flooder ({args.flooders} tasks): {flood.ran} sessions run ({per_minute:.0f}/min),"
        f" refused {dict(flood.refused)}, failed {flood.failed}"
    )


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=6, help="victim sessions per round")
    parser.add_argument("--rounds", type=int, default=2, help="alone/flood round pairs")
    parser.add_argument("--flooders", type=int, default=20, help="the flooder's parallel tasks")


if __name__ == "__main__":
    run_main(__doc__, bench, arguments, own_only=True, **SETTINGS)
