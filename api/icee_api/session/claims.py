"""One client per session across api replicas: the claim lives in the cluster.

This process holds a replica lease, renewed by one task every ``lease_seconds / 3``
(no work per session or per message), and one stream lease per session it
streams, created when the client's WebSocket opens and deleted when the stream
ends. A second client of the same session, on any replica, finds the stream lease
there (409 AlreadyExists) and is refused. If this process dies, its replica lease
stops moving and the operator ends every session it streamed ``ClientGone``
(``icee_core.claims``; docs/design.md, "More than one api replica").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from datetime import UTC, datetime
from typing import Any, Protocol

from icee_core import claims as c
from icee_kube.client import MERGE_PATCH, KubeError
from icee_kube.leases import micro_time
from icee_kube.paths import leases_path

log = logging.getLogger(__name__)


class Caller(Protocol):
    async def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]: ...


def default_replica() -> str:
    """The pod's name in a cluster (the chart sets ICEE_REPLICA_NAME), else host and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Leases:
    """The Lease calls, in one namespace (JSON in, JSON out)."""

    def __init__(self, kube: Caller, namespace: str) -> None:
        self._kube = kube
        self._namespace = namespace

    def _path(self, name: str | None = None) -> str:
        return leases_path(self._namespace, name)

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._kube.call("POST", self._path(), body=body)

    async def get(self, name: str) -> dict[str, Any] | None:
        try:
            return await self._kube.call("GET", self._path(name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self._kube.call(
            "PATCH", self._path(name), body=patch, content_type=MERGE_PATCH
        )

    async def delete(self, name: str, uid: str) -> None:
        """Delete it if it is still the object with ``uid``; gone already is fine."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": uid}}
        try:
            await self._kube.call("DELETE", self._path(name), body=body)
        except KubeError as exc:
            if exc.status not in (404, 409):
                raise


class StreamClaims:
    """This replica's lease and the sessions it streams; ``run()`` in the lifespan."""

    def __init__(self, leases: Leases, replica: str, lease_seconds: int = 15) -> None:
        self._leases = leases
        self.lease_name = c.replica_lease_name(replica)
        self.holder = c.new_holder(self.lease_name)
        self.lease_seconds = lease_seconds
        self._uid = ""
        self._version = ""
        self._renewed = float("-inf")
        self._held: dict[str, str] = {}  # session id -> stream lease uid
        self._releasing: set[asyncio.Task[None]] = set()

    @property
    def healthy(self) -> bool:
        """The replica lease was renewed recently: the operator counts our claims alive."""
        return time.monotonic() - self._renewed < self.lease_seconds * 2 / 3

    async def run(self) -> None:
        """Hold the replica lease: take it, then renew it, for as long as the app runs."""
        interval = self.lease_seconds / 3
        while True:
            try:
                if not self._uid:
                    await self._acquire()
                else:
                    await self._renew()
            except KubeError as exc:
                log.warning("replica lease %s: %s", self.lease_name, exc)
                if exc.status in (404, 409):
                    self._uid = ""  # deleted or taken: acquire it again
            await asyncio.sleep(interval if self._uid else 1.0)

    async def _acquire(self) -> None:
        now = datetime.now(UTC)
        body = c.replica_lease(self.lease_name, self.holder, self.lease_seconds, now)
        try:
            obj = await self._leases.create(body)
        except KubeError as exc:
            if exc.status != 409:
                raise
            # Ours by name (this pod's, left by a process that died): take it over;
            # the new holder tells the operator that process's claims are orphans.
            obj = await self._leases.patch(self.lease_name, {"spec": body["spec"]})
        self._took(obj)
        log.info("replica lease %s held as %s", self.lease_name, self.holder)

    async def _renew(self) -> None:
        patch = {
            "metadata": {"resourceVersion": self._version},
            "spec": {
                "holderIdentity": self.holder,
                "renewTime": micro_time(datetime.now(UTC)),
            },
        }
        self._took(await self._leases.patch(self.lease_name, patch))

    def _took(self, obj: dict[str, Any]) -> None:
        metadata = obj.get("metadata") or {}
        self._uid = str(metadata.get("uid") or "")
        self._version = str(metadata.get("resourceVersion") or "")
        self._renewed = time.monotonic()

    async def claim(self, session_id: str, session_uid: str) -> bool:
        """Claim the session's stream for this process; False: another client has it."""
        if not self.healthy:
            raise KubeError("this api replica does not hold its lease (Kubernetes unreachable?)")
        body = c.stream_lease(
            session_id, session_uid, self.holder, self.lease_seconds, datetime.now(UTC)
        )
        try:
            obj = await self._leases.create(body)
        except KubeError as exc:
            if exc.status == 409:
                return False
            raise KubeError(f"cannot claim the session: {exc}", exc.status) from exc
        self._held[session_id] = str((obj.get("metadata") or {}).get("uid") or "")
        return True

    def release(self, session_id: str) -> None:
        """Drop the claim (in the background: a cancelled stream must not keep it)."""
        uid = self._held.pop(session_id, None)
        if uid is None:
            return
        task = asyncio.create_task(self._delete(c.stream_lease_name(session_id), uid))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _delete(self, name: str, uid: str) -> None:
        try:
            await self._leases.delete(name, uid)
        except KubeError as exc:  # the operator drops it once the session ended
            log.warning("cannot release %s: %s", name, exc)

    async def close(self) -> None:
        """Shutting down: let releases finish, then give the replica lease up."""
        if self._releasing:
            await asyncio.wait(self._releasing, timeout=5)
        if self._uid:
            with contextlib.suppress(KubeError):
                await self._leases.delete(self.lease_name, self._uid)
            self._uid = ""
