#!/usr/bin/env bash
# Remove the local cluster: processes, sandboxes, mounts, network interfaces,
# iptables rules and cgroups, also when its processes were killed without
# warning. --keep-images keeps containerd's image store (up.sh uses that).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/versions.env"
. "$here/lib.sh"
require_root
keep_images=0; [[ "${1:-}" == --keep-images ]] && keep_images=1
prefix="$(node_prefix)"

# 1. Components, newest first, then anything of ours that outlived its pid file.
for c in kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
  if running "$c"; then kill "$(cat "$ICEE_RUN/$c.pid")" 2>/dev/null; fi
done
kill_matching() { pkill -KILL -f "$1" 2>/dev/null; true; }
sleep 0.5
kill_matching "$(k8s_bin_dir)/"
kill_matching "$prefix/usr/bin/etcd"

# 2. Workloads: every process in a kubepods cgroup (runc containers, gVisor
# sandboxes, gofers and stubs), then the shims, then containerd.
for cg in /sys/fs/cgroup/*/kubepods; do
  [[ -d "$cg" ]] || continue
  find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null
done
kill_matching "containerd-shim-runc-v2 .*-address $ICEE_RUN/containerd/"
kill_matching "containerd-shim-runsc-v1 .*-address $ICEE_RUN/containerd/"
# gVisor's sandboxes and gofers of this cluster (runsc.toml's root), and any
# runsc command still running; other runsc users on the machine are left alone.
kill_matching "runsc-(sandbox|gofer) .*--root=$ICEE_RUN/"
kill_matching "$(gvisor_bin_dir)/runsc .*--root=$ICEE_RUN/"
if running containerd; then kill "$(cat "$ICEE_RUN/containerd.pid")" 2>/dev/null; sleep 0.5; fi
kill_matching "$prefix/usr/bin/containerd"
rm -f "$ICEE_RUN"/*.pid
# runc state of the runc shim's containers (its default root); runsc's state
# is under $ICEE_RUN, removed below.
rm -rf /run/containerd/runc/k8s.io
# The shims' sockets live in /run/containerd/s whatever containerd's state
# directory; the shims killed above leave theirs. Remove those nobody listens on.
listening="$(ss -xlH 2>/dev/null | awk '{print $5}')"
for s in /run/containerd/s/*; do
  [[ -S "$s" ]] && ! grep -qxF "$s" <<<"$listening" && rm -f "$s"
done

# 3. Mounts under our state and run directories (volumes, rootfs, netns, shm),
# deepest first; lazily, since a dying process may still hold one.
for root in "$ICEE_STATE" "$ICEE_RUN" /run/containerd/runc/k8s.io; do
  findmnt -rn -o TARGET | grep -E "^$root(/|$)" | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
done

# 4. Cgroups the kubelet made, leaves first.
for cg in /sys/fs/cgroup/*/kubepods; do
  [[ -d "$cg" ]] && find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
done

# 5. Network: pod veths, the bridge, and the iptables rules of kube-proxy and CNI.
for v in $(ip -o link show master cni0 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do ip link del "$v" 2>/dev/null; done
ip link del cni0 2>/dev/null
for t in iptables ip6tables; do
  command -v "$t-save" >/dev/null || continue
  # (Saved first: grep -q would cut iptables-save short, and pipefail would
  # then take the match for a failure.)
  rules="$("$t-save" 2>/dev/null)"
  if grep -qE 'KUBE-|CNI-' <<<"$rules"; then
    grep -vE 'KUBE-|CNI-' <<<"$rules" | "$t-restore" 2>/dev/null || log "could not clean $t rules"
  fi
done

# 6. State that must not survive into the next cluster. PKI and images stay.
if ((keep_images)); then
  rm -rf "$ICEE_STATE"/{etcd,kubelet,cni/ipam} "$ICEE_RUN"
else
  rm -rf "$ICEE_STATE"/{etcd,kubelet,cni,containerd,containerd-imported,opt,config} "$ICEE_RUN"
fi
[[ -d "$ICEE_STATE/logs" ]] && { rm -rf "$ICEE_STATE/logs.prev"; mv "$ICEE_STATE/logs" "$ICEE_STATE/logs.prev"; }
log "cluster down"
