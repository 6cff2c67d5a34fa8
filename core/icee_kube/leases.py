"""``coordination.k8s.io/v1`` Leases: a new Lease's body and its MicroTime. Pure, no I/O.

Both users build on these: the api replicas' stream claims (icee_core.claims) and
the operators' leader election (icee_operator.leader).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def micro_time(at: datetime) -> str:
    """A Lease's MicroTime: RFC 3339 in UTC with microseconds."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def held_spec(holder: str, seconds: int, at: datetime) -> dict[str, Any]:
    """The spec of a Lease ``holder`` takes at ``at`` for ``seconds``."""
    stamp = micro_time(at)
    return {
        "holderIdentity": holder,
        "leaseDurationSeconds": seconds,
        "acquireTime": stamp,
        "renewTime": stamp,
    }


def new_lease(metadata: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": spec,
    }
