"""Memory, CPU and output: each limit trips or holds, judged from the node."""

from __future__ import annotations

import pytest
from battery import Run
from checks import (
    CPU,
    EPHEMERAL_BYTES,
    MEMORY_BYTES,
    OOM_FORCE_CHARGE_BYTES,
    OUTPUT_BYTES,
    contained,
)

pytestmark = pytest.mark.cluster


def test_memory_bomb_ends_with_memory_limit_exceeded(runs: dict[str, Run]) -> None:
    run = runs["memory"]
    contained(run, "terminated", "MemoryLimitExceeded")
    assert not run.tagged("RESULT"), run.describe()
    # From the node: the pod's memory cgroup is capped at the limit and never held more
    # than the kernel lets an OOM-killed task charge on its way out.
    assert 0 < run.host["memory_limit"] <= MEMORY_BYTES, run.describe()
    peak = run.host["memory_max_usage_peak"]
    assert peak <= run.host["memory_limit"] + OOM_FORCE_CHARGE_BYTES, run.describe()


def test_cpu_is_held_to_half_a_core_on_the_node(runs: dict[str, Run]) -> None:
    run = runs["cpu"]
    contained(run)
    assert run.host["cpu_quota_us"] / run.host["cpu_period_us"] == CPU, run.describe()
    # Eight busy workers; the pod's cgroup (cpuacct.usage) over five seconds.
    # CFS enforces the quota per 100 ms period, so the margin is for sampling only.
    assert run.host["cpu_rate"] <= CPU * 1.1, run.describe()


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_output_flood_ends_with_output_limit_exceeded(runs: dict[str, Run], stream: str) -> None:
    run = runs[f"flood-{stream}"]
    contained(run, "terminated", "OutputLimitExceeded")
    assert run.transcript is not None
    delivered = len((run.transcript.stdout + run.transcript.stderr).encode())
    assert delivered == OUTPUT_BYTES, run.describe()
    # What the node kept of it (the container log) stays under the pod's storage cap.
    assert "log_bytes_peak" in run.host, run.describe()
    assert run.host["log_bytes_peak"] <= EPHEMERAL_BYTES, run.describe()
