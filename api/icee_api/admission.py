"""Admission of new sessions: cluster-wide capacity and per-client quotas.

The counts live in the cluster, not in this process: every api replica follows all
CodeSessions of the sandbox namespace (the CodeSession watch, relisted on expiry)
and counts those not yet ended, by whether their client connected (``spec.start``)
and by who created them (the ``icee.dev/client`` label). Limits, all checked on
``POST /session``:

- ``live_sessions``: connected plus not-yet-connected sessions at most
  ``max_live``: a new session reserves the sandbox it will get when its client
  connects, so a connecting client never finds the cluster full;
- ``unconnected_sessions``: sessions created but not yet connected;
- ``starting_sessions``: sessions whose sandbox is starting (connected, not running
  yet), those whose client waits in this replica's start gate (start_gate.py), plus
  those created in the last few seconds whose client has not connected yet
  (lazy start makes their pod a moment later, when the client connects: a burst of
  POSTs is bounded here or not at all; older unconnected sessions are idle and have
  their own cap). Starting a gVisor pod is what costs a node CPU (kubelet,
  containerd, runsc); past a few dozen starts at once every start slows down until
  some time out (``StartFailed``). Refusing early, with a 429 and a Retry-After of a
  couple of seconds, lets a burst queue at the clients instead;
  one client may hold at most its share of these (``client_starting``, a 429;
  ``client_max_starting_sessions``, by default half), so no single client blocks
  everyone's starts with sessions it never connects, and a flood from one client
  slows the others' starts only by the CPU its share of starts takes. A session
  stops counting as starting as soon as its sandbox container runs (the pod's
  status or the kubelet's Started event, :class:`SandboxUp`; a claimed warm pod
  runs already), not only once the operator's status says Running, which comes
  after the kubelet's next relist and may never come for a short program;
- ``client_sessions``: one client's sessions (connected or not);
- ``client_rate``: one client's creations, a token bucket (quotas.py).

Races between replicas: a replica counts the sessions it created itself at once
(``reserve``) and the others' when its watch delivers them, typically within
milliseconds. Two replicas can both admit the last free slot inside that window,
so the caps can be overshot by at most (replicas - 1) x (sessions one replica
admits during one watch delay). The namespace's ResourceQuota is the hard
backstop: the API server counts ``count/codesessions.icee.dev`` and pods
atomically, and a create it refuses becomes a 429 here.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from icee_core import names
from icee_core.models import FINAL_PHASES, Phase

from icee_api.clients import Client
from icee_api.quotas import RateLimiter

# A session this replica created and its watch has not shown yet is counted for
# this long at most (the watch normally delivers it within milliseconds).
RESERVATION_SECONDS = 30.0
# An unconnected session counts as starting for this long after its creation: a
# client normally opens its WebSocket right after the POST.
ABOUT_TO_START_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    max_live: int
    max_unconnected: int
    max_starting: int
    # One client's share of max_starting (client_starting); None: half of it.
    client_starting: int | None
    client_sessions: int
    client_rate: float
    client_burst: int
    # Retry-After for refusals that last until some session ends.
    retry_after_seconds: int = 5
    # Retry-After while too many sessions start: a start takes a second or two.
    starting_retry_after_seconds: int = 2


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a session was not admitted: ``limit`` names the rule (also the metric label)."""

    limit: str
    detail: str
    retry_after: int
    # 429 for every rule, the node's capacity to start sandboxes included (SPEC: 429
    # is over a quota or over capacity; 503 is only the server shutting down).
    status: int = 429

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, "limit": self.limit, "retryAfterSeconds": self.retry_after}


@dataclass(frozen=True, slots=True)
class _Record:
    client: str | None
    connected: bool
    running: bool = False
    created: float | None = None  # epoch seconds; None: unknown (counted as recent)


