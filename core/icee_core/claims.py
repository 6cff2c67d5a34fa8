"""Who streams a session, kept in the cluster so that any api replica can serve it.

Two kinds of ``coordination.k8s.io/v1`` Lease in the sandbox namespace:

- **replica lease** ``icee-api-<replica>``, one per api process, renewed every
  ``lease_seconds / 3`` by a single task whatever the number of sessions or
  messages. Its ``holderIdentity`` is ``<lease name>/<nonce>``: a process
  restarted under the same pod name takes the lease over with a new nonce, so
  the claims of the process that died are seen as orphaned at once.
- **stream lease** ``stream-<session id>``, one per streamed session: the claim.
  Created when a client's WebSocket opens (create is atomic: the API server
  refuses a second one with 409 AlreadyExists, which is the "another client is
  already attached" answer on every replica), deleted when the stream ends,
  owned by the CodeSession (so it goes with it at the latest). Its
  ``holderIdentity`` is the replica lease's holder, never renewed itself.

The operator judges liveness by its own clock, as client-go's leader election
does: a replica lease whose resourceVersion did not move for its
``leaseDurationSeconds`` is dead, whatever ``renewTime`` says (that is the
holder's clock, possibly skewed from the operator's). A stream lease whose holder
is dead (replica lease expired, gone, or held by another nonce) ends its session
``ClientGone``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from icee_kube.leases import held_spec, new_lease

from icee_core import names

LABEL_LEASE = f"{names.GROUP}/lease"
KIND_REPLICA = "replica"
KIND_STREAM = "stream"
# Every icee lease (one list call gives a consistent snapshot of both kinds).
LEASES_SELECTOR = f"{names.MANAGED_SELECTOR},{LABEL_LEASE}"

_NOT_DNS = re.compile(r"[^a-z0-9-]+")


def replica_lease_name(replica: str) -> str:
    """``icee-api-<replica>`` as a DNS-1123 name (lowercase, at most 63 characters)."""
    cleaned = _NOT_DNS.sub("-", replica.lower()).strip("-") or "replica"
    return f"icee-api-{cleaned}"[:63].rstrip("-")


def stream_lease_name(session_id: str) -> str:
    return f"stream-{names.validate_session_id(session_id)}"


def new_holder(lease_name: str) -> str:
    """This process's identity: its replica lease and a nonce of its own."""
    return f"{lease_name}/{secrets.token_hex(6)}"


def holder_lease(holder: str) -> str:
    """The replica lease a holder identity belongs to."""
    return holder.rpartition("/")[0]


def replica_lease(name: str, holder: str, seconds: int, at: datetime) -> dict[str, Any]:
    labels = {names.LABEL_MANAGED_BY: names.MANAGED_BY, LABEL_LEASE: KIND_REPLICA}
    return new_lease({"name": name, "labels": labels}, held_spec(holder, seconds, at))


def stream_lease(
    session_id: str, session_uid: str, holder: str, seconds: int, at: datetime
) -> dict[str, Any]:
    metadata = {
        "name": stream_lease_name(session_id),
        "labels": {
            names.LABEL_MANAGED_BY: names.MANAGED_BY,
            LABEL_LEASE: KIND_STREAM,
            names.LABEL_SESSION: session_id,
        },
        # Goes with its session at the latest (after the session's retention).
        "ownerReferences": [
            {
                "apiVersion": names.API_VERSION,
                "kind": names.KIND,
                "name": session_id,
                "uid": session_uid,
            }
        ],
    }
    return new_lease(metadata, held_spec(holder, seconds, at))


@dataclass(frozen=True, slots=True)
class LeaseView:
    name: str
    kind: str
    uid: str
    resource_version: str
    holder: str
    seconds: int
    session_id: str | None

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> LeaseView:
        metadata = obj.get("metadata") or {}
        labels = metadata.get("labels") or {}
        spec = obj.get("spec") or {}
        seconds = spec.get("leaseDurationSeconds")
        return cls(
            name=str(metadata.get("name") or ""),
            kind=str(labels.get(LABEL_LEASE) or ""),
            uid=str(metadata.get("uid") or ""),
            resource_version=str(metadata.get("resourceVersion") or ""),
            holder=str(spec.get("holderIdentity") or ""),
            seconds=seconds if isinstance(seconds, int) and seconds > 0 else 15,
            session_id=labels.get(names.LABEL_SESSION),
        )


@dataclass(frozen=True, slots=True)
class Orphan:
    """A stream lease whose holder is gone: its session has no client any more."""

    lease: LeaseView
    session_id: str
    why: str


# A replica lease dead this many durations, with no claim left, is deleted (its pod
# was killed and replaced under another name: nobody will take it over).
STALE_DURATIONS = 4


class ReplicaLiveness:
    """Which api replicas are alive, by this process's monotonic clock.

    Feed it every snapshot of the leases (``orphans``): a replica lease is alive
    while its resourceVersion moved within its ``leaseDurationSeconds``. A lease
    first seen counts as renewed then (after a restart the judge waits one
    duration before calling anything dead).
    """

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, float]] = {}
        # Replica leases of the last snapshot that are long dead and hold no claim.
        self.stale: list[LeaseView] = []

    def orphans(self, leases: Iterable[Mapping[str, Any]], now: float) -> list[Orphan]:
        views = [LeaseView.of(obj) for obj in leases]
        replicas = {v.name: v for v in views if v.kind == KIND_REPLICA}
        for name, view in replicas.items():
            seen = self._seen.get(name)
            if seen is None or seen[0] != view.resource_version:
                self._seen[name] = (view.resource_version, now)
        for name in set(self._seen) - set(replicas):
            del self._seen[name]
        found = []
        holding = set()
        for view in views:
            if view.kind != KIND_STREAM or not view.session_id:
                continue
            holding.add(holder_lease(view.holder))
            why = self._dead(view.holder, replicas, now)
            if why is not None:
                found.append(Orphan(view, view.session_id, why))
        self.stale = [
            view
            for name, view in replicas.items()
            if name not in holding and now - self._seen[name][1] > STALE_DURATIONS * view.seconds
        ]
        return found

    def _dead(self, holder: str, replicas: Mapping[str, LeaseView], now: float) -> str | None:
        name = holder_lease(holder)
        replica = replicas.get(name)
        if replica is None:
            return f"the api replica that streamed it ({name or holder!r}) is gone"
        if replica.holder != holder:
            return f"the api replica that streamed it ({name}) restarted"
        since = now - self._seen[name][1]
        if since > replica.seconds:
            return (
                f"the api replica that streamed it ({name}) stopped renewing its lease"
                f" ({since:.0f} s, limit {replica.seconds} s)"
            )
        return None
