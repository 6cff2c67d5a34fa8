#!/usr/bin/env bash
# Install what the node needs: Debian packages on the host (runc, CNI plugins,
# iptables, debootstrap, ...) and a private prefix with newer containerd and
# etcd unpacked from a newer suite. Idempotent and cached by version. (gVisor is
# built from source: build-gvisor.sh.)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/versions.env"
. "$here/lib.sh"
require_root

missing=()
for p in $NODE_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  apt-get update -q -o DPkg::Lock::Timeout=600 >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
fi

prefix="$(node_prefix)"
if [[ ! -f "$prefix/.complete" ]]; then
  log "unpacking containerd and etcd from $ETCD_SUITE into $prefix"
  rm -rf "$prefix" && mkdir -p "$prefix"
  suite_extract "$CONTAINERD_SUITE" containerd "$prefix"
  suite_extract "$ETCD_SUITE" etcd-server "$prefix"
  touch "$prefix/.complete"
fi
for b in containerd containerd-shim-runc-v2 ctr etcd; do
  [[ -x "$prefix/usr/bin/$b" ]] || die "$b missing from $prefix; remove it and run again"
done
log "node packages ready ($("$prefix/usr/bin/containerd" --version | awk '{print $3}'), etcd $("$prefix/usr/bin/etcd" --version | awk 'NR==1{print $3}'))"
