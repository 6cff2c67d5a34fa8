#!/usr/bin/env bash
# Compile the pinned skaffold into the cache (no binary downloads here). Prints its path.
# `go install ...@v` cannot build it: skaffold's go.mod has replace directives
# (and the proxy here refuses the module's version list, which go install reads).
# So the pinned version is downloaded and built as the main module (its replaces
# and go.sum apply), with the version ldflags of skaffold's Makefile.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/versions.env"
. "$here/lib.sh"
out="$ICEE_CACHE/skaffold-v$SKAFFOLD_VERSION/bin"
if [[ ! -x "$out/skaffold" ]]; then
  command -v go >/dev/null || die "go is not installed; install Go 1.24 or later"
  mod="github.com/GoogleContainerTools/skaffold/v2"
  log "compiling skaffold v$SKAFFOLD_VERSION (cold: ~13 min on 2 cores, downloads included)"
  start=$SECONDS
  info="$(go mod download -json "$mod@v$SKAFFOLD_VERSION")" \
    || die "the Go module proxy does not serve $mod@v$SKAFFOLD_VERSION"
  read -r src commit < <(python3 -c 'import json, sys
d = json.load(sys.stdin)
print(d["Dir"], d.get("Origin", {}).get("Hash", ""))' <<<"$info")
  vpkg="$mod/pkg/skaffold/version"
  ldflags="-s -w -X $vpkg.version=v$SKAFFOLD_VERSION -X $vpkg.buildDate=1970-01-01T00:00:00Z"
  [[ -z "$commit" ]] || ldflags+=" -X $vpkg.gitCommit=$commit"
  mkdir -p "$out.tmp"
  (cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -tags timetzdata \
    -ldflags "$ldflags" -o "$out.tmp/skaffold" ./cmd/skaffold)
  rm -rf "$out" && mv "$out.tmp" "$out"
  log "skaffold built in $((SECONDS - start)) s"
fi
echo "$out/skaffold"
