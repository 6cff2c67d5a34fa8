"""The start gate's logic: round-robin across clients, FIFO within one, release,
hold timeouts, leaving the queue (icee_api.start_gate)."""

import asyncio

import pytest
from icee_api.admission import SessionCounts
from icee_api.start_gate import FairQueue, GateRelease, StartGate

# -- FairQueue (no I/O, no clock) ----------------------------------------------------


def test_slots_are_given_at_once_while_free() -> None:
    q = FairQueue(2)
    assert q.join("a1", "A") == ["a1"]
    assert q.join("a2", "A") == ["a2"]
    assert q.join("a3", "A") == []
    assert (q.held, q.waiting) == (2, 1)
    assert q.holds("a1")
    assert q.waits("a3")


def test_a_flood_from_one_client_does_not_go_before_another_client() -> None:
    q = FairQueue(1)
    q.join("f1", "F")
    for key in ("f2", "f3", "f4"):
        assert q.join(key, "F") == []
    assert q.join("v1", "V") == []
    # The victim joined last but was never served: it is next, not behind the flood.
    assert q.leave("f1") == ["v1"]
    assert q.join("v2", "V") == []
    # Then turns alternate; within the flooder its oldest first.
    assert q.leave("v1") == ["f2"]
    assert q.leave("f2") == ["v2"]
    assert q.leave("v2") == ["f3"]
    assert q.leave("f3") == ["f4"]
    assert q.leave("f4") == []
    assert (q.held, q.waiting) == (0, 0)


def test_round_robin_over_three_clients() -> None:
    q = FairQueue(1)
    q.join("x", "X")  # holds the slot
    for n in range(3):
        for client in "ABC":
            q.join(f"{client}{n}", client)
    order = []
    key = "x"
    for _ in range(9):
        (key,) = q.leave(key)
        order.append(key)
    assert order == ["A0", "B0", "C0", "A1", "B1", "C1", "A2", "B2", "C2"]


def test_a_client_served_recently_waits_for_the_others_turn() -> None:
    # One waiter at a time, each joining right after its last grant, does not take
    # every slot from a client that has been waiting.
    q = FairQueue(1)
    q.join("f1", "F")
    q.join("f2", "F")
    q.join("p1", "P")
    assert q.leave("f1") == ["p1"]
    q.join("p2", "P")  # P still holds p1: its turn was just now
    assert q.leave("p1") == ["f2"]
    assert q.leave("f2") == ["p2"]


def test_a_waiter_that_leaves_frees_nothing_and_is_skipped() -> None:
    q = FairQueue(1)
    q.join("a1", "A")
    q.join("a2", "A")
    q.join("a3", "A")
    assert q.leave("a2") == []
    assert q.waiting == 1
    assert q.leave("a1") == ["a3"]
    assert q.leave("a3") == []
    assert (q.held, q.waiting) == (0, 0)


def test_leave_is_idempotent_and_unknown_keys_are_fine() -> None:
    q = FairQueue(1)
    q.join("a1", "A")
    q.join("b1", "B")
    assert q.leave("a1") == ["b1"]
    assert q.leave("a1") == []
    assert q.leave("nobody") == []
    assert q.held == 1


def test_joining_twice_is_refused() -> None:
    q = FairQueue(1)
    q.join("a1", "A")
    q.join("a2", "A")
    with pytest.raises(ValueError, match="a1"):
        q.join("a1", "A")
    with pytest.raises(ValueError, match="a2"):
        q.join("a2", "B")


def test_a_gate_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        FairQueue(0)


def test_an_idle_client_is_forgotten() -> None:
    q = FairQueue(1)
    q.join("a1", "A")
    q.leave("a1")
    q.join("b1", "B")
    q.join("a2", "A")  # A neither held nor waited since its turn: it starts afresh
    q.join("b2", "B")
    assert q.leave("b1") == ["a2"]
    assert q.leave("a2") == ["b2"]
    assert q.leave("b2") == []
    assert q._served == {}  # nothing kept for clients that neither wait nor hold


# -- StartGate (futures and the hold timer) ------------------------------------------


