"""The start gate: cold sandbox starts a few at a time, served round-robin by client.

A cold start (the api writing ``spec.start`` without a claimed warm pod, so that the
operator creates the pod) costs the node about a CPU-second (kubelet, containerd,
runsc, the API server), and many at once slow each other down. Admission caps how
many sessions may be *starting*; this gate decides *which* of them start now: at
most ``slots`` starts at once in this api process, the next slot going to the
client served least recently (round-robin across clients), and within one client to
its oldest waiter (FIFO). So a client that floods the node with starts gets one slot
per turn like everyone else, and another client's start waits for at most one slot
to free instead of behind the whole flood. ``reserved`` of the slots go only to a
newcomer, a client with no start of its own in progress or waiting: a client
running one program after another never waits behind someone else's flood, and the
flood's next start waits for its start instead of running beside it.

A slot is held from the grant until the session's sandbox container runs (the pod's
status or the kubelet's Started event: the same signals admission uses), the session
ends, its client leaves, or ``hold_seconds`` pass (a lost signal must not wedge the
gate). Warm-pool claims start no pod and never enter the gate.

The gate is per api process: with R replicas the node sees at most R x ``slots``
cold starts at once, and each replica serves its own queue round-robin (a client's
sessions are spread over the replicas by the Service, so its turns are too).

:class:`FairQueue` is the bookkeeping, without I/O or clock (unit-tested alone);
:class:`StartGate` adds the futures the streams wait on and the hold timers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class FairQueue:
    """Who holds a start slot, who waits, and who is next.

    Keys are session ids, clients are admission's client labels. Every change
    returns the keys that got a slot because of it (in grant order).
    """

    def __init__(self, slots: int, reserved: int = 0) -> None:
        if slots < 1:
            raise ValueError("a start gate needs at least one slot")
        if not 0 <= reserved < slots:
            raise ValueError("reserved slots must leave at least one slot for everyone")
        self.slots = slots
        # The last free slots go only to a newcomer: a client with no start of its
        # own in progress or waiting (not even just served): it never waits behind
        # a flood of another client's starts.
        self.reserved = reserved
        self._held: dict[str, str] = {}  # key -> client
        self._holding: Counter[str] = Counter()  # client -> slots held
        self._waiting: dict[str, deque[str]] = {}  # client -> its waiting keys, oldest first
        self._client_of: dict[str, str] = {}  # waiting key -> client
        # Round-robin: the number of the client's last grant (kept while it waits or
        # holds a slot; a client with neither has had its turn and starts afresh).
        self._served: dict[str, int] = {}
        self._since: dict[str, int] = {}  # client -> order it began waiting (ties)
        self._grants = 0
        self._arrivals = 0

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def waiting(self) -> int:
        return len(self._client_of)

    def holds(self, key: str) -> bool:
        return key in self._held

    def waits(self, key: str) -> bool:
        return key in self._client_of

    def clients_waiting(self) -> int:
        return len(self._waiting)

    def join(self, key: str, client: str) -> list[str]:
        """Queue ``key`` behind its client's earlier waiters; it may get a slot at once."""
        if key in self._held or key in self._client_of:
            raise ValueError(f"{key} is in the start gate already")
        queue = self._waiting.get(client)
        if queue is None:
            queue = self._waiting[client] = deque()
            self._since[client] = self._arrivals
            self._arrivals += 1
        queue.append(key)
        self._client_of[key] = client
        return self._fill()

    def leave(self, key: str) -> list[str]:
        """``key`` no longer needs the gate: a waiter leaves its queue, a holder frees
        its slot (which goes to the next in turn). Unknown keys are fine (idempotent)."""
        client = self._client_of.pop(key, None)
        if client is not None:
            queue = self._waiting[client]
            queue.remove(key)
            if not queue:
                del self._waiting[client], self._since[client]
                self._forget_if_idle(client)
            return []
        client = self._held.pop(key, None)
        if client is None:
            return []
        self._holding[client] -= 1
        if self._holding[client] <= 0:
            del self._holding[client]
        self._forget_if_idle(client)
        return self._fill()

    def _next_client(self) -> str | None:
        # Least recently served first (never served: before everyone), then the one
        # waiting longest; the reserved slots only for a newcomer. Few clients wait
        # at once (admission caps the starts).
        free = self.slots - len(self._held)
        eligible = [c for c in self._waiting if free > self.reserved or c not in self._served]
        if not eligible:
            return None
        return min(eligible, key=lambda c: (self._served.get(c, -1), self._since[c]))

    def _fill(self) -> list[str]:
        granted: list[str] = []
        while len(self._held) < self.slots and self._waiting:
            client = self._next_client()
            if client is None:
                break
            queue = self._waiting[client]
            key = queue.popleft()
            del self._client_of[key]
            if not queue:
                del self._waiting[client], self._since[client]
            self._held[key] = client
            self._holding[client] += 1
            self._served[client] = self._grants
            self._grants += 1
            granted.append(key)
        return granted

    def _forget_if_idle(self, client: str) -> None:
        if client not in self._waiting and client not in self._holding:
            self._served.pop(client, None)