def _epoch(stamp: object) -> float | None:
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _record(obj: dict[str, Any]) -> _Record | None:
    """How a CodeSession counts: None once it has ended."""
    phase = (obj.get("status") or {}).get("phase")
    if phase in FINAL_PHASES:
        return None
    metadata = obj.get("metadata") or {}
    labels = metadata.get("labels") or {}
    connected = bool((obj.get("spec") or {}).get("start"))
    return _Record(
        labels.get(names.LABEL_CLIENT),
        connected,
        phase == Phase.RUNNING,
        _epoch(metadata.get("creationTimestamp")),
    )


class SessionCounts:
    """Sessions not yet ended, by connected state and client (a watches.Observer)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall = wall
        self._records: dict[str, _Record] = {}
        self._clients: Counter[str] = Counter()
        self._connected = 0
        # Connected, not running: their sandbox is starting (in all, and per client).
        self._starting = 0
        self._clients_starting: Counter[str] = Counter()
        # Not connected yet: session id -> record (for the recent ones' count).
        self._unconnected: dict[str, _Record] = {}
        # Created here, not yet seen in the watch: session id -> (record, expiry).
        self._reserved: dict[str, tuple[_Record, float]] = {}
        self._relisting: dict[str, _Record] | None = None
        # Sessions whose sandbox container runs (or ran) already: not starting.
        self._up: set[str] = set()
        # Whether a session's client waits in this process's start gate (connected,
        # but no spec.start yet): it is starting, however old (set by Services).
        self.queued: Callable[[str], bool] = lambda _key: False

    # -- Observer ------------------------------------------------------------------

    def begin_relist(self) -> None:
        self._relisting = {}

    def apply(self, key: str, obj: dict[str, Any] | None) -> None:
        record = None if obj is None else _record(obj)
        self._reserved.pop(key, None)
        if self._relisting is not None:
            if record is not None:
                self._relisting[key] = record
            return
        self._set(key, record)
        if record is None:
            self._up.discard(key)

    def end_relist(self) -> None:
        listed, self._relisting = self._relisting or {}, None
        self._up.intersection_update(listed)
        self._records.clear()
        self._clients.clear()
        self._clients_starting.clear()
        self._unconnected.clear()
        self._connected = self._starting = 0
        for key, record in listed.items():
            self._set(key, record)

    def sandbox_up(self, key: str) -> None:
        """The session's sandbox container runs: it is not starting any more."""
        record = self._records.get(key)
        if record is None or key in self._up:
            return  # unknown (not counted) or ended: nothing to keep
        self._set(key, None)
        self._up.add(key)
        self._set(key, record)

    # -- counts ----------------------------------------------------------------------

    def _is_starting(self, key: str, record: _Record) -> bool:
        return record.connected and not record.running and key not in self._up

    def _set(self, key: str, record: _Record | None) -> None:
        old = self._records.pop(key, None)
        self._unconnected.pop(key, None)
        if old is not None:
            self._connected -= old.connected
            starting = self._is_starting(key, old)
            self._starting -= starting
            if old.client is not None:
                self._clients[old.client] -= 1
                if self._clients[old.client] <= 0:
                    del self._clients[old.client]
                self._clients_starting[old.client] -= starting
                if self._clients_starting[old.client] <= 0:
                    del self._clients_starting[old.client]
        if record is not None:
            self._records[key] = record
            self._connected += record.connected
            starting = self._is_starting(key, record)
            self._starting += starting
            if not record.connected:
                self._unconnected[key] = record
            if record.client is not None:
                self._clients[record.client] += 1
                self._clients_starting[record.client] += starting

    def _live_reservations(self) -> list[_Record]:
        now = self._clock()
        expired = [key for key, (_, until) in self._reserved.items() if until <= now]
        for key in expired:
            del self._reserved[key]
        return [record for record, _ in self._reserved.values()]

    def reserve(self, session_id: str, client: str) -> None:
        """Count a session this replica is creating until the watch shows it."""
        if session_id not in self._records:
            until = self._clock() + RESERVATION_SECONDS
            self._reserved[session_id] = (_Record(client, False), until)

    def release(self, session_id: str) -> None:
        """The create failed: stop counting it."""
        self._reserved.pop(session_id, None)

    @property
    def connected(self) -> int:
        return self._connected

    @property
    def unconnected(self) -> int:
        return len(self._records) - self._connected + len(self._live_reservations())

    def _about_to_start(self) -> list[_Record]:
        """Unconnected sessions created moments ago or waiting in this replica's start
        gate, and this replica's reservations."""
        since = self._wall() - ABOUT_TO_START_SECONDS
        recent = [
            r
            for key, r in self._unconnected.items()
            if r.created is None or r.created > since or self.queued(key)
        ]
        return recent + self._live_reservations()

    @property
    def starting(self) -> int:
        """Sandboxes starting, plus the sessions about to start one."""
        return self._starting + len(self._about_to_start())

    @property
    def total(self) -> int:
        return len(self._records) + len(self._live_reservations())

    def of_client(self, client: str) -> int:
        extra = sum(1 for record in self._live_reservations() if record.client == client)
        return self._clients.get(client, 0) + extra

    def starting_of_client(self, client: str) -> int:
        extra = sum(1 for record in self._about_to_start() if record.client == client)
        return self._clients_starting.get(client, 0) + extra


