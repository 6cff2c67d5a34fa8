"""Settings from the environment (prefix ``ICEE_``), read once at start-up.

Nested values use ``__``: ``ICEE_MAXIMA__LIMITS__OUTPUT_BYTES=100000``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from icee_core import names
from icee_core.models import ServerMaxima
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ICEE_", env_nested_delimiter="__", extra="ignore")

    host: str = "0.0.0.0"
    port: int = 8000
    log_level: str = "info"

    namespace: str = names.DEFAULT_NAMESPACE
    # None: in-cluster service account if present, else $KUBECONFIG / ~/.kube/config.
    kubeconfig: str | None = None
    # HTTP connections to the API server (two are the shared watches; attach
    # WebSockets are separate). Each idle pooled TLS connection holds buffers.
    kube_max_connections: Annotated[int, Field(ge=4)] = 64
    languages_file: Path | None = None
    ui_dir: Path = Path("ui/dist")

    # The most any session may get; requests may only lower these.
    maxima: ServerMaxima = ServerMaxima()
    # Whole POST /session body (the code itself is capped by the CodeSession spec).
    max_request_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024
    # One client WebSocket message (input frames are lines of text); a bigger one
    # closes the socket with 1009 before it is read. stdin is also capped per session.
    max_client_frame_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024
    # A client that does not read its output for this long is disconnected and its
    # session ends (ClientGone, "stopped reading").
    ws_send_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    # Browser origins that may open the WebSocket besides the api's own
    # (scheme://host[:port], or "*"); a request without Origin always may.
    allowed_origins: list[str] = []

    # Admission (admission.py). Live = connected + not yet connected sessions, each
    # of which will need a sandbox pod; keep it at most the sandbox namespace's pod quota.
    max_live_sessions: Annotated[int, Field(ge=1)] = 100
    max_unconnected_sessions: Annotated[int, Field(ge=1)] = 100
    # Sessions not running yet (waiting for their client or their sandbox): beyond
    # this POST /session answers 503 with Retry-After. 20 starts in flight on a
    # 2-core node still end well within the start timeout (see docs/benchmarks.md).
    max_starting_sessions: Annotated[int, Field(ge=1)] = 20
    # One client's share of those (None: half): what a flood from one client can
    # take from everyone else's start latency (bench/flood_fairness.py).
    client_max_starting_sessions: Annotated[int, Field(ge=1)] | None = None
    # The start gate (start_gate.py): cold sandbox starts at once in this process,
    # served round-robin by client (0: no gate; with R replicas the node sees up to
    # R x this), of which start_gate_reserved_slots only for a newcomer (a client
    # with no start in progress or waiting: it never waits behind another's flood).
    # A start holds its slot until its container runs, at most
    # start_gate_hold_seconds; a session waits for a slot at most
    # start_gate_max_wait_seconds, then ends StartFailed (the node is too busy).
    # Defaults measured with bench/flood_fairness.py (docs/design.md).
    start_gate_slots: Annotated[int, Field(ge=0)] = 2
    start_gate_reserved_slots: Annotated[int, Field(ge=0)] = 1
    start_gate_hold_seconds: Annotated[float, Field(gt=0)] = 30.0
    start_gate_max_wait_seconds: Annotated[float, Field(gt=0)] = 60.0
    # Per client (its API token, else its address): generous for a class behind one NAT.
    client_max_sessions: Annotated[int, Field(ge=1)] = 60
    client_burst: Annotated[int, Field(ge=1)] = 60
    client_rate_per_second: Annotated[float, Field(ge=0)] = 2.0
    # Peers whose X-Forwarded-For is believed (addresses or CIDRs, e.g. the ingress).
    trusted_proxies: list[str] = []
    # API tokens: a directory of files (a mounted Secret), one token each; None: off.
    tokens_dir: Path | None = None
    tokens_reload_seconds: Annotated[float, Field(ge=0)] = 10.0
    # permessage-deflate on client WebSockets: ~45 KiB of zlib state per socket, for
    # little gain on short JSON frames; off unless the clients sit behind a slow link.
    ws_compression: bool = False

    # From WebSocket open to the container running (image start, scheduling).
    start_timeout_seconds: Annotated[float, Field(gt=0)] = 60.0
    # From the program's end to the operator's final status.
    final_status_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    # From asking the operator to end a session to its pod going away.
    termination_timeout_seconds: Annotated[float, Field(gt=0)] = 45.0
    # This process's name among the api replicas (the chart passes the pod's name);
    # None: host name and process id. Its lease (claims.py) is icee-api-<name>.
    replica_name: str | None = None
    # A replica that stops renewing its lease this long is dead to the operator,
    # which ends the sessions it streamed (ClientGone). Renewed every third of it.
    lease_seconds: Annotated[int, Field(ge=3, le=300)] = 15
    # Running sessions get this long to finish after SIGTERM before ServerShutdown.
    shutdown_grace_seconds: Annotated[float, Field(ge=0)] = 30.0
    # After SIGTERM the port stays open at least this long (new sessions get 503),
    # even with nothing to drain: endpoints (kube-proxy, an ingress) take a moment
    # to stop sending connections here, which would otherwise be refused.
    shutdown_min_seconds: Annotated[float, Field(ge=0)] = 0.0

    attach_max_frame_bytes: Annotated[int, Field(ge=4096)] = 1024 * 1024
    attach_max_queue: Annotated[int, Field(ge=1)] = 16
    attach_write_limit: Annotated[int, Field(ge=1024)] = 64 * 1024
    attach_open_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
