"""Kubernetes clients side by side: our own (icee_kube) vs kubernetes_asyncio vs lightkube.

    python bench/kube_client.py                  # 200 gets and patches, 100 watches each
    python bench/kube_client.py -n 50 --watches 50
    python bench/kube_client.py --operator-only    # the idle operator alone

Each client runs in a child process of its own (so one's imports do not count
towards another's memory) against the real cluster (``$KUBECONFIG``), in a
namespace of this run, and reports:

- RSS after import: the process's RSS once the library is imported, over a bare
  interpreter with asyncio (the same child measures both);
- RSS per 100 watches: growth after opening that many concurrent watches (each on
  one ConfigMap, confirmed open by its first event), scaled to 100;
- get / patch latency: p50 and p95 of sequential GETs and merge PATCHes of one
  ConfigMap, each returning the parsed object (a dict for ours, models for the others).

Then the operator's own RSS, idle in that namespace (kopf plus our calls; kopf
imports kubernetes_asyncio's models too whenever that package is installed).

A client that is not installed is reported as such (lightkube is no dependency of
icee: ``pip install lightkube`` to compare). Figures, not a pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import (  # noqa: E402
    BIN,
    bench_namespace,
    free_port,
    kubectl,
    load_average,
    percentile,
    rss_bytes,
    stop,
)

CLIENTS = ("icee_kube", "kubernetes_asyncio", "lightkube")
MERGE_PATCH = "application/merge-patch+json"
MiB = 1024 * 1024


# -- one client per child process ---------------------------------------------------------


class Driver:
    """get / patch / watch of one ConfigMap through one client library."""

    async def get(self, name: str) -> Any: ...
    async def patch(self, name: str, data: dict[str, str]) -> Any: ...
    def watch(self, name: str) -> AsyncIterator[Any]: ...
    async def close(self) -> None: ...


def import_driver(which: str, namespace: str, connections: int) -> Callable[[], Driver]:
    """Import the library (timed by RSS around this call) and return a driver factory."""
    if which == "icee_kube":
        from icee_kube.client import KubeClient, watch_query
        from icee_kube.paths import core_path

        class Ours(Driver):
            def __init__(self) -> None:
                self.kube = KubeClient.from_kubeconfig(None, connections)

            async def get(self, name: str) -> Any:
                return await self.kube.call("GET", core_path(namespace, "configmaps", name))

            async def patch(self, name: str, data: dict[str, str]) -> Any:
                path = core_path(namespace, "configmaps", name)
                body = {"data": data}
                return await self.kube.call("PATCH", path, body=body, content_type=MERGE_PATCH)

            async def watch(self, name: str) -> AsyncIterator[Any]:
                query = watch_query(None, 300, field_selector=f"metadata.name={name}")
                async for event in self.kube.watch(core_path(namespace, "configmaps"), query, 300):
                    yield event

            async def close(self) -> None:
                await self.kube.close()

        return Ours

    if which == "kubernetes_asyncio":
        from kubernetes_asyncio import client, config, watch

        class Theirs(Driver):
            async def open(self) -> None:
                cfg = client.Configuration()
                await config.load_kube_config(client_configuration=cfg)
                cfg.connection_pool_maxsize = connections
                self.api_client = client.ApiClient(cfg)
                self.core = client.CoreV1Api(self.api_client)

            async def get(self, name: str) -> Any:
                return await self.core.read_namespaced_config_map(name, namespace)

            async def patch(self, name: str, data: dict[str, str]) -> Any:
                return await self.core.patch_namespaced_config_map(
                    name, namespace, {"data": data}, _content_type=MERGE_PATCH
                )

            async def watch(self, name: str) -> AsyncIterator[Any]:
                async with watch.Watch() as w:
                    async for event in w.stream(
                        self.core.list_namespaced_config_map,
                        namespace,
                        field_selector=f"metadata.name={name}",
                        timeout_seconds=300,
                    ):
                        yield event

            async def close(self) -> None:
                await self.api_client.close()

        return Theirs

    from lightkube import AsyncClient
    from lightkube.resources.core_v1 import ConfigMap
    from lightkube.types import PatchType

    class Light(Driver):
        def __init__(self) -> None:
            self.client = AsyncClient(namespace=namespace)

        async def get(self, name: str) -> Any:
            return await self.client.get(ConfigMap, name)

        async def patch(self, name: str, data: dict[str, str]) -> Any:
            return await self.client.patch(
                ConfigMap, name, {"data": data}, patch_type=PatchType.MERGE
            )

        async def watch(self, name: str) -> AsyncIterator[Any]:
            async for event in self.client.watch(
                ConfigMap, fields={"metadata.name": name}, server_timeout=300
            ):
                yield event

        async def close(self) -> None:
            await self.client.close()

    return Light


async def child(which: str, namespace: str, n: int, watches: int) -> dict[str, Any]:
    pid = os.getpid()
    before = rss_bytes(pid)
    try:
        factory = import_driver(which, namespace, connections=watches + 10)
    except ImportError as exc:
        return {"client": which, "missing": str(exc)}
    imported = rss_bytes(pid)
    driver = factory()
    opener: Callable[[], Awaitable[None]] | None = getattr(driver, "open", None)
    if opener is not None:
        await opener()
    try:
        gets, patches = [], []
        await driver.get("bench-0")  # connection and TLS set up outside the figures
        for i in range(n):
            t0 = time.perf_counter()
            await driver.get("bench-0")
            gets.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await driver.patch("bench-0", {"i": str(i)})
            patches.append(time.perf_counter() - t0)
        ready = rss_bytes(pid)
        opened = asyncio.Queue[None]()

        async def hold(name: str) -> None:
            async for _ in driver.watch(name):
                opened.put_nowait(None)  # the first event: the watch is open

        tasks = [asyncio.create_task(hold(f"bench-{i % 10}")) for i in range(watches)]
        async with asyncio.timeout(120):
            for _ in range(watches):
                await opened.get()
        await asyncio.sleep(1)
        watching = rss_bytes(pid)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await driver.close()
    ms = [s * 1000 for s in gets], [s * 1000 for s in patches]
    return {
        "client": which,
        "import_mib": (imported - before) / MiB,
        "rss_mib": imported / MiB,
        "watch_mib_per_100": (watching - ready) / MiB * 100 / watches,
        "get_p50": percentile(ms[0], 50),
        "get_p95": percentile(ms[0], 95),
        "patch_p50": percentile(ms[1], 50),
        "patch_p95": percentile(ms[1], 95),
    }


def operator_rss(namespace: str, settle: float = 10) -> float:
    """MiB of an idle ``icee-operator`` once kopf is up (its liveness endpoint answers)."""
    port = free_port()
    env = {**os.environ, "ICEE_NAMESPACE": namespace, "ICEE_HEALTH_PORT": str(port)}
    proc = subprocess.Popen(
        [str(BIN / "icee-operator")], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                time.sleep(0.2)
        time.sleep(settle)
        return rss_bytes(proc.pid) / MiB
    finally:
        stop(proc)


# -- the run ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=200, help="gets and patches per client")
    parser.add_argument("--watches", type=int, default=100)
    parser.add_argument("--operator-only", action="store_true", help="only the idle operator's RSS")
    parser.add_argument("--child", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = asyncio.run(child(args.child, args.namespace, args.n, args.watches))
        print(json.dumps(result))
        return

    if args.operator_only:
        with bench_namespace() as namespace:
            print(f"icee-operator idle RSS: {operator_rss(namespace):.1f} MiB ({load_average()})")
        return
    rows = []
    with bench_namespace() as namespace:
        for i in range(10):
            kubectl("create", "configmap", f"bench-{i}", "-n", namespace, "--from-literal=i=0")
        for which in CLIENTS:
            out = subprocess.run(
                [sys.executable, __file__, "--child", which, "--namespace", namespace,
                 "-n", str(args.n), "--watches", str(args.watches)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if out.returncode != 0:
                rows.append({"client": which, "missing": f"failed: {out.stderr.strip()[-300:]}"})
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        operator_mib = operator_rss(namespace)
    print(f"kube clients: n={args.n} gets and patches, {args.watches} watches; {load_average()}")
    header = (
        f"{'client':<20} {'import MiB':>10} {'RSS MiB':>8} {'MiB/100 watches':>16} "
        f"{'get p50/p95 ms':>15} {'patch p50/p95 ms':>17}"
    )
    print(header)
    for r in rows:
        if "missing" in r:
            print(f"{r['client']:<20} not measured: {r['missing']}")
            continue
        print(
            f"{r['client']:<20} {r['import_mib']:>10.1f} {r['rss_mib']:>8.1f} "
            f"{r['watch_mib_per_100']:>16.1f} "
            f"{r['get_p50']:>7.1f}/{r['get_p95']:<7.1f} "
            f"{r['patch_p50']:>8.1f}/{r['patch_p95']:<8.1f}"
        )
    print(f"icee-operator idle RSS: {operator_mib:.1f} MiB")


if __name__ == "__main__":
    main()
