#!/usr/bin/env bash
# Compile the pinned Kubernetes release (control plane, kubelet, kube-proxy,
# kubectl) into the cache, keyed by version. A second run is a no-op.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/versions.env"
. "$here/lib.sh"

out="$(k8s_bin_dir)"
cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
missing=0
for c in "${cmds[@]}"; do [[ -x "$out/$c" ]] || missing=1; done
if [[ $missing == 0 ]]; then
  log "kubernetes v$K8S_VERSION binaries cached in $out"
  exit 0
fi

command -v go >/dev/null || die "go is not installed; install Go 1.24 or later"
mkdir -p "$out.tmp"
minor="${K8S_VERSION#*.}"; minor="${minor%%.*}"
pkg=k8s.io/component-base/version
cpkg=k8s.io/client-go/pkg/version
ldflags="-s -w"
for p in $pkg $cpkg; do
  ldflags+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
  ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
log "compiling kubernetes v$K8S_VERSION (cold: ~20-30 min on 2 cores; cached afterwards)"
start=$SECONDS
(
  cd "$here/k8s"
  # The module's go.mod pins k8s.io/kubernetes and points its staging modules at
  # the matching v0.x releases; keep the build cache outside the work tree.
  CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$out.tmp/" \
    $(printf 'k8s.io/kubernetes/cmd/%s ' "${cmds[@]}")
)
rm -rf "$out" && mv "$out.tmp" "$out"
log "kubernetes built in $((SECONDS - start)) s"
