"""Many live sandboxes on one node: echo latency with N live interactive sessions, and
where the node's CPU goes while they start and while they live.

    python bench/density.py --sessions 25,50          # own api + operator
    python bench/density.py --sessions 100 --rate 4

For each N: N sessions are opened at ``--rate`` per second (as a class pressing Run),
each an echo program; every session echoes a line every ``--interval`` seconds from
the moment it runs. Once all are up (or the opening deadline passed), the echo round
trips of a ``--window`` are the figures ("opening": the node still busy with the last
starts), and again a window after ``--settle`` more seconds ("settled": the same
sessions once the starts have passed, as a class that has been typing for a while).
A client refused by admission (429/503) waits its Retry-After and tries again, as a
well-behaved client does. Reported per N:
sessions up, refused answers, sessions that never ran (their reason), POST ->
running p50/p95, echo p50/p95/p99, and CPU per process group
(``cpu_by_process.py``) while they opened and while they lived, beside the same
figures for one live session (the baseline, in the same run). Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
from collections import Counter
from dataclasses import dataclass, field

import httpx
from _common import OWN, Refused, load_average, percentile, report
from _timing import SessionTimes, run_main, timed_session
from cpu_by_process import Sampler, Usage
from echo_rtt import ECHO, echo_once, terminate
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

# What the bench api and operator need to keep N sessions alive for a whole run.
SETTINGS = {
    "max_live_sessions": "400",
    "max_unconnected_sessions": "400",
    "client_max_sessions": "400",
    "client_burst": "400",
    "client_rate_per_second": "100",
    # Each session its own client (X-Forwarded-For), as in a class pressing Run.
    "trusted_proxies": '["127.0.0.1"]',
    "max_starting_sessions": os.environ.get("ICEE_BENCH_MAX_STARTING", "20"),
    "maxima__timeouts__execution_seconds": "900",
}
OPERATOR_ENV = {"ICEE_MAXIMA__TIMEOUTS__EXECUTION_SECONDS": "900"}


@dataclass
class DensityFigures:
    sessions: int
    up: int = 0
    refusals: Counter[str] = field(default_factory=Counter)
    never_ran: Counter[str] = field(default_factory=Counter)
    starts: list[float] = field(default_factory=list)  # POST (first try) -> running
    rtts: list[float] = field(default_factory=list)  # the window right after opening
    settled_rtts: list[float] = field(default_factory=list)  # the window after settling
    opening: Usage = field(default_factory=Usage)
    living: Usage = field(default_factory=Usage)
    load: float = 0.0  # 1-min load average at the end of the window
    settled_load: float = 0.0

    def summary(self) -> str:
        def ms(values: list[float], p: float) -> str:
            return f"{percentile(values, p) * 1000:.0f}" if values else "-"

        refused = sum(self.refusals.values())
        never = ", ".join(f"{n} {why}" for why, n in self.never_ran.items()) or "none"
        return (
            f"{self.sessions} live: up {self.up}/{self.sessions}; refused answers {refused} "
            f"({dict(self.refusals)}); never ran: {never}; POST -> running p50/p95 "
            f"{ms(self.starts, 50)}/{ms(self.starts, 95)} ms; echo p50/p95/p99 "
            f"{ms(self.rtts, 50)}/{ms(self.rtts, 95)}/{ms(self.rtts, 99)} ms "
            f"(n={len(self.rtts)}; load {self.load:.1f})"
            + (
                f"; settled: echo p50/p95/p99 {ms(self.settled_rtts, 50)}/"
                f"{ms(self.settled_rtts, 95)}/{ms(self.settled_rtts, 99)} ms "
                f"(n={len(self.settled_rtts)}; load {self.settled_load:.1f})"
                if self.settled_rtts
                else ""
            )
        )


def client_address(i: int) -> str:
    """A distinct client address per session (a benchmark range, RFC 2544)."""
    return f"198.18.{i // 250}.{i % 250 + 1}"


async def live_sessions(
    base: str,
    namespace: str,
    count: int,
    *,
    rate: float,
    interval: float,
    window: float,
    settle: float = 0.0,
) -> DensityFigures:
    """N live sessions; echo round trips of a window right after all are up and, with
    ``settle``, of another window that many seconds later."""
    figures = DensityFigures(count)
    all_up, stop = asyncio.Event(), asyncio.Event()
    measuring: list[float] | None = None
    up = 0

    async def live(ws: ClientConnection, times: SessionTimes) -> None:
        nonlocal up
        up += 1
        if times.running is not None:
            figures.starts.append(times.running)
        if up == count:
            all_up.set()
        await asyncio.sleep(random.uniform(0, interval))
        i = 0
        while not stop.is_set():
            rtt = await echo_once(ws, f"line {i}\n")
            if measuring is not None:
                measuring.append(rtt)
            i += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
        await terminate(ws)

    async def one(i: int, http: httpx.AsyncClient) -> None:
        await asyncio.sleep(i / rate)
        try:
            times = await timed_session(
                http, base, ECHO, during=live, admit_within=600, client=client_address(i)
            )
        except Refused as refused:
            figures.never_ran["refused for 10 min"] += 1
            print(f"  session {i}: {refused}")
            return
        except (ConnectionClosed, RuntimeError, httpx.HTTPError) as error:
            figures.never_ran[type(error).__name__] += 1
            print(f"  session {i}: {error!r}")
            return
        figures.refusals.update(times.refusals)
        if times.running is None:
            figures.never_ran[times.reason or "no final state"] += 1

    limits = httpx.Limits(max_connections=count + 10)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as http:
        sampler = Sampler(OWN, namespace=namespace).start()
        tasks = [asyncio.create_task(one(i, http)) for i in range(count)]
        # Everyone up, or every session settled (some never ran), or a long deadline.
        waiter = asyncio.create_task(all_up.wait())
        ended = asyncio.gather(*tasks)
        await asyncio.wait(
            [waiter, ended], timeout=count / rate + 600, return_when=asyncio.FIRST_COMPLETED
        )
        waiter.cancel()
        figures.opening = sampler.stop()
        figures.up = up
        sampler = Sampler(OWN, namespace=namespace).start()
        measuring = figures.rtts
        await asyncio.sleep(window)
        measuring = None
        figures.living = sampler.stop()
        figures.load = figures.living.load[1]
        if settle > 0:
            await asyncio.sleep(settle)
            measuring = figures.settled_rtts
            await asyncio.sleep(window)
            measuring = None
            figures.settled_load = os.getloadavg()[0]
        stop.set()
        await asyncio.wait_for(ended, 120)
    return figures


async def bench(base: str, namespace: str, args: argparse.Namespace) -> None:
    counts = [int(n) for n in args.sessions.split(",")]
    baseline = await live_sessions(base, namespace, 1, rate=args.rate, interval=0.1, window=10)
    print("baseline: " + baseline.summary())
    results = []
    for count in counts:
        figures = await live_sessions(
            base, namespace, count, rate=args.rate, interval=args.interval,
            window=args.window, settle=args.settle,
        )  # fmt: skip
        print(figures.summary())
        print(figures.opening.table(f"  CPU while {count} sessions opened"))
        print(figures.living.table(f"  CPU while {count} sessions lived"))
        results.append(figures)
    print("--- side by side (echo round trip; ratio to one live session) ---")
    report("1 live session", baseline.rtts)
    for figures in results:
        if figures.rtts:
            report(f"{figures.sessions} live sessions", figures.rtts)
            ratio = percentile(figures.rtts, 99) / percentile(baseline.rtts, 99)
            print(f"  p99 ratio to 1 live: {ratio:.1f}x (load {figures.load:.1f})")
        if figures.settled_rtts:
            report(f"{figures.sessions} live sessions, settled", figures.settled_rtts)
    print(f"({load_average()})")


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sessions", default="25,50", help="live session counts, in order")
    parser.add_argument("--rate", type=float, default=4.0, help="sessions opened per second")
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between echoes")
    parser.add_argument("--window", type=float, default=30.0, help="measured seconds")
    parser.add_argument(
        "--settle", type=float, default=60.0, help="seconds before the settled window (0: none)"
    )


if __name__ == "__main__":
    run_main(__doc__, bench, arguments, own_only=True, operator_env=OPERATOR_ENV, **SETTINGS)
