"""The benchmark matrix (``make bench``): every start and density figure of issue 12 in
one run, side by side, each beside a baseline measured in the same run.

    python bench/matrix.py                          # the whole matrix, ~20 min
    python bench/matrix.py --runs 5 --densities 25,50 --languages python,cpp

Own namespace, operator and api (this tree). Sections, in order:

1. starts per language: POST -> first stdout byte of a hello world from a warm pool
   (pool of one, each run claims a ready pod) and cold (pool 0), beside the bare floor
   (the same program in a bare gVisor pod made with kubectl; ``warm_start.py``);
2. burst: 30 sessions at once against a python pool of 5, beside the same burst with
   no pool;
3. sustained: clients running hello worlds back to back for a minute, with a python
   pool of 5, beside the same with no pool: sessions per minute;
4. density: echo round trip with 25, 50, 100 live sessions beside one live session
   (``density.py``), with CPU per process group while they open and live.

Every figure is printed with the load average when it was taken (the machine may be
shared). Writes a PNG chart of the distributions (``--chart``, default
docs/benchmarks.png) and the raw figures as JSON (``--json``). Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import httpx
from _common import Refused, percentile
from _timing import HELLO, run_main, timed_session
from density import OPERATOR_ENV, SETTINGS, DensityFigures, client_address, live_sessions
from icee_core.languages import load_registry
from warm_start import (
    StartFigures,
    cold_runs,
    first_run,
    pool,
    wait_empty,
    wait_ready,
    warm_runs,
)

REPO = Path(__file__).resolve().parents[1]


def load() -> float:
    return os.getloadavg()[0]


@dataclass
class Batch:
    """A set of sessions' first-byte times (s), what went wrong, and the load."""

    firsts: list[float] = field(default_factory=list)
    failed: int = 0
    refusals: int = 0
    seconds: float = 0.0
    load: float = 0.0


@dataclass
class Results:
    starts: dict[str, StartFigures] = field(default_factory=dict)
    start_load: dict[str, float] = field(default_factory=dict)
    burst: dict[str, Batch] = field(default_factory=dict)
    sustained: dict[str, Batch] = field(default_factory=dict)
    density: dict[int, DensityFigures] = field(default_factory=dict)


async def session_first(
    http: httpx.AsyncClient, base: str, batch: Batch, client: str | None = None
) -> None:
    """One python hello world as a patient client; its first byte goes into ``batch``."""
    try:
        times = await timed_session(http, base, HELLO["python"], admit_within=300, client=client)
    except (Refused, httpx.HTTPError, OSError) as error:
        print(f"  session failed: {error!r}")
        batch.failed += 1
        return
    batch.refusals += len(times.refusals)
    if times.first is None or times.reason != "Completed":
        print(f"  session {times.session_id} ended {times.reason}")
        batch.failed += 1
    else:
        batch.firsts.append(times.first)


async def set_pool(namespace: str, size: int) -> None:
    pool(namespace, "python", size)
    if size:
        await wait_ready(namespace, "python", size, within=300)
    else:
        await wait_empty(namespace, "python")


async def burst(http: httpx.AsyncClient, base: str, namespace: str, size: int, n: int) -> Batch:
    await set_pool(namespace, size)
    await asyncio.sleep(1)  # the api's cache has the pool's pods
    batch = Batch()
    t0 = time.perf_counter()
    await asyncio.gather(*(session_first(http, base, batch, client_address(i)) for i in range(n)))
    batch.seconds, batch.load = time.perf_counter() - t0, load()
    return batch


async def sustained(
    http: httpx.AsyncClient, base: str, namespace: str, size: int, clients: int, seconds: float
) -> Batch:
    """``clients`` loops of back-to-back sessions; those that began within ``seconds``
    count (the rate is completed sessions over the time until the last one ended)."""
    await set_pool(namespace, size)
    batch = Batch()
    t0 = time.perf_counter()

    async def client(i: int) -> None:
        while time.perf_counter() - t0 < seconds:
            await session_first(http, base, batch, client_address(i))

    await asyncio.gather(*(client(i) for i in range(clients)))
    batch.seconds, batch.load = time.perf_counter() - t0, load()
    return batch