class SandboxUp:
    """An informer observer (the sandbox pods, the kubelet's Started events) telling
    the counts which sessions' containers run. Sticky: a sandbox that ran is never
    "starting" again; the CodeSession's end forgets it."""

    def __init__(self, counts: SessionCounts, is_up: Callable[[dict[str, Any]], bool]) -> None:
        self._counts = counts
        self._is_up = is_up

    def begin_relist(self) -> None:
        pass

    def apply(self, key: str, obj: dict[str, Any] | None) -> None:
        if obj is not None and self._is_up(obj):
            self._counts.sandbox_up(key)

    def end_relist(self) -> None:
        pass


class Admission:
    """Decides whether a client may create a session now."""

    def __init__(self, limits: AdmissionLimits, counts: SessionCounts) -> None:
        self.limits = limits
        self.counts = counts
        self.rates = RateLimiter(limits.client_rate, limits.client_burst)

    def check(self, client: Client) -> Refusal | None:
        """None to admit (a rate token is then spent), else the first rule broken."""
        lim, counts, retry = self.limits, self.counts, self.limits.retry_after_seconds
        mine = counts.of_client(client.label)
        if mine >= lim.client_sessions:
            return Refusal(
                "client_sessions",
                f"this client already has {mine} sessions, at most "
                f"{lim.client_sessions} at once; end one or retry later",
                retry,
            )
        if counts.unconnected >= lim.max_unconnected:
            return Refusal(
                "unconnected_sessions",
                f"{counts.unconnected} sessions wait for their client to connect, at most "
                f"{lim.max_unconnected}; retry later",
                retry,
            )
        share = lim.client_starting or max(1, lim.max_starting // 2)
        if counts.starting_of_client(client.label) >= share:
            return Refusal(
                "client_starting",
                f"this client has {share} sessions starting, at most {share} of the node's "
                f"{lim.max_starting}; connect to them or retry shortly",
                lim.starting_retry_after_seconds,
            )
        if counts.starting >= lim.max_starting:
            return Refusal(
                "starting_sessions",
                f"{counts.starting} sessions are starting, at most {lim.max_starting} at "
                "once; the node is busy starting sandboxes, retry shortly",
                lim.starting_retry_after_seconds,
            )
        if counts.total >= lim.max_live:
            return Refusal(
                "live_sessions",
                f"the cluster is at capacity ({counts.total} sessions, at most "
                f"{lim.max_live}); retry later",
                retry,
            )
        wait = self.rates.take(client.key)
        if wait > 0:
            return Refusal(
                "client_rate",
                f"this client creates sessions too fast: at most {lim.client_burst} at once, "
                f"then {lim.client_rate:g} per second",
                max(1, math.ceil(wait)) if math.isfinite(wait) else 3600,
            )
        return None


def quota_refusal(retry_after: int) -> Refusal:
    """The namespace's ResourceQuota refused the CodeSession (the hard backstop)."""
    return Refusal(
        "namespace_quota",
        "the sandbox namespace's ResourceQuota is exhausted; retry later",
        retry_after,
    )
