"""Assertions every attack shares: how its session ended, and that nothing else
(a normal session beside it, the api) noticed."""

from __future__ import annotations

from battery import Run

MiB = 2**20
PIDS = 32
MEMORY_BYTES = 200 * MiB
# The memory cgroup refuses every charge past its limit except the few it must not
# fail (mm/memcontrol.c, try_charge's "force": reclaim's own allocations,
# __GFP_NOFAIL ones, which let the OOM-killed program exit). Measured once: one page
# past the limit in cgroup v1's max_usage_in_bytes. More than these few pages would
# be memory the limit did not hold.
OOM_FORCE_CHARGE_BYTES = 16 * 4096
WORKSPACE_BYTES = 32 * MiB
OUTPUT_BYTES = 1 * MiB
CPU = 0.5
# The container log's cap on the node (the operator's ephemeral-storage limit).
EPHEMERAL_BYTES = 64 * MiB


def ended(run: Run, state: str, reason: str) -> None:
    assert run.error is None, run.describe()
    final = run.final
    assert (final["state"], final.get("reason")) == (state, reason), run.describe()
    if (state, reason) == ("finished", "Completed"):
        assert final.get("exitCode") == 0, run.describe()


def others_unaffected(run: Run) -> None:
    assert run.canary is not None, run.describe()
    assert run.canary.ok, f"canary beside {run.attack}: {run.canary}\n{run.describe()}"


def contained(run: Run, state: str = "finished", reason: str = "Completed") -> None:
    ended(run, state, reason)
    others_unaffected(run)
