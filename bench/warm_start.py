"""Warm vs cold start (issue 12): POST /session -> first stdout byte of a hello world,
from a warm pool and from a cold pod, beside the bare gVisor pod floor.

    python bench/warm_start.py --runs 20 [--language python]

Own namespace, operator and api. Warm: a SandboxPool of one pod of the language;
each run waits for a ready warm pod, so every run claims one (and the time from the
claim until the pool is ready again is the refill time). Cold: the same pool scaled
to 0. Floor: the same program in a bare gVisor pod made with kubectl
(``pod_start.py``; compile included, same CPU and memory limits as a session).
Figures, not pass/fail. ``bench/matrix.py`` runs the same per language.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import statistics
import subprocess
import time
from dataclasses import dataclass, field

import httpx
from _common import kubectl, report
from _common import percentile as pct
from _timing import HELLO, first_byte, run_main
from icee_core import names
from icee_core.languages import Language, load_registry
from icee_core.sources import main_file_name
from pod_start import kubectl as pod_kubectl
from pod_start import one as bare_pod

# The session's own limits (the server's maxima), for the bare pod floor.
BARE_RESOURCES = {"limits": {"cpu": "500m", "memory": "200Mi"}}


def ready_warm(namespace: str, language: str) -> int:
    selector = f"{names.LABEL_POOL}={language}"
    listed = kubectl("-n", namespace, "get", "pods", "-l", selector, "-o", "json")
    pods = json.loads(listed or '{"items": []}')["items"]
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


async def wait_ready(namespace: str, language: str, count: int, within: float = 180) -> float:
    """Seconds until the pool has at least ``count`` ready, unclaimed pods."""
    t0 = time.perf_counter()
    while await asyncio.to_thread(ready_warm, namespace, language) < count:
        if time.perf_counter() - t0 > within:
            raise RuntimeError(f"the {language} pool did not reach {count} ready pods")
        await asyncio.sleep(0.1)
    return time.perf_counter() - t0


async def wait_empty(namespace: str, language: str) -> None:
    for _ in range(600):
        if not await asyncio.to_thread(ready_warm, namespace, language):
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(2)  # the api's cache follows


def pool(namespace: str, language: str, replicas: int) -> None:
    body = {
        "apiVersion": names.API_VERSION,
        "kind": "SandboxPool",
        "metadata": {"name": language, "namespace": namespace},
        "spec": {"language": language, "replicas": replicas},
    }
    pod_kubectl("apply", "-f", "-", stdin=json.dumps(body))


def bare_command(language: Language) -> list[str]:
    """The hello world as a shell command for a bare pod: write, compile, run."""
    main = main_file_name(language, HELLO[language.id])
    stages = language.commands(main)
    steps = [f'printf "%s" "$SRC" > {shlex.quote(main)}']
    if stages.compile:
        steps.append(stages.compile)
    steps.append(stages.run)
    return ["/bin/sh", "-c", " && ".join(steps)]


def bare_first(language: Language) -> float:
    return bare_pod(
        "default", "gvisor", language.image, bare_command(language),
        {**language.env, "SRC": HELLO[language.id]}, BARE_RESOURCES, "Hello World",
    )  # fmt: skip


@dataclass
class StartFigures:
    """One language's start figures (seconds)."""

    warm: list[float] = field(default_factory=list)
    refill: list[float] = field(default_factory=list)
    cold: list[float] = field(default_factory=list)
    bare: list[float] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # runs left out, and why


async def first_run(
    http: httpx.AsyncClient, base: str, language: str, into: list[float], figures: StartFigures
) -> None:
    """One run; a failed one (e.g. the node's runtime restarted) is reported, left out."""
    try:
        into.append(await first_byte(http, base, language))
    except (RuntimeError, OSError, httpx.HTTPError) as error:
        print(f"  {language} run failed (left out): {error}", flush=True)
        figures.failed.append(str(error)[:300])


async def warm_runs(
    http: httpx.AsyncClient, base: str, namespace: str, language: str, runs: int,
    figures: StartFigures,
) -> None:  # fmt: skip
    """Pool of one; each run claims a ready warm pod, then times its refill."""
    pool(namespace, language, 1)
    await wait_ready(namespace, language, 1)
    for _ in range(runs):
        await wait_ready(namespace, language, 1)
        await asyncio.sleep(0.5)  # the api's cache has the pod's latest version
        t0 = time.perf_counter()
        before = len(figures.warm)
        await first_run(http, base, language, figures.warm, figures)
        if len(figures.warm) > before:
            await wait_ready(namespace, language, 1)
            figures.refill.append(time.perf_counter() - t0)


async def cold_runs(
    http: httpx.AsyncClient, base: str, namespace: str, language: Language, runs: int,
    figures: StartFigures,
) -> None:  # fmt: skip
    """Pool scaled to 0; cold sessions interleaved with bare pods (same load)."""
    pool(namespace, language.id, 0)
    await wait_empty(namespace, language.id)
    for _ in range(runs):
        await first_run(http, base, language.id, figures.cold, figures)
        try:
            figures.bare.append(await asyncio.to_thread(bare_first, language))
        except (subprocess.CalledProcessError, AssertionError, IndexError) as error:
            print(f"bare pod run failed (left out): {error}")


def ms(values: list[float], p: float) -> str:
    return f"{pct(values, p) * 1000:.0f}" if values else "-"


async def bench(base: str, namespace: str, args: argparse.Namespace) -> None:
    language = load_registry().get(args.language)
    figures = StartFigures()
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        pool(namespace, language.id, 1)
        await wait_ready(namespace, language.id, 1)
        await first_byte(http, base, language.id)  # warm-up: connections, page cache
        await warm_runs(http, base, namespace, language.id, args.runs, figures)
        await cold_runs(http, base, namespace, language, args.runs, figures)
    print("--- side by side ---")
    report(f"warm {language.id}: POST -> first stdout byte", figures.warm)
    report(f"cold {language.id}: POST -> first stdout byte", figures.cold)
    report("bare gVisor pod (kubectl): create -> first line", figures.bare)
    report("pool refill: POST (claim) -> a ready warm pod again", figures.refill)
    w, c = figures.warm, figures.cold
    print(
        f"warm p50/p95 {ms(w, 50)}/{ms(w, 95)} ms | cold {ms(c, 50)}/{ms(c, 95)} ms | "
        f"bare floor {ms(figures.bare, 50)}/{ms(figures.bare, 95)} ms | "
        f"cold/warm p50 = {statistics.median(c) / statistics.median(w):.1f}x"
    )


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--language", default="python", choices=sorted(HELLO))


if __name__ == "__main__":
    run_main(__doc__, bench, arguments, own_only=True)
