"""Per-client creation rate: one token bucket per client, in this api process.

With several api replicas behind a load balancer each keeps its own buckets, so a
client may create up to ``replicas`` times the rate; its concurrent sessions are
counted from the cluster (admission.py) and stay capped exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    tokens: float
    stamp: float

    def refill(self, now: float, rate: float, burst: float) -> None:
        self.tokens = min(burst, self.tokens + (now - self.stamp) * rate)
        self.stamp = now


class RateLimiter:
    """``burst`` creations at once, then ``rate`` per second, per client key.

    At most ``max_clients`` buckets are kept: when full, buckets that have refilled
    (their client would start afresh anyway) are dropped first, then the oldest.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._max_clients = max_clients
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Take one token: 0.0 if granted, else the seconds until one is available."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            self._make_room(now)
            bucket = self._buckets[key] = TokenBucket(self.burst, now)
        else:
            bucket.refill(now, self.rate, self.burst)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        if self.rate <= 0:
            return float("inf")
        return (1.0 - bucket.tokens) / self.rate

    def _make_room(self, now: float) -> None:
        if len(self._buckets) < self._max_clients:
            return
        for key, bucket in list(self._buckets.items()):
            bucket.refill(now, self.rate, self.burst)
            if bucket.tokens >= self.burst:
                del self._buckets[key]
        while len(self._buckets) >= self._max_clients:
            del self._buckets[next(iter(self._buckets))]