async def test_tickets_resolve_in_turn() -> None:
    gate = StartGate(1, hold_seconds=60)
    f1 = gate.join("f1", "F")
    f2 = gate.join("f2", "F")
    v1 = gate.join("v1", "V")
    assert f1.done()
    assert f1.result() is True
    assert not f2.done()
    assert not v1.done()
    gate.started("f1")  # its container runs: the slot goes on
    assert v1.done()
    assert v1.result() is True
    assert not f2.done()
    gate.leave("v1")  # the stream ended
    assert f2.result() is True
    gate.leave("f2")
    assert (gate.held, gate.waiting) == (0, 0)


async def test_started_does_not_touch_a_waiter() -> None:
    gate = StartGate(1, hold_seconds=60)
    gate.join("a1", "A")
    a2 = gate.join("a2", "A")
    gate.started("a2")
    assert gate.waits("a2")
    assert not a2.done()


async def test_a_waiter_whose_session_ended_gets_false() -> None:
    gate = StartGate(1, hold_seconds=60)
    gate.join("a1", "A")
    a2 = gate.join("a2", "A")
    gate.leave("a2")
    assert a2.result() is False
    assert gate.waiting == 0
    assert gate.holds("a1")


async def test_a_cancelled_waiter_leaves_without_taking_a_slot() -> None:
    # A client that disconnects while queued: its stream cancels the wait and
    # leaves; the slot goes to the next waiter, nothing leaks.
    gate = StartGate(1, hold_seconds=60)
    gate.join("a1", "A")
    b1 = gate.join("b1", "B")
    c1 = gate.join("c1", "C")
    waiter = asyncio.ensure_future(b1)
    await asyncio.sleep(0)
    waiter.cancel()
    gate.leave("b1")
    gate.leave("a1")
    assert c1.result() is True
    assert gate.held == 1
    assert gate.waiting == 0


async def test_the_hold_timer_gives_a_slot_back() -> None:
    expired: list[int] = []
    gate = StartGate(1, hold_seconds=0.01, on_expired=lambda: expired.append(1))
    gate.join("a1", "A")
    b1 = gate.join("b1", "B")
    assert await asyncio.wait_for(b1, 5) is True
    assert not gate.holds("a1")
    assert expired == [1]
    gate.leave("b1")  # released in time: its timer is cancelled
    await asyncio.sleep(0.05)
    assert expired == [1]


async def test_observers_free_slots_and_queues() -> None:
    gate = StartGate(1, hold_seconds=60)
    pods = GateRelease(gate, lambda pod: bool(pod.get("up")), ended=False)
    sessions = GateRelease(gate, lambda obj: bool(obj.get("final")), ended=True)
    gate.join("a1", "A")
    a2 = gate.join("a2", "A")
    b1 = gate.join("b1", "B")
    pods.apply("a1", {"up": False})
    assert gate.holds("a1")
    pods.apply("a2", {"up": True})  # a waiter's pod cannot run: nothing happens
    assert gate.waits("a2")
    pods.begin_relist()
    pods.apply("a1", {"up": True})
    pods.end_relist()
    assert b1.result() is True
    sessions.apply("a2", {"final": True})  # ended while it waited
    assert a2.result() is False
    sessions.apply("b1", None)  # deleted
    assert (gate.held, gate.waiting) == (0, 0)


def test_queued_sessions_count_as_starting_for_admission() -> None:
    wall = [10_000.0]
    counts = SessionCounts(wall=lambda: wall[0])
    created = "1970-01-01T02:46:40Z"  # 10000 s after the epoch
    obj = {"metadata": {"labels": {"icee.dev/client": "c"}, "creationTimestamp": created}}
    counts.apply("s1", obj)
    assert counts.starting == 1  # created moments ago
    wall[0] += 60
    assert counts.starting == 0  # an old unconnected session is idle
    counts.queued = lambda key: key == "s1"
    assert counts.starting == 1
    assert counts.starting_of_client("c") == 1


def test_a_reserved_slot_goes_only_to_a_newcomer() -> None:
    q = FairQueue(2, reserved=1)
    assert q.join("f1", "F") == ["f1"]  # a newcomer may take any slot
    assert q.join("f2", "F") == []  # F has a start in progress: the last slot is kept
    assert q.join("v1", "V") == ["v1"]  # a client with nothing going takes it at once
    # F's start ends: the one free slot is the last one, and F is no newcomer.
    assert q.leave("f1") == []
    assert q.leave("v1") == ["f2"]  # two free: F takes one, one stays reserved
    assert q.join("w1", "W") == ["w1"]
    with pytest.raises(ValueError, match="at least one slot for everyone"):
        FairQueue(2, reserved=2)
