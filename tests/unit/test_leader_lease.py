"""Leader election's pure parts: when a Lease counts as free, and what it records."""

from datetime import UTC, datetime

from icee_kube.leases import micro_time
from icee_operator.leader import LeaseRecord, Observer, lease_spec, record_of


def record(holder: str, renew: str) -> LeaseRecord:
    return LeaseRecord(holder=holder, renew_time=renew, transitions=0, resource_version="1")


def test_a_lease_nobody_holds_is_free_at_once() -> None:
    assert Observer().expired(record("", ""), 15, now=0.0)


def test_a_held_lease_is_free_only_after_standing_still_for_its_duration() -> None:
    observer = Observer()
    assert not observer.expired(record("a", "t1"), 15, now=100.0)
    assert not observer.expired(record("a", "t1"), 15, now=114.9)
    assert observer.expired(record("a", "t1"), 15, now=115.0)


def test_a_renewal_restarts_the_count_by_the_observers_own_clock() -> None:
    observer = Observer()
    observer.expired(record("a", "t1"), 15, now=100.0)
    # Renewed: whatever the holder's clock says, the count starts when we saw it change.
    assert not observer.expired(record("a", "t2"), 15, now=114.0)
    assert not observer.expired(record("a", "t2"), 15, now=128.0)
    assert observer.expired(record("a", "t2"), 15, now=129.0)
    # A new holder is a change too.
    assert not observer.expired(record("b", "t2"), 15, now=130.0)


def test_the_record_is_read_from_the_lease_and_written_as_micro_time() -> None:
    now = datetime(2026, 11, 29, 23, 5, 1, 250000, tzinfo=UTC)
    spec = lease_spec("op-1", 15, now, transitions=3)
    assert spec == {
        "holderIdentity": "op-1",
        "leaseDurationSeconds": 15,
        "acquireTime": "2026-11-29T23:05:01.250000Z",
        "renewTime": "2026-11-29T23:05:01.250000Z",
        "leaseTransitions": 3,
    }
    assert micro_time(now) == spec["renewTime"]
    lease = {"metadata": {"resourceVersion": "42"}, "spec": spec}
    assert record_of(lease) == LeaseRecord("op-1", "2026-11-29T23:05:01.250000Z", 3, "42")
    assert record_of({}) == LeaseRecord("", "", 0, "")
