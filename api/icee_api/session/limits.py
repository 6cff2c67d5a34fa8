"""Limit accounting for the stream side: output and stdin byte budgets, the idle clock.

Constant work per message: a counter and a timestamp, nothing that grows with
the session's history.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class ByteBudget:
    """At most ``limit`` bytes in total; the first byte beyond it trips the budget."""

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        self.limit = limit
        self.used = 0
        self.exceeded = False

    @property
    def remaining(self) -> int:
        return self.limit - self.used

    def take(self, size: int) -> int:
        """Account ``size`` bytes; return how many of them fit (the rest must be dropped)."""
        allowed = min(size, self.remaining)
        self.used += allowed
        if allowed < size:
            self.exceeded = True
        return allowed

    def fits(self, size: int) -> bool:
        """All-or-nothing variant: take ``size`` bytes only if all of them fit."""
        if size > self.remaining:
            self.exceeded = True
            return False
        self.used += size
        return True


class IdleClock:
    """Time since the last I/O in either direction."""

    def __init__(self, idle_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._last = clock()

    def touch(self) -> None:
        self._last = self._clock()

    def remaining(self) -> float:
        """Seconds until the session counts as idle (<= 0 once it does)."""
        return self._last + self.idle_seconds - self._clock()
