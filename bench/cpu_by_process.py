"""Where the node's CPU goes: CPU time per process group, sampled from /proc.

    python bench/cpu_by_process.py --seconds 30       # the node as it is now

A pidstat of our own, grouped by what a process is on a gVisor node: each sandbox's
sentry (``runsc boot``, its systrap stubs included), its gofer, its shim
(``containerd-shim-runsc-v1``) and the short-lived ``runsc`` commands the shim runs
(``state``, ``events --stats``, ...: they exit between two samples, so they are
counted from the shim's ``cutime``/``cstime`` once it has waited for them), the
kubelet, containerd, the control plane, and the api and operator whose pids are
given. Processes of other users of the machine land in ``other``.

``Sampler`` is used by ``bench/density.py`` and ``bench/matrix.py`` around each phase.
"""

from __future__ import annotations

import argparse
import os
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")

GROUPS = [
    "runsc sentry",
    "runsc gofer",
    "runsc commands (via shim)",
    "runsc shim",
    "containerd",
    "kubelet",
    "kube-apiserver",
    "etcd",
    "controller+scheduler+proxy",
    "icee api",
    "icee operator",
    "other icee processes",
    "other",
]


def classify(cmdline: str, pid: int, own: dict[int, str], tags: dict[str, str]) -> str:
    if pid in own:
        return own[pid]
    for part, group in tags.items():
        if part in cmdline:
            return group
    argv0 = cmdline.split(" ", 1)[0].rsplit("/", 1)[-1]
    if "runsc" in cmdline and " boot " in f"{cmdline} ":
        return "runsc sentry"
    if "runsc" in cmdline and " gofer " in f"{cmdline} ":
        return "runsc gofer"
    if argv0 == "containerd-shim-runsc-v1":
        return "runsc shim"
    if argv0 == "runsc":
        return "runsc commands (via shim)"  # caught alive; most are seen via the shim
    if argv0 == "containerd":
        return "containerd"
    if argv0 in ("kubelet", "kube-apiserver", "etcd"):
        return argv0
    if argv0 in ("kube-controller-manager", "kube-scheduler", "kube-proxy"):
        return "controller+scheduler+proxy"
    if "icee-api" in cmdline or "icee-operator" in cmdline:
        return "other icee processes"
    return "other"


@dataclass
class _Proc:
    group: str
    ppid: int
    own: int  # utime + stime, ticks
    children: int  # cutime + cstime, ticks (waited-for children)


SANDBOX_ID = re.compile(r"/k8s\.io/([0-9a-f]{64})/log\.json")
SHIM_ID = re.compile(r" -id ([0-9a-f]{64})")


def _read(own: dict[int, str], tags: dict[str, str], namespace: str | None) -> dict[int, _Proc]:
    """Every process's group and CPU ticks. With ``namespace``, the runsc processes of
    that namespace's pods (named in their panic log's path) and their shims (matched
    by the sandbox id) get groups of their own: ``<group> (namespace)``."""
    procs: dict[int, _Proc] = {}
    ours: set[str] = set()
    shims: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        cmdline = raw.replace(b"\0", b" ").decode(errors="replace").strip()
        group = classify(cmdline, pid, own, tags)
        if namespace and group.startswith("runsc"):
            if f"/var/log/pods/{namespace}_" in cmdline:
                group = f"{group} ({namespace})"
                ours.update(SANDBOX_ID.findall(cmdline))
            elif group == "runsc shim" and (found := SHIM_ID.search(cmdline)):
                shims[pid] = found.group(1)
        procs[pid] = _Proc(
            group, int(stat[1]), int(stat[11]) + int(stat[12]), int(stat[13]) + int(stat[14])
        )
    for pid, sandbox in shims.items():
        if sandbox in ours:
            procs[pid].group = f"runsc shim ({namespace})"
    return procs


