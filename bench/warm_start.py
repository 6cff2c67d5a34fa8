"""Warm vs cold start (issue 12): POST /session -> first stdout byte of a Python hello
world, from a warm pool and from a cold pod, beside the bare gVisor pod floor.

    python bench/warm_start.py --runs 20

Own namespace, operator and api. Warm: a SandboxPool of one python pod; each run
waits for a ready warm pod, so every run claims one (and the time from the claim
until the pool is ready again is the refill time). Cold: the same pool scaled to 0.
Floor: the same program in a bare gVisor pod made with kubectl (``pod_start.py``).
Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import time

import httpx
from _common import (
    bench_namespace,
    create,
    kubectl,
    load_average,
    loads,
    report,
    start_api,
    stop,
)
from _common import percentile as pct
from icee_core import names
from pod_start import kubectl as pod_kubectl
from pod_start import one as bare_pod
from websockets.asyncio.client import connect

HELLO = "print('Hello World')"


async def first_byte(http: httpx.AsyncClient, base: str) -> float:
    t0 = time.perf_counter()
    sid = await create(http, HELLO)
    first = None
    async with connect(base.replace("http", "ws", 1) + f"/ws/session/{sid}") as ws:
        async for raw in ws:
            msg = loads(raw)
            if msg["type"] == "stdout" and first is None:
                first = time.perf_counter() - t0
            if msg["type"] == "state" and msg["state"] in ("finished", "terminated"):
                break
    assert first is not None, "no output"
    return first


def ready_warm(namespace: str) -> int:
    pods = json.loads(
        kubectl("-n", namespace, "get", "pods", "-l", f"{names.LABEL_POOL}=python", "-o", "json")
    )["items"]
    return sum(
        1
        for p in pods
        if names.LABEL_SESSION not in p["metadata"].get("labels", {})
        and not p["metadata"].get("deletionTimestamp")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p.get("status", {}).get("conditions", [])
        )
    )


async def wait_ready(namespace: str, count: int, within: float = 120) -> float:
    """Seconds until the pool has ``count`` ready, unclaimed pods."""
    t0 = time.perf_counter()
    while await asyncio.to_thread(ready_warm, namespace) < count:
        if time.perf_counter() - t0 > within:
            raise SystemExit("the pool did not refill")
        await asyncio.sleep(0.1)
    return time.perf_counter() - t0


def pool(namespace: str, replicas: int) -> None:
    body = {
        "apiVersion": names.API_VERSION,
        "kind": "SandboxPool",
        "metadata": {"name": "python", "namespace": namespace},
        "spec": {"language": "python", "replicas": replicas},
    }
    pod_kubectl("apply", "-f", "-", stdin=json.dumps(body))


async def bench(namespace: str, base: str, runs: int) -> None:
    warm: list[float] = []
    refill: list[float] = []
    cold: list[float] = []
    bare: list[float] = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        pool(namespace, 1)
        await wait_ready(namespace, 1)
        await first_byte(http, base)  # warm-up: connections, page cache
        for _ in range(runs):
            await wait_ready(namespace, 1)
            await asyncio.sleep(0.5)  # the api's cache has the pod's latest version
            warm.append(await first_byte(http, base))
            claimed_at = time.perf_counter() - warm[-1]
            await wait_ready(namespace, 1)
            refill.append(time.perf_counter() - claimed_at)
        report("warm python: POST -> first stdout byte", warm)
        report("pool refill: POST (claim) -> a ready warm pod again", refill)
        pool(namespace, 0)
        for _ in range(600):
            if not await asyncio.to_thread(ready_warm, namespace):
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)
        for _ in range(runs):
            cold.append(await first_byte(http, base))
            try:
                bare.append(await asyncio.to_thread(bare_pod, "default", "gvisor"))
            except subprocess.CalledProcessError as error:
                print(f"bare pod run failed (left out): {error}")
    print("--- side by side ---")
    report("warm python: POST -> first stdout byte", warm)
    report("cold python: POST -> first stdout byte", cold)
    report("bare gVisor pod (kubectl): create -> first line", bare)
    report("pool refill: POST (claim) -> a ready warm pod again", refill)
    print(
        f"warm p50/p95 {pct(warm, 50) * 1000:.0f}/{pct(warm, 95) * 1000:.0f} ms | "
        f"cold {pct(cold, 50) * 1000:.0f}/{pct(cold, 95) * 1000:.0f} ms | "
        f"bare floor {pct(bare, 50) * 1000:.0f}/{pct(bare, 95) * 1000:.0f} ms | "
        f"cold/warm p50 = {statistics.median(cold) / statistics.median(warm):.1f}x"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    print(f"warm vs cold start ({load_average()})")
    with bench_namespace({}) as namespace:
        proc, base = start_api(namespace)
        try:
            await bench(namespace, base, args.runs)
        finally:
            stop(proc)


if __name__ == "__main__":
    asyncio.run(main())
