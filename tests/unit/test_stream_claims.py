"""Stream claims across api replicas: the operator's judge of which holders are dead."""

from datetime import UTC, datetime
from typing import Any

from icee_core import claims as c

SID = "0b8a0f8e-6f5e-4c4c-9d3a-0e1f2a3b4c5d"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def replica(name: str, holder: str, version: str = "1", seconds: int = 15) -> dict[str, Any]:
    lease = c.replica_lease(name, holder, seconds, NOW)
    lease["metadata"] |= {"resourceVersion": version, "uid": f"u-{name}"}
    return lease


def stream(holder: str, session_id: str = SID) -> dict[str, Any]:
    lease = c.stream_lease(session_id, "session-uid", holder, 15, NOW)
    lease["metadata"] |= {"resourceVersion": "1", "uid": "u-stream"}
    return lease


def test_names_are_dns_labels() -> None:
    assert c.replica_lease_name("icee-api-7c9f/Pod_1") == "icee-api-icee-api-7c9f-pod-1"
    assert len(c.replica_lease_name("x" * 300)) == 63
    assert c.stream_lease_name(SID) == f"stream-{SID}"
    holder = c.new_holder("icee-api-a")
    assert c.holder_lease(holder) == "icee-api-a"
    assert holder != c.new_holder("icee-api-a")


def test_a_renewed_replica_keeps_its_sessions() -> None:
    judge = c.ReplicaLiveness()
    holder = "icee-api-a/1"
    for i in range(10):  # renewed every 5 s, judged over 50 s
        assert judge.orphans([replica("icee-api-a", holder, str(i)), stream(holder)], i * 5.0) == []


def test_a_replica_that_stops_renewing_orphans_its_sessions_after_the_duration() -> None:
    judge = c.ReplicaLiveness()
    holder = "icee-api-a/1"
    leases = [replica("icee-api-a", holder, "7"), stream(holder)]
    assert judge.orphans(leases, 100.0) == []
    assert judge.orphans(leases, 114.0) == []  # within 15 s of the last change seen
    [orphan] = judge.orphans(leases, 116.0)
    assert orphan.session_id == SID
    assert "stopped renewing" in orphan.why
    assert orphan.lease.name == f"stream-{SID}"
    assert orphan.lease.uid == "u-stream"


def test_judged_by_our_clock_not_the_holders_renew_time() -> None:
    # renewTime far in the past (a skewed holder clock) does not matter: the version moves.
    judge = c.ReplicaLiveness()
    holder = "icee-api-a/1"
    for i in range(5):
        lease = replica("icee-api-a", holder, str(i))
        lease["spec"]["renewTime"] = "2001-01-01T00:00:00.000000Z"
        assert judge.orphans([lease, stream(holder)], i * 10.0) == []


def test_a_restarted_or_vanished_replica_orphans_at_once() -> None:
    judge = c.ReplicaLiveness()
    restarted = judge.orphans([replica("icee-api-a", "icee-api-a/2"), stream("icee-api-a/1")], 0.0)
    assert [o.why for o in restarted] == ["the api replica that streamed it (icee-api-a) restarted"]
    [gone] = c.ReplicaLiveness().orphans([stream("icee-api-b/1")], 0.0)
    assert "is gone" in gone.why


def test_other_leases_and_healthy_sessions_are_left_alone() -> None:
    judge = c.ReplicaLiveness()
    foreign = {"metadata": {"name": "kube-scheduler", "labels": {}}, "spec": {}}
    leases = [foreign, replica("icee-api-a", "icee-api-a/1", "3"), stream("icee-api-a/1")]
    assert judge.orphans(leases, 0.0) == []


def test_a_long_dead_replica_lease_without_claims_is_stale() -> None:
    judge = c.ReplicaLiveness()
    dead = replica("icee-api-a", "icee-api-a/1", "3")
    alive = replica("icee-api-b", "icee-api-b/1", "3")
    judge.orphans([dead, alive], 0.0)
    assert judge.stale == []
    judge.orphans([dead, replica("icee-api-b", "icee-api-b/1", "4")], 30.0)
    assert judge.stale == []  # dead, but not for 4 durations yet
    judge.orphans([dead, stream("icee-api-a/1"), replica("icee-api-b", "icee-api-b/1", "5")], 61.0)
    assert judge.stale == []  # still names a claim: the claim goes first
    judge.orphans([dead, replica("icee-api-b", "icee-api-b/1", "6")], 66.0)
    assert [v.name for v in judge.stale] == ["icee-api-a"]
