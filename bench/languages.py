"""First-output latency per language, and the size of each language's sandbox image.

    python bench/languages.py [--runs 10] [--url http://127.0.0.1:30080]

Each run: POST /session with the language's hello world, open the WebSocket right
away, stop the clock at the first stdout frame (and at the final state). Runs are
sequential and round-robin over the languages, after one warm-up each, so all
languages see the same machine (with --url, a session may claim a warm pod of the
api's pools; our own api has none, so every run is a cold start).

The api: --url, else this script starts an operator and an api of the working tree
in a namespace of its own and removes them afterwards. Languages the api does not
serve are reported, not run. Image sizes are the OCI archives cluster/images.sh built
(uncompressed layers).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import httpx
from _common import percentile
from _timing import HELLO, run_main, timed_session
from icee_core.languages import load_registry

REPO = Path(__file__).resolve().parents[1]
IMAGES = Path.home() / ".cache" / "icee" / "images"


async def one(http: httpx.AsyncClient, base: str, language: str) -> tuple[float, float]:
    """Seconds from POST to the first stdout frame and to the final state."""
    times = await timed_session(http, base, HELLO[language], language)
    if times.reason != "Completed" or times.first is None or times.final is None:
        raise SystemExit(f"{language}: hello world ended with {times.frames}")
    return times.first, times.final


async def measure(base: str, _namespace: str, args: argparse.Namespace) -> None:
    runs: int = args.runs
    # No keep-alive: a run outlasts uvicorn's 5 s keep-alive, and reusing a connection
    # the server is closing at that moment fails with a ReadError.
    no_reuse = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=no_reuse) as http:
        served = [lang["id"] for lang in (await http.get("/languages")).json()["languages"]]
        languages = [lang for lang in served if lang in HELLO]
        skipped = sorted((set(served) - set(HELLO)) | (set(HELLO) - set(served)))
        for language in languages:  # warm-up: image in the page cache, connections
            await one(http, base, language)
        firsts: dict[str, list[float]] = {lang: [] for lang in languages}
        dones: dict[str, list[float]] = {lang: [] for lang in languages}
        for _ in range(runs):
            for language in languages:
                first, done = await one(http, base, language)
                firsts[language].append(first)
                dones[language].append(done)
    print(f"POST /session -> first stdout byte of a hello world, {runs} sequential runs each")
    print(f"{'language':<12}{'p50':>9}{'min':>9}{'max':>9}{'final p50':>12}")
    for language in languages:
        ms = [s * 1000 for s in firsts[language]]
        print(
            f"{language:<12}{percentile(ms, 50):>7.0f}ms{min(ms):>7.0f}ms{max(ms):>7.0f}ms"
            f"{percentile([s * 1000 for s in dones[language]], 50):>10.0f}ms"
        )
    if skipped:
        print(f"not measured (not served by this api, or no hello world here): {skipped}")
    image_sizes()


def image_sizes() -> None:
    recipes = {}
    for recipe in (REPO / "cluster" / "images").glob("*.recipe"):
        for line in recipe.read_text().splitlines():
            if line.startswith("IMAGE="):
                recipes[line.removeprefix("IMAGE=")] = recipe.stem
    print("sandbox images (OCI archive, uncompressed)")
    for language in load_registry():
        name = recipes.get(language.image)
        archives = sorted(IMAGES.glob(f"{name}-*.tar"), key=lambda p: p.stat().st_mtime)
        size = f"{archives[-1].stat().st_size / 1e6:.0f} MB" if name and archives else "not built"
        print(f"{language.id:<12}{language.image:<28}{size:>8}")


if __name__ == "__main__":
    run_main(__doc__, measure, lambda p: p.add_argument("--runs", type=int, default=10))