class StartGate:
    """The FairQueue for the streams of this process: a future per waiter, a timer
    per held slot. Runs on one event loop; every method returns at once."""

    def __init__(
        self,
        slots: int,
        hold_seconds: float,
        on_expired: Callable[[], None] | None = None,
        reserved: int = 0,
    ) -> None:
        self._queue = FairQueue(slots, reserved)
        self.hold_seconds = hold_seconds
        self._tickets: dict[str, asyncio.Future[bool]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        # Called when the hold timer gives a slot back (a start signal never came).
        self._on_expired = on_expired

    @property
    def slots(self) -> int:
        return self._queue.slots

    @property
    def held(self) -> int:
        return self._queue.held

    @property
    def waiting(self) -> int:
        return self._queue.waiting

    def clients_waiting(self) -> int:
        return self._queue.clients_waiting()

    def holds(self, key: str) -> bool:
        return self._queue.holds(key)

    def waits(self, key: str) -> bool:
        return self._queue.waits(key)

    def join(self, key: str, client: str) -> asyncio.Future[bool]:
        """Queue a cold start. The future is True once it holds a slot, False if it
        left the queue first (its session ended); cancelling it does not leave: call
        :meth:`leave` (the stream always does when it ends)."""
        ticket = asyncio.get_running_loop().create_future()
        self._tickets[key] = ticket
        self._granted(self._queue.join(key, client))
        return ticket

    def leave(self, key: str) -> None:
        """The session left the queue or its slot is free (idempotent)."""
        ticket = self._tickets.pop(key, None)
        if ticket is not None and not ticket.done():
            ticket.set_result(False)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._granted(self._queue.leave(key))

    def started(self, key: str) -> None:
        """The session's sandbox container runs: its slot is free (waiters stay)."""
        if self._queue.holds(key):
            self.leave(key)

    def _granted(self, keys: list[str]) -> None:
        loop = asyncio.get_running_loop()
        for key in keys:
            ticket = self._tickets.pop(key, None)
            if ticket is not None and not ticket.done():
                ticket.set_result(True)
            self._timers[key] = loop.call_later(self.hold_seconds, self._expire, key)

    def _expire(self, key: str) -> None:
        self._timers.pop(key, None)
        if self._queue.holds(key):
            if self._on_expired is not None:
                self._on_expired()
            log.warning(
                "session %s: start slot given back after %g s without its sandbox running",
                key,
                self.hold_seconds,
            )
            self.leave(key)


class GateRelease:
    """An informer observer freeing start slots: on the sandbox pods and the kubelet's
    Started events (``ended=False``: the container runs) or on the CodeSessions
    (``ended=True``: the session ended or is gone, so it leaves the queue too)."""

    def __init__(
        self,
        gate: StartGate,
        signal: Callable[[dict[str, Any]], bool],
        *,
        ended: bool,
    ) -> None:
        self._gate = gate
        self._signal = signal
        self._ended = ended

    def begin_relist(self) -> None:
        pass

    def apply(self, key: str, obj: dict[str, Any] | None) -> None:
        if self._ended and (obj is None or self._signal(obj)):
            self._gate.leave(key)
        elif not self._ended and obj is not None and self._signal(obj):
            self._gate.started(key)

    def end_relist(self) -> None:
        # Objects gone during a relist are not reported one by one; the streams
        # and the hold timer free what they held.
        pass
