"""RSS of the api process at N idle session WebSockets.

    python bench/idle_ws_memory.py --namespace icee-bench --steps 0,250,500,1000

Starts its own ``icee-api``. A node cannot run 1,000 sandbox pods, so by default
the sessions stay *pending*: no operator serves the namespace, their CodeSessions
exist but no pod is ever made; a pending stream holds the client WebSocket and a
subscription to the api's shared watches. A running idle session also holds its
attach WebSocket (TLS to the API server): measure that with --running and a small
N (needs an operator serving the namespace).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess

import httpx
from _common import create, loads, rss_bytes, start_api, ws_url
from websockets.asyncio.client import ClientConnection, connect

MiB = 1024 * 1024


async def open_sessions(
    base: str, count: int, running: bool, stack: contextlib.AsyncExitStack
) -> list[ClientConnection]:
    sockets: list[ClientConnection] = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        for start in range(0, count, 50):
            ids = await asyncio.gather(
                *(create(http, "input()", timeouts={"idleSeconds": 3600})
                  for _ in range(start, min(count, start + 50)))
            )  # fmt: skip
            for sid in ids:
                sockets.append(await stack.enter_async_context(connect(ws_url(base, sid))))
    want = "running" if running else "pending"
    for ws in sockets:
        while loads(await ws.recv()).get("state") != want:
            pass
    return sockets


def ensure_namespace(namespace: str) -> None:
    subprocess.run(["kubectl", "create", "namespace", namespace],
                   capture_output=True, check=False)  # fmt: skip


def delete_sessions(namespace: str) -> None:
    subprocess.run(["kubectl", "delete", "codesessions", "--all", "-n", namespace,
                    "--wait=false"], capture_output=True, check=False)  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--namespace", default="icee-bench")
    parser.add_argument("--steps", default="0,250,500,1000")
    parser.add_argument("--running", action="store_true")
    args = parser.parse_args()
    ensure_namespace(args.namespace)
    proc, base = start_api(args.namespace, start_timeout_seconds="3600", shutdown_grace_seconds="0")
    try:
        async with contextlib.AsyncExitStack() as stack:
            opened: list[ClientConnection] = []
            base_rss = rss_bytes(proc.pid)
            print(f"sockets=0 rss={base_rss / MiB:.1f} MiB")
            for step in (int(s) for s in args.steps.split(",")):
                if step <= len(opened):
                    continue
                opened += await open_sessions(base, step - len(opened), args.running, stack)
                await asyncio.sleep(2)
                rss = rss_bytes(proc.pid)
                per = (rss - base_rss) / max(1, len(opened)) / 1024
                print(f"sockets={len(opened)} rss={rss / MiB:.1f} MiB (+{per:.1f} KiB per socket)")
    finally:
        proc.terminate()
        proc.wait(60)
        if not args.running:
            delete_sessions(args.namespace)


if __name__ == "__main__":
    asyncio.run(main())
