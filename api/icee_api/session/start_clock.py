"""Where one session's start goes: marks in seconds since its client connected.

Each step of a start (the CodeSession read, the stream claim, the warm pod claim, the
``spec.start`` write, the pod seen running, the attach open, the request sent, the
runner's "stage began" frame, the first output) is marked once; at the first output
(or when the stream ends without one) the marks go into one histogram labelled by
mark and by how the sandbox started (warm or cold). ``bench/warm_breakdown.py``
reads the sums' differences around one session to print its start step by step.
"""

from __future__ import annotations

import time

from prometheus_client import Histogram
from prometheus_client.parser import text_string_to_metric_families

# In the order a start passes them (some overlap: see icee_api.session.connection).
MARKS = (
    "read",
    "stream_claimed",
    "pod_claimed",
    "start_marked",
    "pod_running",
    "attached",
    "request_sent",
    "stage_began",
    "first_output",
)


class StartClock:
    def __init__(self, histogram: Histogram, since: float | None = None) -> None:
        self._histogram = histogram
        self._since = time.monotonic() if since is None else since
        self._marks: dict[str, float] = {}
        self.how = "cold"
        self._reported = False

    def mark(self, name: str) -> None:
        """The step ``name`` is done now (the first time counts)."""
        if name not in MARKS:
            raise ValueError(f"unknown start mark {name!r}")
        self._marks.setdefault(name, time.monotonic() - self._since)

    def report(self) -> None:
        """Observe every mark made so far, once."""
        if self._reported:
            return
        self._reported = True
        for name, seconds in self._marks.items():
            self._histogram.labels(name, self.how).observe(seconds)

    @property
    def marks(self) -> dict[str, float]:
        return dict(self._marks)


def mark_samples(metrics_text: str, how: str, kind: str) -> dict[str, float]:
    """Per mark, the histogram's ``_sum`` or ``_count`` (``kind``) for starts of kind
    ``how``, from /metrics text."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "icee_start_mark_seconds":
            for s in family.samples:
                if s.name.endswith(f"_{kind}") and s.labels.get("how") == how:
                    values[s.labels["mark"]] = s.value
    return values


def start_marks(metrics_text: str, how: str) -> set[str]:
    """The marks observed at least once for starts of kind ``how``, from /metrics text."""
    return {mark for mark, count in mark_samples(metrics_text, how, "count").items() if count > 0}
