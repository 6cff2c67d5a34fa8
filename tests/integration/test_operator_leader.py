"""Leader election between operator replicas on the real cluster: two operator
processes share one Lease; only its holder keeps the warm pool, and the standby
takes over when the leader is killed."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    Process,
    apply_crd,
    apply_pool,
    free_port,
    kubectl,
    pod_ready,
    start_operator,
    wait_for,
)
from icee_core import names

pytestmark = pytest.mark.cluster

LEASE = "icee-operator"
LEASE_SECONDS = 6
STARTED = re.compile(r"pool python: \d+ warm pod\(s\) started")


class Replicas:
    def __init__(self, namespace: str, logs: Path) -> None:
        self.namespace = namespace
        self.logs = logs

    def start(self) -> tuple[Process, int]:
        port = free_port()
        process = start_operator(
            self.namespace,
            self.logs,
            health_port=str(port),
            leader_lease=LEASE,
            leader_lease_seconds=str(LEASE_SECONDS),
            leader_renew_seconds="2",
            leader_retry_seconds="1",
        )
        return process, port

    def kubectl(self, *args: str, check: bool = True) -> str:
        return kubectl("-n", self.namespace, *args, check=check)

    def holder(self) -> str:
        return self.kubectl(
            "get", "lease", LEASE, "-o", "jsonpath={.spec.holderIdentity}", check=False
        ).strip()

    def warm_pods(self) -> list[dict[str, Any]]:
        out = self.kubectl("get", "pods", "-l", f"{names.LABEL_POOL}=python", "-o", "json")
        return [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]

    def ready_warm_pods(self) -> list[dict[str, Any]]:
        return [p for p in self.warm_pods() if pod_ready(p)]


def identity(process: Process) -> str:
    """The identity a replica announced (holding or standing by)."""
    found = re.search(r"leader: (\S+) (?:holds|standing by for) lease", process.log.read_text())
    return found.group(1) if found else ""


@pytest.fixture
def replicas(kubeconfig: str, process_logs: Path) -> Iterator[Replicas]:
    apply_crd("sandboxpool")
    namespace = f"icee-leader-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", namespace)
    apply_pool(namespace, "python", "python", 1)
    try:
        yield Replicas(namespace, process_logs)
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_only_the_lease_holder_keeps_the_pool_and_a_standby_takes_over(
    replicas: Replicas,
) -> None:
    (first, first_port), (second, second_port) = replicas.start(), replicas.start()
    try:
        wait_for("a lease holder", lambda: bool(replicas.holder()), within=60)
        wait_for("both replicas announced", lambda: bool(identity(first) and identity(second)))
        leader, standby = (
            (first, second) if replicas.holder() == identity(first) else (second, first)
        )
        assert replicas.holder() == identity(leader)
        wait_for("the pool's warm pod ready", lambda: len(replicas.ready_warm_pods()) == 1)
        time.sleep(3)  # a second pool loop would have created pods of its own by now
        assert len(replicas.warm_pods()) == 1
        assert STARTED.search(leader.log.read_text()), leader.tail()
        standby_log = standby.log.read_text()
        assert "standing by" in standby_log
        assert not STARTED.search(standby_log), standby.tail()
        assert "Handler" not in standby_log  # kopf never ran there
        # The standby answers its liveness probe (the kubelet would restart it otherwise).
        port = first_port if standby is first else second_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            assert response.status == 200

        # The leader dies without a word; its warm pod goes too, so the pool needs a refill.
        leader.stop(signal.SIGKILL)
        replicas.kubectl("delete", "pods", "-l", f"{names.LABEL_POOL}=python", "--wait=false")
        took = wait_for(
            "the standby to take the lease over",
            lambda: replicas.holder() == identity(standby),
            within=4 * LEASE_SECONDS,
            every=0.25,
        )
        print(f"takeover after the leader's kill: {took:.1f} s (lease {LEASE_SECONDS} s)")
        # Within the lease duration of the holder's last renewal, plus the standby's retry.
        assert took <= 2 * LEASE_SECONDS, f"took {took:.1f} s"
        wait_for("the new leader's warm pod ready", lambda: len(replicas.ready_warm_pods()) == 1)
        assert STARTED.search(standby.log.read_text()), standby.tail()

        # A leader whose Lease was taken (here by hand) stops acting and exits non-zero
        # (its container restarts as a standby); the next standby waits the lease out.
        third, _ = replicas.start()
        try:
            wait_for("a third replica standing by", lambda: bool(identity(third)))
            intruder = {"spec": {"holderIdentity": "intruder", "renewTime": None}}
            replicas.kubectl("patch", "lease", LEASE, "--type=merge", "-p", json.dumps(intruder))
            assert standby.popen.wait(timeout=30) == 1, standby.tail()
            assert "lost the lease" in standby.log.read_text()
            wait_for(
                "the third replica to take the lease over",
                lambda: replicas.holder() == identity(third),
                within=4 * LEASE_SECONDS,
            )
            # A leader that is stopped hands over at once: it clears the holder.
            assert third.stop(signal.SIGTERM) == 0, third.tail()
            assert replicas.holder() == ""
        finally:
            third.stop()
    finally:
        first.stop()
        second.stop()
