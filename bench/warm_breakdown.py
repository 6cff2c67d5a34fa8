"""Where a warm start goes (issue 12): POST /session -> first stdout byte of a Python
hello world on a claimed warm pod, step by step, beside the same program run in an
already running sandbox.

    python bench/warm_breakdown.py --runs 20

Own namespace, operator and api; a python SandboxPool of one, and each run waits for
a ready warm pod, so every run claims one. Per run, the client's clock (POST -> 201,
WebSocket open, 'pending', 'running', first byte) and the api's (its
``icee_start_mark_seconds`` histogram, read from /metrics before and after the run:
the sums' difference is that run's marks, in seconds since its WebSocket was
accepted: CodeSession read, stream claimed, warm pod claimed, spec.start written,
pod seen running, attach open, request sent, the runner's "stage began" frame, first
output). Baselines, in the same run: (a) the program's own run time inside a
running gVisor sandbox of the python image (``/bin/sh -c 'python3 -u main.py'``, as
the runner starts it, timed by a Python in the sandbox); (b) an exec of it through
the API server into that sandbox (our own WebSocket client, first stdout byte);
(c) ``kubectl exec`` of it (process start included). Figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import subprocess
import time
import uuid
from collections import defaultdict
from contextlib import AsyncExitStack
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
from _common import KUBECTL, kubectl, load_average, report
from _common import percentile as pct
from _timing import HELLO, SessionTimes, cluster_of, run_main, timed_session
from icee_api.session.start_clock import MARKS, mark_samples
from icee_kube import channel
from icee_kube.attach import attach_target
from icee_kube.channel import Channel
from icee_kube.client import KubeClient
from warm_start import BARE_RESOURCES, pool, wait_ready
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

PROGRAM = HELLO["python"]
# What the runner runs (languages.yaml: python3 -u {main}, under /bin/sh -c).
RUN = "python3 -u main.py"
# The timer's own start spends CPU of the sandbox's CFS quota; it sleeps past a
# period (200 ms on the local cluster) so the program starts with a fresh quota, as
# on a warm pod that waited idle for its claim.
IN_SANDBOX = (
    "import subprocess, sys, time\n"
    "time.sleep(0.3)\n"
    "t = time.perf_counter()\n"
    "subprocess.run(['/bin/sh', '-c', sys.argv[1]], stdout=subprocess.DEVNULL, check=True)\n"
    "print(time.perf_counter() - t)\n"
)


async def marks_now(http: httpx.AsyncClient) -> dict[str, float]:
    """The api's start-mark sums for warm starts."""
    return mark_samples((await http.get("/metrics")).text, "warm", "sum")


def sandbox_pod(namespace: str) -> str:
    """A running gVisor pod of the python image (the 'already running sandbox')."""
    name = f"bench-running-{uuid.uuid4().hex[:6]}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "runtimeClassName": "gvisor",
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "containers": [
                {
                    "name": "c",
                    "image": "icee/sandbox-python:3.11",
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "3600"],
                    "workingDir": "/workspace",
                    "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}],
                    # Requests as small as a session's: the node's CPU is not reserved.
                    "resources": {**BARE_RESOURCES, "requests": {"cpu": "10m", "memory": "32Mi"}},
                }
            ],
            "volumes": [{"name": "workspace", "emptyDir": {"medium": "Memory"}}],
        },
    }
    subprocess.run(
        [KUBECTL, "create", "-f", "-"], input=json.dumps(pod), text=True, check=True,
        capture_output=True,
    )  # fmt: skip
    kubectl("-n", namespace, "wait", f"pod/{name}", "--for=condition=Ready", "--timeout=120s")
    return name


async def exec_first(
    kube: KubeClient, namespace: str, pod: str, argv: list[str]
) -> tuple[float, str]:
    """Exec through the API server: (seconds to the first stdout byte, all stdout)."""
    target = attach_target(kube, namespace, pod, "c")
    scheme, netloc, path, _, _ = urlsplit(target.url)
    query = urlencode(
        [("container", "c"), ("stdout", "true"), ("stderr", "true")]
        + [("command", a) for a in argv]
    )
    url = urlunsplit((scheme, netloc, path.replace("/attach", "/exec"), query, ""))
    t0 = time.perf_counter()
    first: float | None = None
    out = b""
    async with connect(
        url, subprotocols=[Subprotocol(p) for p in channel.SUBPROTOCOLS],
        additional_headers=target.headers, ssl=target.ssl,
        server_hostname=target.server_hostname, compression=None,
    ) as ws:  # fmt: skip
        async for message in ws:
            frame = channel.decode(message)
            if frame.channel is Channel.STDOUT and frame.data:
                first = time.perf_counter() - t0 if first is None else first
                out += frame.data
    if first is None:
        raise RuntimeError(f"exec {argv}: no output")
    return first, out.decode()


