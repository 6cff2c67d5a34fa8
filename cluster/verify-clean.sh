#!/usr/bin/env bash
# Check that no trace of the local cluster is left: processes, mounts, network
# interfaces, cgroups, iptables rules. Exit 1 naming what remains.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/versions.env"
. "$here/lib.sh"
left=()
procs="$(pgrep -af "$(k8s_bin_dir)/|$(node_prefix)/|containerd-shim-runsc-v1 .*-address $ICEE_RUN/|runsc(-sandbox|-gofer)? .*--root=$ICEE_RUN/" | grep -v -e verify-clean -e pgrep)"
[[ -z "$procs" ]] || left+=("processes: $procs")
mounts="$(findmnt -rn -o TARGET | grep -E "^($ICEE_STATE|$ICEE_RUN|/run/containerd)(/|$)")"
[[ -z "$mounts" ]] || left+=("mounts: $mounts")
listening="$(ss -xlH 2>/dev/null | awk '{print $5}')"
sockets="$(for s in /run/containerd/s/*; do [[ -S "$s" ]] && ! grep -qxF "$s" <<<"$listening" && echo "$s"; done)"
[[ -z "$sockets" ]] || left+=("shim sockets nobody listens on: $(wc -l <<<"$sockets")")
links="$(ip -o link show | awk -F': ' '{print $2}' | grep -E '^(cni0|veth)')"
[[ -z "$links" ]] || left+=("interfaces: $links")
cgroups="$(ls -d /sys/fs/cgroup/*/kubepods 2>/dev/null)"
[[ -z "$cgroups" ]] || left+=("cgroups: $cgroups")
rules="$(iptables-save 2>/dev/null | grep -cE 'KUBE-|CNI-')"
[[ "$rules" == 0 ]] || left+=("iptables: $rules rules")
if ((${#left[@]})); then printf 'left behind: %s\n' "${left[@]}"; exit 1; fi
echo "clean: no processes, mounts, interfaces, cgroups or iptables rules of the cluster left"
