#!/usr/bin/env bash
# Compile the pinned helm into the cache (no binary downloads here). Prints its path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/versions.env"
. "$here/lib.sh"
out="$ICEE_CACHE/helm-v$HELM_VERSION-k8s$K8S_VERSION/bin"
if [[ ! -x "$out/helm" ]]; then
  command -v go >/dev/null || die "go is not installed; install Go 1.24 or later"
  log "compiling helm v$HELM_VERSION (cold: a few minutes)"
  # The Kubernetes version helm assumes without a cluster (template, lint), as
  # helm's own Makefile sets it: ours.
  minor="${K8S_VERSION#*.}"; minor="${minor%%.*}"
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
  for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$minor"
  done
  GOBIN="$out" CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" \
    "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
fi
echo "$out/helm"