def _machine_busy() -> int:
    """Busy ticks of all CPUs (everything but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]


def _last_pid() -> int:
    return int(Path("/proc/loadavg").read_text().split()[4])


def _pids_since(first: int) -> int:
    """Pids allocated since ``first`` was the last one (pids wrap at pid_max)."""
    delta = _last_pid() - first
    return delta if delta >= 0 else delta + int(Path("/proc/sys/kernel/pid_max").read_text())


@dataclass
class Usage:
    """CPU seconds per group over a phase, and the machine's own total."""

    seconds: float = 0.0
    by_group: Counter[str] = field(default_factory=Counter)
    machine: float = 0.0  # busy CPU seconds of the whole machine
    forks: int = 0
    load: tuple[float, float] = (0.0, 0.0)  # 1-min load average at start, at end
    processes: Counter[str] = field(default_factory=Counter)  # alive at the end

    def table(self, title: str) -> str:
        cores = self.seconds or 1.0
        lines = [
            f"{title}: {self.seconds:.0f} s, machine busy {self.machine / cores * 100:.0f}% "
            f"of one core ({os.cpu_count()} cores), {self.forks / cores:.1f} new pids/s, "
            f"load {self.load[0]:.1f} -> {self.load[1]:.1f}",
            f"  {'group':<28}{'% of a core':>12}{'processes':>11}",
        ]
        for group in [*GROUPS, *sorted(set(self.by_group) - set(GROUPS))]:
            used = self.by_group.get(group, 0.0)
            if used or self.processes.get(group):
                lines.append(
                    f"  {group:<28}{used / cores * 100:>11.1f}%{self.processes.get(group, 0):>11}"
                )
        return "\n".join(lines)


class Sampler:
    """Samples /proc every ``interval`` seconds in a thread between ``start`` and ``stop``.

    A process's CPU is its own time's growth between two samples; a group also gets its
    processes' growth of waited-for children's time (a shim's ``runsc`` commands), as
    ``runsc commands (via shim)`` for a shim and as the parent's group otherwise (not
    for ``other``: a shell that reaps a job started before the sample would count all
    of the job's past).
    """

    def __init__(
        self,
        own: dict[int, str] | None = None,
        interval: float = 1.0,
        tags: dict[str, str] | None = None,
        namespace: str | None = None,
    ) -> None:
        """``own``: pid -> group; ``tags``: a command-line part -> group (checked first);
        ``namespace``: tell the runsc processes of its pods apart (see ``_read``)."""
        self.own = own or {}
        self.tags = tags or {}
        self.namespace = namespace
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.usage = Usage()

    def _run(self) -> None:
        before = _read(self.own, self.tags, self.namespace)
        t0, busy0, pid0 = time.monotonic(), _machine_busy(), _last_pid()
        load0 = os.getloadavg()[0]
        ticks: Counter[str] = Counter()
        while not self._stop.wait(self.interval):
            now = _read(self.own, self.tags, self.namespace)
            # A child that vanished was counted up to its last sample; its parent's
            # cutime now holds all of it: only the rest is new.
            counted: Counter[int] = Counter()
            for pid, old in before.items():
                if pid not in now:
                    counted[old.ppid] += old.own + old.children
            for pid, proc in now.items():
                old = before.get(pid)
                own_delta = proc.own - (old.own if old else 0)
                child_delta = proc.children - (old.children if old else 0) - counted[pid]
                ticks[proc.group] += max(0, own_delta)
                child_group = proc.group.replace("runsc shim", "runsc commands (via shim)")
                if proc.group != "other":  # reaped grandchildren of old jobs: not ours
                    ticks[child_group] += max(0, child_delta)
            before = now
        self.usage = Usage(
            seconds=time.monotonic() - t0,
            by_group=Counter({g: t / TICK for g, t in ticks.items()}),
            machine=(_machine_busy() - busy0) / TICK,
            forks=_pids_since(pid0),
            load=(load0, os.getloadavg()[0]),
            processes=Counter(p.group for p in before.values()),
        )

    def start(self) -> Sampler:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Usage:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.usage


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    sampler = Sampler(interval=args.interval).start()
    time.sleep(args.seconds)
    print(sampler.stop().table("CPU by process group"))


if __name__ == "__main__":
    main()
