#!/usr/bin/env bash
# Compile the pinned helm into the cache (no binary downloads here). Prints its path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/versions.env"
. "$here/lib.sh"
out="$ICEE_CACHE/helm-v$HELM_VERSION/bin"
if [[ ! -x "$out/helm" ]]; then
  command -v go >/dev/null || die "go is not installed; install Go 1.24 or later"
  log "compiling helm v$HELM_VERSION (cold: a few minutes)"
  GOBIN="$out" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
fi
echo "$out/helm"