def per_minute(batch: Batch) -> float:
    return len(batch.firsts) / batch.seconds * 60 if batch.seconds else 0.0


SECTIONS = ("starts", "burst", "sustained", "density")


async def run(base: str, namespace: str, args: argparse.Namespace) -> Results:
    """The sections asked for, in that order; Ctrl-C ends the current one and keeps
    what was measured (the table and chart still come)."""
    results = Results()
    sections = {
        "starts": starts, "burst": bursts, "sustained": sustained_runs, "density": densities,
    }  # fmt: skip
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as http:
            for name in args.sections.split(","):
                await sections[name](http, base, namespace, args, results)
    except asyncio.CancelledError:
        print("interrupted: the figures so far", flush=True)
    return results


async def starts(
    http: httpx.AsyncClient, base: str, namespace: str, args: argparse.Namespace,
    results: Results,
) -> None:  # fmt: skip
    registry = load_registry()
    languages = [registry.get(lang) for lang in args.languages.split(",") if lang]
    for language in languages:
        print(f"== starts: {language.id} (load {load():.1f})", flush=True)
        figures = results.starts[language.id] = StartFigures()
        pool(namespace, language.id, 1)
        await wait_ready(namespace, language.id, 1, within=300)
        # warm-up: page cache, connections
        await first_run(http, base, language.id, [], figures)
        await warm_runs(http, base, namespace, language.id, args.runs, figures)
        await cold_runs(http, base, namespace, language, args.runs, figures)
        results.start_load[language.id] = load()


async def bursts(
    http: httpx.AsyncClient, base: str, namespace: str, args: argparse.Namespace,
    results: Results,
) -> None:  # fmt: skip
    print(f"== burst of {args.burst} (load {load():.1f})", flush=True)
    results.burst["pool 5"] = await burst(http, base, namespace, 5, args.burst)
    results.burst["no pool"] = await burst(http, base, namespace, 0, args.burst)


async def sustained_runs(
    http: httpx.AsyncClient, base: str, namespace: str, args: argparse.Namespace,
    results: Results,
) -> None:  # fmt: skip
    print(f"== sustained, {args.clients} clients (load {load():.1f})", flush=True)
    results.sustained["pool 5"] = await sustained(
        http, base, namespace, 5, args.clients, args.seconds
    )
    results.sustained["no pool"] = await sustained(
        http, base, namespace, 0, args.clients, args.seconds
    )


async def densities(
    http: httpx.AsyncClient, base: str, namespace: str, args: argparse.Namespace,
    results: Results,
) -> None:  # fmt: skip
    await set_pool(namespace, 0)  # the density sessions start cold, as before
    for count in [1, *(int(n) for n in args.densities.split(",") if n)]:
        print(f"== density: {count} live (load {load():.1f})", flush=True)
        interval, window = (0.1, 10.0) if count == 1 else (3.0, args.window)
        settle = 0.0 if count == 1 else args.settle
        figures = await live_sessions(
            base, namespace, count, rate=4.0, interval=interval, window=window, settle=settle
        )
        print(figures.summary())
        print(figures.opening.table(f"CPU while {count} sessions opened"))
        print(figures.living.table(f"CPU while {count} sessions lived"))
        results.density[count] = figures
        await asyncio.sleep(10)  # the pods of the last count are gone


def ms(values: list[float], p: float) -> str:
    return f"{percentile(values, p) * 1000:.0f}" if values else "-"


def ratio(a: list[float], b: list[float], p: float = 50) -> str:
    return f"{percentile(a, p) / percentile(b, p):.2f}x" if a and b else "-"


