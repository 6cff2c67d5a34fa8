"""One "api process" claiming warm pods, for test_pool's race (run as a script).

argv: namespace, language, start-at (epoch seconds), session ids...
Connects, syncs its own warm-pod caches, waits until start-at (so two processes
claim at the same moment), claims one pod per session concurrently and prints
{session id: pod name or null} as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from icee_api.session.cluster import Cluster
from icee_api.session.warm import WarmPods
from icee_core.models import Limits


async def main(namespace: str, language: str, start_at: float, sessions: list[str]) -> None:
    cluster = await Cluster.connect(os.environ.get("KUBECONFIG"), namespace, 20)
    warm = WarmPods(cluster)
    tasks = warm.start()
    try:
        loaded = asyncio.gather(warm.pods.loaded.wait(), warm.pools.loaded.wait())
        await asyncio.wait_for(loaded, 30)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        claimed = await asyncio.gather(*(warm.claim(s, language, Limits()) for s in sessions))
        print(json.dumps(dict(zip(sessions, claimed, strict=True))))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await cluster.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:]))
