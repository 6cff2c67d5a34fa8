"""Process exhaustion: whatever route a program takes, it holds at most 32 tasks."""

from __future__ import annotations

import pytest
from battery import Run
from checks import PIDS, contained

pytestmark = pytest.mark.cluster

ROUTES = ["fork", "threads", "namespaces-then-fork", "unshare-command", "setrlimit", "exec",
          "setuid"]  # fmt: skip


def host_pids_bounded(run: Run, runtime: str) -> None:
    # Under runc the pod's pids cgroup holds the program's tasks and the pause
    # process; under gVisor it holds the sandbox kernel's own threads, not the
    # program's, so the count inside the sandbox is what tells.
    if runtime == "runc":
        assert run.host.get("pids_current_peak", 0) <= PIDS + 1, run.describe()


@pytest.mark.parametrize("route", ROUTES)
def test_no_route_holds_more_than_32_tasks(runs: dict[str, Run], runtime: str, route: str) -> None:
    run = runs[route]
    contained(run)
    result = run.result
    assert result["held"] <= PIDS, run.describe()
    if route != "unshare-command":  # that one stops early where unshare(1) is refused
        # It did try: the cap, not a broken program, stopped it.
        assert result["error"] or result["held"] >= PIDS - 4, run.describe()
    host_pids_bounded(run, runtime)


def test_setuid_binaries_give_no_privilege(runs: dict[str, Run]) -> None:
    result = runs["setuid"].result
    assert result["uid"] == result["euid"] != 0
    assert all(v != 0 for v in result["euids"].values()), result
    assert all(v != "ok" for v in result["calls"].values()), result


def test_raising_the_process_limit_is_refused(runs: dict[str, Run]) -> None:
    result = runs["setrlimit"].result
    assert result["after"] == [PIDS, PIDS], result


def test_fork_bomb_ends_on_its_time_limit_with_at_most_32_tasks(
    runs: dict[str, Run], runtime: str
) -> None:
    run = runs["fork-bomb"]
    contained(run, "terminated", "TimeLimitExceeded")
    peaks = [line["peak"] for line in run.tagged("TASKS")]
    assert peaks, run.describe()
    assert max(peaks) <= PIDS, run.describe()
    host_pids_bounded(run, runtime)
