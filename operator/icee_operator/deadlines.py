"""One-shot actions at wall-clock times, keyed so re-arming is harmless.

The operator re-arms them from every CodeSession it sees (including the initial
listing after a restart), so they need no storage of their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

logger = logging.getLogger(__name__)

Action = Callable[[], Awaitable[None]]


class Deadlines:
    def __init__(self, retries: int = 5, retry_delay: float = 5.0) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._retries = retries
        self._retry_delay = retry_delay

    def arm(self, key: str, at: datetime, action: Action) -> None:
        """Run `action` at `at` (or now, if past), unless `key` is already armed."""
        if key in self._tasks:
            return
        task = asyncio.create_task(self._run(key, at, action), name=f"deadline:{key}")
        self._tasks[key] = task
        task.add_done_callback(lambda done: self._forget(key, done))

    def disarm(self, key: str) -> None:
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()

    def _forget(self, key: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]

    def __contains__(self, key: str) -> bool:
        return key in self._tasks

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, key: str, at: datetime, action: Action) -> None:
        await asyncio.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()))
        for attempt in range(1, self._retries + 1):
            try:
                await action()
                return
            except Exception:
                logger.exception("deadline %s failed (attempt %d)", key, attempt)
                if attempt < self._retries:
                    await asyncio.sleep(self._retry_delay * attempt)
