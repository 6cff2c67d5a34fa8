"""Prometheus metrics of the api. Base units in names, no session ids in labels.

One registry per app instance, so several apps (tests) never collide in the
process-global default registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
# The steps of a start are milliseconds apart on a warm pod.
_STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sessions_created = Counter(
            "icee_sessions_created", "CodeSessions created", ["language"], registry=r
        )
        # Warm: a pool's pod was claimed (issue 12); cold: the operator creates one.
        self.session_starts = Counter(
            "icee_session_starts", "Sessions by how their sandbox started", ["how"], registry=r
        )
        self.sessions_rejected = Counter(
            "icee_sessions_rejected",
            "POST /session refused, by rule (bad_request, unauthorized, forbidden, "
            "live_sessions, unconnected_sessions, client_sessions, client_rate, ...)",
            ["why"],
            registry=r,
        )
        self.websockets_rejected = Counter(
            "icee_websockets_rejected",
            "WebSocket handshakes refused (origin, unauthorized, forbidden)",
            ["why"],
            registry=r,
        )
        self.clients_too_slow = Counter(
            "icee_clients_too_slow",
            "Clients disconnected because they stopped reading their output",
            registry=r,
        )
        self.sessions_live = Gauge(
            "icee_sessions_live",
            "Sessions not ended whose client connected (cluster-wide, from the watch)",
            registry=r,
        )
        self.sessions_unconnected = Gauge(
            "icee_sessions_unconnected",
            "Sessions created whose client has not connected yet (cluster-wide)",
            registry=r,
        )
        self.sessions_starting = Gauge(
            "icee_sessions_starting",
            "Sessions not ended whose program is not running yet (cluster-wide)",
            registry=r,
        )
        # The start gate (icee_api.start_gate): cold starts of this process.
        self.start_gate_waiting = Gauge(
            "icee_start_gate_waiting", "Cold starts waiting for a start slot", registry=r
        )
        self.start_gate_held = Gauge(
            "icee_start_gate_held", "Start slots held by sandboxes starting", registry=r
        )
        self.start_gate_wait = Histogram(
            "icee_start_gate_wait_seconds",
            "From joining the start gate to a slot (or leaving without one)",
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self.start_gate_expired = Counter(
            "icee_start_gate_expired",
            "Start slots given back by the hold timer (no start signal came in time)",
            registry=r,
        )
        self.sessions_ended = Counter(
            "icee_sessions_ended", "Streams that ended, by final reason", ["reason"], registry=r
        )
        self.session_start = Histogram(
            "icee_session_start_seconds",
            "From POST /session (or the WebSocket, if created elsewhere) to attach connected",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.first_output = Histogram(
            "icee_first_output_seconds",
            "From POST /session to the first stdout/stderr byte sent to the client",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.start_marks = Histogram(
            "icee_start_mark_seconds",
            "From the client's WebSocket to each step of the session's start "
            "(icee_api.session.start_clock), by how the sandbox started",
            ["mark", "how"],
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self.active_streams = Gauge(
            "icee_active_streams", "WebSocket clients attached to a session", registry=r
        )
        self.output_bytes = Counter(
            "icee_output_bytes", "Program output relayed to clients", ["stream"], registry=r
        )
        self.stdin_bytes = Counter("icee_stdin_bytes", "Client input relayed", registry=r)
        self.limit_trips = Counter(
            "icee_limit_trips", "Stream-side limits that ended a session", ["reason"], registry=r
        )
        self.attach_failures = Counter(
            "icee_attach_failures", "Attach connections that could not be opened", registry=r
        )
