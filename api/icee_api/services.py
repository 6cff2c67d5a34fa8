"""What the routes share: settings, the cluster, languages, live sessions, metrics.

Built once per app by the app factory; the cluster connection is opened in the
lifespan, so building an app does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from icee_core import names
from icee_core.languages import LanguageRegistry
from icee_core.models import FINAL_PHASES
from icee_kube.attach import AttachBuffers
from icee_kube.pods import container_state

from icee_api.admission import Admission, AdmissionLimits, SandboxUp, SessionCounts
from icee_api.auth import TokenStore
from icee_api.clients import Network, parse_networks
from icee_api.metrics import Metrics
from icee_api.session.claims import StreamClaims
from icee_api.session.cluster import Cluster
from icee_api.session.live import LiveSessions
from icee_api.session.streaming import StreamTimeouts
from icee_api.session.termination import StreamHandle, Termination
from icee_api.session.watches import Watches
from icee_api.settings import Settings
from icee_api.start_gate import GateRelease, StartGate


def _container_up(pod: dict[str, Any]) -> bool:
    return container_state(pod, names.CONTAINER_NAME).kind in ("running", "terminated")


def _session_ended(obj: dict[str, Any]) -> bool:
    return (obj.get("status") or {}).get("phase") in FINAL_PHASES


class NotConnected(RuntimeError):
    """The app is not (or no longer) connected to the Kubernetes API."""


@dataclass
class Services:
    settings: Settings
    languages: LanguageRegistry
    metrics: Metrics = field(default_factory=Metrics)
    _cluster: Cluster | None = None
    _watches: Watches | None = None
    _claims: StreamClaims | None = None
    live: LiveSessions = field(init=False)
    termination: Termination = field(init=False)
    admission: Admission = field(init=False)
    # None: no start gate (start_gate_slots 0).
    start_gate: StartGate | None = field(init=False)
    tokens: TokenStore | None = field(init=False)
    trusted_proxies: tuple[Network, ...] = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        # The one owner of ending sessions (icee_api.session.termination).
        self.termination = Termination(lambda: self.cluster, self._stream_of, self.metrics)
        self.live = LiveSessions(self.termination.end)
        limits = AdmissionLimits(
            max_live=s.max_live_sessions,
            max_unconnected=s.max_unconnected_sessions,
            max_starting=s.max_starting_sessions,
            client_starting=s.client_max_starting_sessions,
            client_sessions=s.client_max_sessions,
            client_rate=s.client_rate_per_second,
            client_burst=s.client_burst,
        )
        self.admission = Admission(limits, SessionCounts())
        self.start_gate = None
        if s.start_gate_slots > 0:
            gate = StartGate(
                s.start_gate_slots,
                s.start_gate_hold_seconds,
                self.metrics.start_gate_expired.inc,
                min(s.start_gate_reserved_slots, s.start_gate_slots - 1),
            )
            self.start_gate = gate
            self.admission.counts.queued = gate.waits
            self.metrics.start_gate_waiting.set_function(lambda: gate.waiting)
            self.metrics.start_gate_held.set_function(lambda: gate.held)
        self.metrics.sessions_live.set_function(lambda: self.admission.counts.connected)
        self.metrics.sessions_unconnected.set_function(lambda: self.admission.counts.unconnected)
        self.metrics.sessions_starting.set_function(lambda: self.admission.counts.starting)
        self.tokens = (
            TokenStore(s.tokens_dir, s.tokens_reload_seconds) if s.tokens_dir is not None else None
        )
        self.trusted_proxies = parse_networks(s.trusted_proxies)

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            raise NotConnected("not connected to the Kubernetes API")
        return self._cluster

    @property
    def watches(self) -> Watches:
        if self._watches is None:
            raise NotConnected("not connected to the Kubernetes API")
        return self._watches

    @property
    def claims(self) -> StreamClaims:
        if self._claims is None:
            raise NotConnected("not connected to the Kubernetes API")
        return self._claims

    def connect(self, cluster: Cluster, watches: Watches, claims: StreamClaims) -> None:
        self._cluster = cluster
        self._watches = watches
        self._claims = claims
        counts = self.admission.counts
        watches.outcomes.observers.append(counts)
        watches.pods.observers.append(SandboxUp(counts, _container_up))
        watches.started.observers.append(SandboxUp(counts, lambda _event: True))
        if self.start_gate is not None:
            gate = self.start_gate
            watches.pods.observers.append(GateRelease(gate, _container_up, ended=False))
            watches.started.observers.append(GateRelease(gate, lambda _e: True, ended=False))
            watches.outcomes.observers.append(GateRelease(gate, _session_ended, ended=True))

    def _stream_of(self, session_id: str) -> StreamHandle | None:
        return self.live.stream(session_id)

    @property
    def stream_timeouts(self) -> StreamTimeouts:
        s = self.settings
        return StreamTimeouts(
            start=s.start_timeout_seconds,
            final_status=s.final_status_timeout_seconds,
            termination=s.termination_timeout_seconds,
        )

    @property
    def attach_buffers(self) -> AttachBuffers:
        s = self.settings
        return AttachBuffers(
            max_frame_bytes=s.attach_max_frame_bytes,
            max_queue=s.attach_max_queue,
            write_limit=s.attach_write_limit,
            open_timeout=s.attach_open_timeout_seconds,
        )
