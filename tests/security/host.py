"""What the node sees of a sandbox pod: its cgroups, its directories, its mounts.

The battery judges limits from here, outside the sandbox, because gVisor's own
accounting (CPU time, memory, processes) differs from the host's. The tests run
as root on the cluster's one node, as `make test` does.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

STATE = Path(os.environ.get("ICEE_STATE", "/var/lib/icee-cluster"))
RUN = Path(os.environ.get("ICEE_RUN", "/run/icee-cluster"))
KUBELET_PODS = STATE / "kubelet" / "pods"
CGROUP = Path("/sys/fs/cgroup")


def pod_cgroup(controller: str, pod_uid: str) -> Path | None:
    """The pod's cgroup directory in a v1 hierarchy (cgroupfs driver), if it exists."""
    for pattern in (f"kubepods/pod{pod_uid}", f"kubepods/*/pod{pod_uid}"):
        hits = glob.glob(str(CGROUP / controller / pattern))
        if hits:
            return Path(hits[0])
    return None


def read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cgroup_value(controller: str, pod_uid: str, name: str) -> int | None:
    group = pod_cgroup(controller, pod_uid)
    return None if group is None else read_int(group / name)


def du_bytes(top: Path) -> int:
    """Bytes allocated on disk under `top`, not crossing into other mounts (tmpfs)."""
    try:
        dev = top.lstat().st_dev
    except OSError:
        return 0
    total = 0
    stack = [top]
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_dev != dev:
                continue
            total += st.st_blocks * 512
            if e.is_dir(follow_symlinks=False):
                stack.append(Path(e.path))
    return total


def mounts() -> list[tuple[str, str, str, str]]:
    """The host's mounts as (root, mount point, fs type, super options)."""
    rows = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        rows.append((fields[3], fields[4], rest[0], rest[2] if len(rest) > 2 else ""))
    return rows


def container_upper_dirs(container_id: str) -> list[Path]:
    """The writable layers (overlay upperdir) of a container's root filesystem."""
    found = []
    for _root, point, fstype, options in mounts():
        if fstype == "overlay" and container_id in point:
            for opt in options.split(","):
                if opt.startswith("upperdir="):
                    found.append(Path(opt.removeprefix("upperdir=")))
    return found


def node_disk_bytes(pod_uid: str, container_ids: list[str]) -> int:
    """What a pod holds on the node's disk: its kubelet directory (emptyDir on disk,
    termination-log, etc-hosts, ...) and its containers' writable layers."""
    total = du_bytes(KUBELET_PODS / pod_uid)
    for cid in container_ids:
        total += sum(du_bytes(d) for d in container_upper_dirs(cid))
    return total


def leftovers(pod_uid: str) -> list[str]:
    """Anything of the pod still on the node after it is gone."""
    found = []
    if (KUBELET_PODS / pod_uid).exists():
        found.append(str(KUBELET_PODS / pod_uid))
    found += [point for _r, point, _t, _o in mounts() if pod_uid in point]
    for controller in ("memory", "pids", "cpu", "cpuacct"):
        group = pod_cgroup(controller, pod_uid)
        if group is not None:
            found.append(str(group))
    return found