def table(results: Results) -> str:
    """The side-by-side table, in Markdown."""
    out = [
        "| language | warm p50/p95 | cold p50/p95 | bare pod p50/p95 | warm/bare | cold/bare "
        "| refill p50 | failed | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for lang, f in results.starts.items():
        out.append(
            f"| {lang} | {ms(f.warm, 50)}/{ms(f.warm, 95)} ms | {ms(f.cold, 50)}/{ms(f.cold, 95)}"
            f" ms | {ms(f.bare, 50)}/{ms(f.bare, 95)} ms | {ratio(f.warm, f.bare)} | "
            f"{ratio(f.cold, f.bare)} | {ms(f.refill, 50)} ms | {len(f.failed)} | "
            f"{results.start_load.get(lang, load()):.1f} |"
        )
    out += ["", "| run | first byte p50/p95/max | failed | refused answers | took | load |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for name, b in results.burst.items():
        out.append(
            f"| burst of {len(b.firsts) + b.failed}, {name} | {ms(b.firsts, 50)}/"
            f"{ms(b.firsts, 95)}/{ms(b.firsts, 100)} ms | {b.failed} | {b.refusals} | "
            f"{b.seconds:.0f} s | {b.load:.1f} |"
        )
    for name, b in results.sustained.items():
        out.append(
            f"| sustained, {name}: {per_minute(b):.0f} sessions/min | {ms(b.firsts, 50)}/"
            f"{ms(b.firsts, 95)}/{ms(b.firsts, 100)} ms | {b.failed} | {b.refusals} | "
            f"{b.seconds:.0f} s | {b.load:.1f} |"
        )
    if all(k in d for d in (results.burst, results.sustained) for k in ("pool 5", "no pool")):
        out.append(
            f"\nburst p50 no pool / pool 5: "
            f"{ratio(results.burst['no pool'].firsts, results.burst['pool 5'].firsts)}; "
            f"sustained pool 5 / no pool: "
            f"{per_minute(results.sustained['pool 5']) / max(1e-9, per_minute(results.sustained['no pool'])):.2f}x"  # noqa: E501
        )
    base = results.density.get(1)
    out += ["", "| live sessions | up | never ran | refused answers | POST->running p50/p95 "
            "| echo p50/p95/p99 | p99 / 1 live | CPU busy (opening, living) | load "
            "| settled: echo p50/p95/p99 | load |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for count, d in results.density.items():
        cores = os.cpu_count() or 1
        busy = [u.machine / u.seconds / cores * 100 if u.seconds else 0 for u in
                (d.opening, d.living)]  # fmt: skip
        out.append(
            f"| {count} | {d.up} | {sum(d.never_ran.values())} | {sum(d.refusals.values())} | "
            f"{ms(d.starts, 50)}/{ms(d.starts, 95)} ms | {ms(d.rtts, 50)}/{ms(d.rtts, 95)}/"
            f"{ms(d.rtts, 99)} ms | {ratio(d.rtts, base.rtts, 99) if base else '-'} | "
            f"{busy[0]:.0f}%, {busy[1]:.0f}% | {d.load:.1f} | {ms(d.settled_rtts, 50)}/"
            f"{ms(d.settled_rtts, 95)}/{ms(d.settled_rtts, 99)} ms | "
            f"{d.settled_load:.1f} |"
        )
    return "\n".join(out)


def chart(results: Results, path: Path) -> None:
    """Box plots of the distributions (log scale): starts per language, burst and
    sustained first bytes, echo round trips per live-session count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 5.5), width_ratios=[3, 1.3, 1.3])
    ax = axes[0]
    series, labels, colors = [], [], []
    palette = {"warm": "#2a9d8f", "cold": "#e76f51", "bare": "#8d99ae"}
    for lang, f in results.starts.items():
        for kind in ("warm", "cold", "bare"):
            values = getattr(f, kind)
            if values:
                series.append([v * 1000 for v in values])
                labels.append(f"{lang}\n{kind}")
                colors.append(palette[kind])
    if series:
        box = ax.boxplot(series, tick_labels=labels, patch_artist=True, showfliers=True)
        for patch, color in zip(box["boxes"], colors, strict=True):
            patch.set_facecolor(color)
    ax.set_yscale("log")
    ax.set_ylabel("POST -> first stdout byte (ms)")
    ax.set_title("start: warm pool / cold pod / bare gVisor pod (kubectl)")
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="y", alpha=0.3)

    ax = axes[1]
    runs = [(f"burst\n{k}", b.firsts) for k, b in results.burst.items()]
    runs += [(f"sustained\n{k}\n{per_minute(b):.0f}/min", b.firsts)
             for k, b in results.sustained.items()]  # fmt: skip
    runs = [(k, v) for k, v in runs if v]
    if runs:
        ax.boxplot([[x * 1000 for x in v] for _, v in runs], tick_labels=[k for k, _ in runs])
    ax.set_yscale("log")
    sizes = {len(b.firsts) + b.failed for b in results.burst.values()}
    ax.set_title(f"burst of {max(sizes, default=0)} / sustained (python)")
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="y", alpha=0.3)

    ax = axes[2]
    dens = [(f"{n} live\nload {d.load:.0f}", d.rtts) for n, d in results.density.items() if d.rtts]
    dens += [(f"{n} settled\nload {d.settled_load:.0f}", d.settled_rtts)
             for n, d in results.density.items() if d.settled_rtts]  # fmt: skip
    if dens:
        ax.boxplot([[x * 1000 for x in v] for _, v in dens], tick_labels=[k for k, _ in dens],
                   whis=(1, 99))  # fmt: skip
    ax.set_yscale("log")
    ax.set_ylabel("echo round trip (ms), whiskers p1-p99")
    ax.set_title("echo with N live sessions")
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="y", alpha=0.3)
    loads = ", ".join(f"{k} {v:.1f}" for k, v in results.start_load.items())
    fig.suptitle(
        f"icee make bench, {os.cpu_count()} cores; load average at the end of each language: "
        f"{loads}",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    print(f"chart: {path}")


def plain(obj: Any) -> Any:
    """JSON-ready copy (``dataclasses.asdict`` would rebuild a Counter from its items)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    return obj


def write_json(results: Results, args: argparse.Namespace) -> None:
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(plain(results), indent=1))
        print(f"figures: {args.json}")


def write(results: Results, args: argparse.Namespace) -> None:
    write_json(results, args)
    if args.chart:
        chart(results, Path(args.chart))


async def bench(base: str, namespace: str, args: argparse.Namespace) -> None:
    results = await run(base, namespace, args)
    # First: whatever happens to the table, the figures are kept.
    await asyncio.to_thread(write_json, results, args)
    print("--- side by side (ms; each ratio from the same run) ---")
    text = table(results)
    print(text)
    print(f"(load average now {load():.1f} on {os.cpu_count()} cores)")
    await asyncio.to_thread(write, results, args)


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sections", default=",".join(SECTIONS),
        help=f"which, in this order (default {','.join(SECTIONS)})",
    )  # fmt: skip
    parser.add_argument("--runs", type=int, default=10, help="runs per language and kind")
    parser.add_argument("--languages", default=",".join(HELLO))
    parser.add_argument("--burst", type=int, default=30)
    parser.add_argument("--clients", type=int, default=6, help="sustained: parallel clients")
    parser.add_argument("--seconds", type=float, default=60, help="sustained: how long")
    parser.add_argument("--densities", default="25,50,100", help="live session counts")
    parser.add_argument("--window", type=float, default=30, help="density: measured seconds")
    parser.add_argument(
        "--settle", type=float, default=60, help="density: seconds before the settled window"
    )
    parser.add_argument("--chart", default=str(REPO / "docs" / "benchmarks.png"))
    parser.add_argument("--json", default=str(REPO / "artifacts" / "bench" / "matrix.json"))


if __name__ == "__main__":
    run_main(__doc__, bench, arguments, own_only=True, operator_env=OPERATOR_ENV, **SETTINGS)
