"""Network reach, identity, and what /proc, /sys and the environment give away."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from battery import Run
from checks import contained

pytestmark = pytest.mark.cluster

HOST_DAEMONS = ("kubelet", "containerd", "etcd", "kube-apiserver", "icee-api", "icee-operator")


def test_network_reaches_nothing(runs: dict[str, Run], runtime: str) -> None:
    run = runs["network"]
    contained(run)
    result = run.result
    if runtime == "gvisor":
        # --network=none: a loopback device and nothing else.
        assert result["interfaces"] == ["lo"], result
        assert all(v != "open" for v in result["tcp"].values()), result["tcp"]
        assert not isinstance(result["kubernetes_api_status"], int), result
        assert result["dns"] in ("gaierror", "OSError"), result
    else:
        # runc: the pod network is real, and the local cluster's bridge CNI does
        # not enforce the deny-all NetworkPolicy, so the API server and the node
        # answer; without a token the API server refuses every request.
        assert "eth0" in result["interfaces"], result
        assert result["tcp"]["kubernetes-api"] == "open", result["tcp"]
        assert result["kubernetes_api_status"] in (401, 403), result
    # Never on either: the node's loopback services (the pod has its own loopback).
    for name, state in result["tcp"].items():
        if name.startswith("loopback-"):
            assert state != "open", (name, state)


def test_identity_is_unprivileged(runs: dict[str, Run]) -> None:
    run = runs["identity"]
    contained(run)
    r = run.result
    assert r["uid"] == r["euid"], r
    assert r["uid"] >= 1_000_000, r
    assert r["gid"] >= 1_000_000, r
    status = r["status"]
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status.get(cap, "0"), 16) == 0, (cap, status)
    # prctl, not /proc/self/status: gVisor's has no NoNewPrivs line.
    assert r["no_new_privs"] == 1, r
    # The RuntimeDefault seccomp profile applies to the program itself (under
    # gVisor that takes runsc --oci-seccomp): mode 2, a filter.
    assert r["seccomp"] == 2, r
    assert r["tokens"] == [], r
    assert r["secret_mounts"] == [], r


def test_proc_and_sys_show_no_host(runs: dict[str, Run], runtime: str) -> None:
    run = runs["proc-sys"]
    contained(run)
    r = run.result
    cmdlines = " ".join(r["procs"].values())
    assert not [d for d in HOST_DAEMONS if d in cmdlines], r["procs"]
    assert len(r["procs"]) <= 3, r["procs"]
    assert r["hostname"] != socket.gethostname(), r
    host_version = Path("/proc/version").read_text()[:4096]
    if runtime == "gvisor":
        # gVisor's own kernel: no host kernel version, command line, paths or logs.
        assert r["version"] != host_version, r["version"]
        assert r["cmdline"] != Path("/proc/cmdline").read_text(), r["cmdline"]
        assert "/var/lib" not in r["mountinfo"], r["mountinfo"]
        assert r["kmsg"].startswith("!"), r["kmsg"]
    else:
        # runc shares the host kernel: its version and the kubelet's paths show.
        assert r["version"] == host_version
        assert "/pods/" in r["mountinfo"]
    # Kernel addresses never: unreadable, or zeroed for an unprivileged reader.
    lines = [line for line in r["kallsyms"].splitlines() if line.strip()]
    assert r["kallsyms"].startswith("!") or all(set(x.split()[0]) == {"0"} for x in lines[:-1])


# The pod's environment is the pod builder's (operator/icee_operator/pods.py BASE_ENV
# and the language's), plus what a shell sets for itself.
ALLOWED_ENV = {
    "HOME", "TMPDIR", "LANG", "PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE",
    "PYTHONIOENCODING", "PWD", "OLDPWD", "SHLVL", "_", "HOSTNAME",
}  # fmt: skip


def test_environment_carries_no_service_or_secret(runs: dict[str, Run]) -> None:
    run = runs["environment"]
    contained(run)
    env = run.result["env"]
    # The kubelet always adds KUBERNETES_SERVICE_* and KUBERNETES_PORT* for the
    # API server; the pod builder blanks them (a pod's env takes precedence).
    blanked = {k: v for k, v in env.items() if k.startswith("KUBERNETES_")}
    assert set(blanked.values()) <= {""}, blanked
    others = set(env) - set(blanked)
    assert others <= ALLOWED_ENV, sorted(others - ALLOWED_ENV)
