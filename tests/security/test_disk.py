"""Disk and inodes: no writable path holds more than the workspace's cap, and
nothing a program writes lands on the node's disk (measured on the node: the
pod's kubelet directory and its containers' writable layers)."""

from __future__ import annotations

import pytest
from battery import Run
from checks import WORKSPACE_BYTES, MiB, contained

pytestmark = pytest.mark.cluster

# What reaches the node's disk, beyond noise (kubelet's own files for the pod).
DISK_NOISE = 1 * MiB
# Under runc the kubelet's termination-log file is a host file mounted writable
# for every uid: what a program appends to it lands on the node's disk,
# uncapped. gVisor keeps such writes inside the sandbox. See docs/security.md.
RUNC_HOLES = {"/dev/termination-log"}


def test_every_writable_path_is_capped_and_off_the_node_disk(
    runs: dict[str, Run], runtime: str
) -> None:
    run = runs["disk"]
    contained(run)
    fills = run.host.get("fills", [])
    paths = {f["path"] for f in fills}
    assert "/workspace" in paths, run.describe()
    for fill in fills:
        if runtime == "runc" and fill["path"] in RUNC_HOLES:
            # The difference, as observed: all of it written, all of it on the node.
            assert fill["written"] > WORKSPACE_BYTES, fill
            assert fill["node_disk_growth"] >= fill["written"] * 0.9, fill
            continue
        assert fill["written"] <= WORKSPACE_BYTES, (fill, run.describe())
        assert fill["node_disk_growth"] <= DISK_NOISE, (fill, run.describe())
    for fill in fills:
        if fill["path"] in ("/workspace", "/tmp", "/dev/shm"):
            assert fill["error"] == "ENOSPC", fill


def test_writable_directories_are_the_capped_scratch_mounts(runs: dict[str, Run]) -> None:
    # The workspace, /tmp and /dev/shm: memory-backed, each capped like the workspace
    # (operator/icee_operator/pods.py); nothing else takes a file (runc's
    # /dev/mqueue is writable but holds POSIX message queues only).
    run = runs["disk"]
    took = {f["path"] for f in run.host["fills"] if f["kind"] == "dir" and f["written"] > 0}
    assert took <= {"/workspace", "/tmp", "/dev/shm"}, run.describe()


def test_inode_flood_stays_off_the_node_disk(runs: dict[str, Run]) -> None:
    run = runs["inodes"]
    # Out of inodes or memory first, or done: any clean end, the node untouched.
    assert run.final["reason"] in ("Completed", "MemoryLimitExceeded"), run.describe()
    if run.final["reason"] == "Completed":
        contained(run)
        (fill,) = run.host["fills"]
        assert fill["node_disk_growth"] <= DISK_NOISE, run.describe()
