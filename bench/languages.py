"""First-output latency per language, and the size of each language's sandbox image.

    python bench/languages.py [--runs 10] [--url http://127.0.0.1:30080]

Each run: POST /session with the language's hello world, open the WebSocket right
away, stop the clock at the first stdout frame (and at the final state). Runs are
sequential and round-robin over the languages, after one warm-up each, so every
run is a cold start of its own sandbox pod and all languages see the same machine.

The api: --url, else $ICEE_API_URL, else this script starts an operator and an api
of the working tree in a namespace of its own (like tests/integration/conftest.py)
and removes them afterwards. Languages the api does not serve are reported, not run.
Image sizes are the OCI archives cluster/images.sh built (uncompressed layers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
from _common import BIN, create, free_port, loads, percentile, start_api, ws_url
from icee_core.languages import load_registry
from websockets.asyncio.client import connect

REPO = Path(__file__).resolve().parents[1]
KUBECTL = str(REPO / "cluster" / "kubectl")
CRD = REPO / "charts" / "icee" / "crds" / "codesession.yaml"
IMAGES = Path.home() / ".cache" / "icee" / "images"

HELLO = {
    "python": "print('Hello World')\n",
    "javascript": "console.log('Hello World');\n",
    "java": (
        "public class Main {\n    public static void main(String[] args) {\n"
        '        System.out.println("Hello World");\n    }\n}\n'
    ),
    "cpp": '#include <iostream>\nint main() { std::cout << "Hello World" << std::endl; }\n',
    "ruby": 'puts "Hello World"\n',
}


def kubectl(*args: str) -> str:
    return subprocess.run([KUBECTL, *args], capture_output=True, text=True, check=True).stdout


@contextlib.contextmanager
def own_api() -> Iterator[str]:
    """An operator and an api of this tree in a fresh namespace; yields the api URL."""
    if not kubectl("get", "crd", "codesessions.icee.dev", "--ignore-not-found").strip():
        kubectl("apply", "-f", str(CRD))
        kubectl("wait", "--for=condition=Established", "crd/codesessions.icee.dev")
    namespace = f"icee-bench-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", namespace)
    env = {**os.environ, "ICEE_NAMESPACE": namespace, "ICEE_HEALTH_PORT": str(free_port())}
    operator = subprocess.Popen(
        [str(BIN / "icee-operator")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    api = None
    try:
        api, url = start_api(namespace)
        yield url
    finally:
        for process in (api, operator):
            if process is not None:
                process.terminate()
                process.wait(30)
        kubectl("delete", "namespace", namespace, "--wait=false")


async def one(http: httpx.AsyncClient, base: str, language: str) -> tuple[float, float]:
    """Seconds from POST to the first stdout frame and to the final state."""
    t0 = time.perf_counter()
    sid = await create(http, HELLO[language], language=language)
    first = done = 0.0
    async with connect(ws_url(base, sid)) as ws:
        async for raw in ws:
            msg = loads(raw)
            if msg["type"] == "stdout" and not first:
                first = time.perf_counter() - t0
            if msg["type"] == "state" and msg["state"] in ("finished", "terminated"):
                done = time.perf_counter() - t0
                if msg.get("reason") != "Completed":
                    raise SystemExit(f"{language}: hello world ended with {msg}")
    return first, done


async def measure(base: str, runs: int) -> None:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--url", default=os.environ.get("ICEE_API_URL"))
    args = parser.parse_args()
    if args.url:
        asyncio.run(measure(args.url.rstrip("/"), args.runs))
    else:
        os.environ.setdefault("KUBECONFIG", "/var/lib/icee-cluster/kubeconfig")
        with own_api() as url:
            asyncio.run(measure(url, args.runs))
    image_sizes()


if __name__ == "__main__":
    main()