def kubectl_exec_first(namespace: str, pod: str, argv: list[str]) -> float:
    t0 = time.perf_counter()
    with subprocess.Popen(
        [KUBECTL, "-n", namespace, "exec", pod, "-c", "c", "--", *argv], stdout=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None
        proc.stdout.read(1)
        first = time.perf_counter() - t0
        proc.stdout.read()
    return first


def ms(values: list[float], p: float) -> str:
    return f"{pct(values, p) * 1000:.0f}" if values else "-"


async def bench(base: str, namespace: str, args: argparse.Namespace) -> None:
    client: dict[str, list[float]] = defaultdict(list)
    server: dict[str, list[float]] = defaultdict(list)
    floor: dict[str, list[float]] = defaultdict(list)
    running = await asyncio.to_thread(sandbox_pod, namespace)
    write = f"printf %s {shlex.quote(PROGRAM)} > main.py && "
    async with AsyncExitStack() as stack:
        cluster = await stack.enter_async_context(cluster_of(namespace))
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=base, timeout=60))
        pool(namespace, "python", 1)
        await wait_ready(namespace, "python", 1)
        await timed_session(http, base, PROGRAM)  # warm-up: connections, page cache
        await exec_first(cluster.kube, namespace, running, ["/bin/sh", "-c", write + RUN])
        for i in range(args.runs):
            await wait_ready(namespace, "python", 1)
            await asyncio.sleep(0.5)  # the api's cache has the pod's latest version
            before = await marks_now(http)
            times: SessionTimes = await timed_session(http, base, PROGRAM)
            after = await marks_now(http)
            if times.first is None or times.reason != "Completed" or "first_output" not in after:
                print(f"  run {i} failed (left out): {times.frames} {times.stderr!r}")
                continue
            for name in ("posted", "opened", "pending", "running", "first", "final"):
                value = getattr(times, name)
                if value is not None:
                    client[name].append(value)
            for mark in MARKS:
                if mark in after:
                    server[mark].append(after[mark] - before.get(mark, 0.0))
            # The baselines, interleaved (same load).
            timed = f"python3 -c {shlex.quote(IN_SANDBOX)} {shlex.quote(RUN)}"
            _, out = await exec_first(
                cluster.kube, namespace, running, ["/bin/sh", "-c", write + timed]
            )
            floor["run"].append(float(out.split()[-1]))
            seconds, _ = await exec_first(
                cluster.kube, namespace, running, ["/bin/sh", "-c", write + RUN]
            )
            floor["exec"].append(seconds)
            floor["kubectl"].append(
                await asyncio.to_thread(
                    kubectl_exec_first, namespace, running, ["/bin/sh", "-c", write + RUN]
                )
            )
    kubectl("-n", namespace, "delete", "pod", running, "--now", "--wait=false")
    print(f"--- warm python hello world, n={len(client['first'])} ({load_average()}) ---")
    print("client (since the POST was sent):")
    for name, what in (
        ("posted", "201 received"),
        ("opened", "WebSocket open"),
        ("pending", "'pending' frame"),
        ("running", "'running' frame"),
        ("first", "first stdout byte"),
        ("final", "final state"),
    ):
        v = client[name]
        print(f"  {what:<28} p50 {ms(v, 50):>5} ms  p95 {ms(v, 95):>5} ms")
    print("api (since it accepted the WebSocket):")
    previous: list[float] | None = None
    for mark in MARKS:
        v = server[mark]
        step = [b - a for a, b in zip(previous, v, strict=False)] if previous else v
        print(
            f"  {mark:<28} p50 {ms(v, 50):>5} ms  p95 {ms(v, 95):>5} ms"
            f"   (step p50 {ms(step, 50):>4} ms)"
        )
        previous = v if v else previous
    print("baselines, the same program in an already running sandbox:")
    report("  its run time inside the sandbox (sh -c python3 -u main.py)", floor["run"])
    report("  exec through the API server -> first stdout byte", floor["exec"])
    report("  kubectl exec -> first stdout byte", floor["kubectl"])
    f, r = client["first"], floor["run"]
    if f and r:
        print(
            f"warm first byte p50/p95 {ms(f, 50)}/{ms(f, 95)} ms; program run time p50 "
            f"{ms(r, 50)} ms; warm - run time p50 {(pct(f, 50) - pct(r, 50)) * 1000:.0f} ms"
        )


if __name__ == "__main__":
    run_main(
        __doc__, bench, lambda p: p.add_argument("--runs", type=int, default=20), own_only=True
    )
