"""Operator settings, from ICEE_* environment variables, read once at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from icee_core import names
from icee_core.models import MiB, ServerMaxima
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ICEE_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    namespace: str = names.DEFAULT_NAMESPACE
    languages_file: Path | None = None  # None: the registry shipped with icee_core
    # Session limits are lowered to these (the api applies the same maxima).
    maxima: ServerMaxima = ServerMaxima()

    # Sandbox pods. gVisor is the isolation boundary: without a runtime class the
    # pods would run on the node's default runtime (runc), which the operator
    # refuses unless allow_no_runtime_class says so (development only, never with
    # untrusted code; docs/security.md lists what runc does not contain).
    runtime_class_name: str | None = "gvisor"
    allow_no_runtime_class: bool = False
    # The service account sandbox pods run as (one with nothing bound to it; the
    # chart creates it); None: the namespace's default. No token is mounted either way.
    sandbox_service_account: str | None = None
    image_pull_policy: Literal["IfNotPresent", "Never", "Always"] = "IfNotPresent"
    # Requests stay tiny so ~100 sessions fit a 2-core node; the limits are the spec's.
    cpu_request_millis: int = Field(default=10, ge=1)
    memory_request_bytes: int = Field(default=32 * MiB, ge=1 * MiB)
    # Caps what the container log (stdout+stderr kept by the kubelet) may take on disk.
    ephemeral_storage_limit_bytes: int = Field(default=64 * MiB, ge=1 * MiB)
    ephemeral_storage_request_bytes: int = Field(default=1 * MiB, ge=0)
    termination_grace_seconds: int = Field(default=1, ge=0)
    # Each session runs as its own uid from this range, so RLIMIT_NPROC (which counts
    # per uid) caps one session only, also under runc where all pods share the host's
    # uids: keep the range clear of any uid other pods on the nodes run as.
    sandbox_uid_base: int = Field(default=1_000_000, ge=1000)
    sandbox_uid_count: int = Field(default=1_000_000, ge=1, le=1_000_000_000)

    # A session not running this long after creation ends as StartFailed
    # (unschedulable, image missing, ...).
    start_timeout_seconds: float = Field(default=60, gt=0)
    # A session no client connected to within its idle timeout after creation, and
    # at most this long, ends as ClientGone (whichever api replica took the POST).
    connect_timeout_seconds: float = Field(default=60, gt=0)
    # How often the api replicas' leases are checked: a session whose streaming
    # replica stopped renewing its lease ends ClientGone (orphans.py).
    claims_check_seconds: float = Field(default=5, gt=0)
    # How long an ended CodeSession stays readable before the operator deletes it.
    retention_seconds: float = Field(default=300, ge=0)

    # With more than one replica, the Lease (in the sandbox namespace) whose holder
    # is the one replica that acts (`leader`); None: act at once, alone.
    leader_lease: str | None = None
    # A standby takes over once the holder has not renewed for this long.
    leader_lease_seconds: int = Field(default=15, ge=2)
    leader_renew_seconds: float = Field(default=5.0, gt=0)
    leader_retry_seconds: float = Field(default=2.0, gt=0)

    # kopf's liveness endpoint (/healthz); 0 disables it.
    health_port: int = Field(default=8080, ge=0, le=65535)

    @field_validator("runtime_class_name", "leader_lease", "sandbox_service_account")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def _sandboxed(self) -> OperatorSettings:
        if self.runtime_class_name is None and not self.allow_no_runtime_class:
            raise ValueError(
                "ICEE_RUNTIME_CLASS_NAME is empty: sandbox pods would run without gVisor;"
                " for development only, set ICEE_ALLOW_NO_RUNTIME_CLASS=true"
            )
        if self.leader_renew_seconds >= self.leader_lease_seconds:
            raise ValueError("ICEE_LEADER_RENEW_SECONDS must be below ICEE_LEADER_LEASE_SECONDS")
        return self
