"""Limit accounting: byte budgets and the idle clock."""

import pytest
from icee_api.session.limits import ByteBudget, IdleClock


def test_budget_takes_up_to_the_limit_then_trips() -> None:
    b = ByteBudget(10)
    assert b.take(4) == 4
    assert not b.exceeded
    assert b.take(6) == 6  # exactly at the limit is fine
    assert not b.exceeded
    assert b.take(1) == 0
    assert b.exceeded


def test_budget_cuts_the_chunk_that_crosses_the_limit() -> None:
    b = ByteBudget(10)
    b.take(8)
    assert b.take(5) == 2
    assert (b.used, b.exceeded) == (10, True)


def test_all_or_nothing_for_stdin() -> None:
    b = ByteBudget(5)
    assert b.fits(3)
    assert not b.fits(3)
    assert (b.used, b.exceeded) == (3, True)


def test_negative_limit_is_a_bug() -> None:
    with pytest.raises(ValueError, match="limit"):
        ByteBudget(-1)


def test_idle_clock_counts_from_the_last_touch() -> None:
    now = [100.0]
    clock = IdleClock(30, clock=lambda: now[0])
    now[0] = 120.0
    assert clock.remaining() == 10
    clock.touch()
    now[0] = 145.0
    assert clock.remaining() == 5
    now[0] = 151.0
    assert clock.remaining() < 0
