"""Leader election through a coordination.k8s.io Lease: one operator replica acts.

With more than one operator replica (the chart's `operator.replicas`), only the
holder of the Lease runs kopf (session handlers, the repair loop, the execution
deadlines and the warm pool loop); the others stand by, answering their liveness
probe, and try again every `retry_seconds`. kopf's own peering cannot do this:
replicas of equal priority all pause.

The rules are client-go's: a holder renews `spec.renewTime` every
`renew_seconds`; a standby takes the Lease over once the record it saw has not
changed for `lease_seconds` by its OWN clock (no clock comparison between nodes),
with a resourceVersion-guarded replace, so two standbys never both win. A leader
that could not renew within `lease_seconds` stops acting and exits (its
container restarts as a standby); one that shuts down clears the holder, so a
standby takes over at its next try instead of after the lease duration.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from icee_kube.client import KubeClient, KubeError
from icee_kube.leases import held_spec, micro_time, new_lease
from icee_kube.paths import leases_path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseRecord:
    holder: str
    renew_time: str
    transitions: int
    resource_version: str


def record_of(lease: Mapping[str, Any]) -> LeaseRecord:
    spec = lease.get("spec") or {}
    return LeaseRecord(
        holder=str(spec.get("holderIdentity") or ""),
        renew_time=str(spec.get("renewTime") or ""),
        transitions=int(spec.get("leaseTransitions") or 0),
        resource_version=str((lease.get("metadata") or {}).get("resourceVersion") or ""),
    )


def lease_spec(
    identity: str, lease_seconds: int, now: datetime, transitions: int
) -> dict[str, Any]:
    return held_spec(identity, lease_seconds, now) | {"leaseTransitions": transitions}


class Observer:
    """When the Lease record last changed, by this process's monotonic clock."""

    def __init__(self) -> None:
        self._seen: tuple[str, str] | None = None
        self._since = 0.0

    def expired(self, record: LeaseRecord, lease_seconds: float, now: float) -> bool:
        """Free to take: nobody holds it, or its record stood still for `lease_seconds`."""
        key = (record.holder, record.renew_time)
        if key != self._seen:
            self._seen, self._since = key, now
        return not record.holder or now - self._since >= lease_seconds


class LeaderElection:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        name: str,
        identity: str,
        lease_seconds: int = 15,
        renew_seconds: float = 5.0,
        retry_seconds: float = 2.0,
    ) -> None:
        self._client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.retry_seconds = retry_seconds
        self._observer = Observer()

    def _path(self, name: str | None = None) -> str:
        return leases_path(self.namespace, name)

    async def _read(self) -> dict[str, Any] | None:
        try:
            return await self._client.call("GET", self._path(self.name))
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    async def _replace(self, lease: dict[str, Any]) -> None:
        await self._client.call("PUT", self._path(self.name), body=lease)

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this process holds the Lease afterwards."""
        lease = await self._read()
        now = datetime.now(UTC)
        if lease is None:
            body = new_lease(
                {"name": self.name, "namespace": self.namespace},
                lease_spec(self.identity, self.lease_seconds, now, 0),
            )
            try:
                await self._client.call("POST", self._path(), body=body)
            except KubeError as error:
                if error.status == 409:
                    return False  # another replica created it first
                raise
            return True
        record = record_of(lease)
        if record.holder == self.identity:
            spec = dict(lease["spec"]) | {"renewTime": micro_time(now)}
        elif self._observer.expired(record, self.lease_seconds, time.monotonic()):
            spec = lease_spec(self.identity, self.lease_seconds, now, record.transitions + 1)
        else:
            return False
        # The resourceVersion makes it conditional: a concurrent change wins, we retry.
        lease["spec"] = spec
        try:
            await self._replace(lease)
        except KubeError as error:
            if error.status == 409:
                return False
            raise
        return True

    async def acquire(self) -> None:
        """Return once this process holds the Lease."""
        logged = False
        while True:
            try:
                if await self.try_acquire_or_renew():
                    logger.info("leader: %s holds lease %s", self.identity, self.name)
                    return
            except Exception as error:
                logger.warning("leader: cannot read lease %s: %r", self.name, error)
            if not logged:
                logger.info("leader: %s standing by for lease %s", self.identity, self.name)
                logged = True
            await asyncio.sleep(self.retry_seconds)

    async def keep(self) -> None:
        """Renew until a renewal has not succeeded for `lease_seconds`; then return (lost)."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.renew_seconds)
            try:
                if await self.try_acquire_or_renew():
                    last = time.monotonic()
                    continue
                lease = await self._read()
                if lease is None or record_of(lease).holder != self.identity:
                    logger.error("leader: lease %s was taken over", self.name)
                    return
            except Exception as error:
                logger.warning("leader: cannot renew lease %s: %r", self.name, error)
            if time.monotonic() - last >= self.lease_seconds:
                logger.error("leader: lease %s not renewed in time", self.name)
                return

    async def release(self) -> None:
        """Clear the holder (if still us), so a standby takes over at its next try."""
        try:
            lease = await self._read()
            if lease is None or record_of(lease).holder != self.identity:
                return
            lease["spec"] = dict(lease["spec"]) | {"holderIdentity": None}
            await self._replace(lease)
            logger.info("leader: released lease %s", self.name)
        except Exception as error:  # it expires on its own
            logger.warning("leader: cannot release lease %s: %r", self.name, error)
