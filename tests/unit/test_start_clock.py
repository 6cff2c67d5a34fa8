"""The start clock: each step marked once, observed once, by how the sandbox started."""

from __future__ import annotations

import pytest
from icee_api.metrics import Metrics
from icee_api.session.start_clock import MARKS, StartClock, start_marks
from prometheus_client import generate_latest


def count(metrics: Metrics, mark: str, how: str) -> float | None:
    return metrics.registry.get_sample_value(
        "icee_start_mark_seconds_count", {"mark": mark, "how": how}
    )


def test_marks_are_observed_once_under_how_the_sandbox_started() -> None:
    metrics = Metrics()
    clock = StartClock(metrics.start_marks, since=0.0)
    clock.mark("read")
    first = clock.marks["read"]
    clock.mark("read")  # the first time counts
    assert clock.marks["read"] == first
    clock.how = "warm"
    clock.mark("first_output")
    clock.report()
    clock.report()  # once
    assert count(metrics, "read", "warm") == 1
    assert count(metrics, "first_output", "warm") == 1
    assert count(metrics, "attached", "warm") is None  # never marked: not observed
    assert count(metrics, "read", "cold") is None


def test_marks_are_in_order_of_time_and_unknown_ones_refused() -> None:
    clock = StartClock(Metrics().start_marks)
    for mark in MARKS:
        clock.mark(mark)
    times = [clock.marks[m] for m in MARKS]
    assert times == sorted(times)
    with pytest.raises(ValueError, match="unknown start mark"):
        clock.mark("attached_twice")


def test_start_marks_reads_them_back_from_the_exposition() -> None:
    metrics = Metrics()
    clock = StartClock(metrics.start_marks)
    clock.how = "warm"
    clock.mark("read")
    clock.mark("attached")
    clock.report()
    text = generate_latest(metrics.registry).decode()
    assert start_marks(text, "warm") == {"read", "attached"}
    assert start_marks(text, "cold") == set()
