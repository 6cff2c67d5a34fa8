"""The api's informer against the real API server, through an etcd compaction.

A watch that comes back after a long disconnection resumes from a resourceVersion
that etcd has compacted away: the API server answers 410 Gone, the informer lists
again, and its cache converges (deleted objects gone for their waiters, changes
seen, new objects in). No operator runs in this namespace: the CodeSessions are
plain objects here.

The apiserver's watch cache keeps its own event history after etcd compacts (it
only drops list snapshots), so a version from minutes ago may still be served from
it; the watch resumes from revision 1, before both the compaction and the watch
cache's window, as a process partitioned for long would.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from conftest import apply_crd, kubectl
from icee_api.session.cluster import Cluster
from icee_api.session.watches import Watches
from icee_core.models import CodeSessionSpec

pytestmark = pytest.mark.cluster

# The local cluster's etcd (cluster/up.sh): its v3 JSON gateway.
ETCD = os.environ.get("ICEE_ETCD_URL", "http://127.0.0.1:2379")
STALE = "1"


def etcd(call: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(f"{ETCD}/v3/{call}", data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
        return answer


def compact_etcd() -> int:
    """Compact etcd's history up to its current revision; returns that revision."""
    key = base64.b64encode(b"/registry/namespaces/default").decode()
    revision = int(etcd("kv/range", {"key": key})["header"]["revision"])
    etcd("kv/compaction", {"revision": str(revision), "physical": True})
    return revision


async def until(condition: Callable[[], bool], within: float) -> None:
    for _ in range(int(within / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {within} s")


@pytest.fixture
def bare_namespace(kubeconfig: str) -> Iterator[str]:
    apply_crd("codesession")
    ns = f"icee-inf-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", ns)
    try:
        yield ns
    finally:
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


class GappedCluster(Cluster):
    """The CodeSession watch after the first one waits for ``resume``, then comes back
    from a revision compacted away (a long disconnection)."""

    def __init__(self, base: Cluster) -> None:
        super().__init__(base.kube, base.namespace)
        self.watched: list[str | None] = []
        self.in_gap = asyncio.Event()
        self.resume = asyncio.Event()

    async def watch_sessions(  # type: ignore[override]
        self, resource_version: str | None, seconds: float
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        self.watched.append(resource_version)
        if len(self.watched) == 2:
            self.in_gap.set()
            await self.resume.wait()
            resource_version = STALE
        async for event in super().watch_sessions(resource_version, seconds):
            yield event


async def test_a_watch_that_gets_410_after_a_compaction_lists_again_and_converges(
    bare_namespace: str, kubeconfig: str
) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    gone, ended, new = ids
    spec = CodeSessionSpec(language="python", code="print(1)")
    base = await Cluster.connect(kubeconfig, bare_namespace, 8)
    cluster = GappedCluster(base)
    watches = Watches(cluster, watch_seconds=2)
    try:
        for sid in (gone, ended):
            await cluster.create_session(sid, spec)
        watches.start()
        await until(lambda: not watches.unsynced(), 30)
        outcomes = watches.outcomes
        assert gone in outcomes
        assert ended in outcomes
        with outcomes.subscribe(gone) as gone_box, outcomes.subscribe(ended) as ended_box:
            # The first watch times out (2 s); the next one stays away until released.
            await asyncio.wait_for(cluster.in_gap.wait(), 30)
            kubectl("delete", "codesession", gone, "-n", bare_namespace, "--wait=true")
            await cluster.create_session(new, spec)
            final = {"status": {"phase": "Terminated", "reason": "UserTerminated"}}
            kubectl(
                "patch", "codesession", ended, "-n", bare_namespace, "--subresource=status",
                "--type=merge", "-p", json.dumps(final),
            )  # fmt: skip
            compacted = compact_etcd()
            assert outcomes.relists == 1
            cluster.resume.set()

            await until(lambda: outcomes.relists >= 2, 30)
            assert outcomes.expired == 1  # the API server said 410 Gone
            assert gone_box.value is None
            assert gone not in outcomes  # deleted while the watch was away
            outcome = ended_box.value
            assert outcome is not None
            assert (outcome.state.value, outcome.reason) == ("terminated", "UserTerminated")
            assert new in outcomes
            assert watches.unsynced() == []
            # The watch after the relist resumes from the new list, past the compaction.
            await until(lambda: len(cluster.watched) >= 3, 10)
            resumed = cluster.watched[2]
            assert resumed is not None
            assert int(resumed) >= compacted
    finally:
        await watches.stop()
        await base.close()
