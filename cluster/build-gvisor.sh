#!/usr/bin/env bash
# Compile the pinned gVisor (runsc and containerd-shim-runsc-v1) from the Go
# module gvisor.dev/gvisor into the cache, keyed by version. A second run is a
# no-op. Prints the directory holding the two binaries.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/versions.env"
. "$here/lib.sh"

out="$(gvisor_bin_dir)"
if [[ -x "$out/runsc" && -x "$out/containerd-shim-runsc-v1" ]]; then
  log "gvisor $GVISOR_VERSION cached in $out"
  echo "$out"
  exit 0
fi
command -v go >/dev/null || die "go is not installed; install Go 1.26 or later (gVisor needs it)"
grep -q "gvisor.dev/gvisor $GVISOR_VERSION\$" "$here/gvisor/go.mod" \
  || die "cluster/gvisor/go.mod does not pin gvisor.dev/gvisor $GVISOR_VERSION (versions.env); run: cd cluster/gvisor && go get gvisor.dev/gvisor@$GVISOR_VERSION && go mod tidy"

log "compiling gvisor $GVISOR_VERSION (cold: ~5 min on 2 cores; cached afterwards)"
start=$SECONDS
# Vendored outside the work tree, so the one patch below never touches the
# module cache or the repository.
src="$out/../src"
rm -rf "$src" && mkdir -p "$src"
cp "$here/gvisor/go.mod" "$here/gvisor/go.sum" "$here/gvisor/tools.go" "$src/"
(cd "$src" && GOFLAGS=-mod=mod go mod vendor)

# The shim lowers its own oom_score_adj to -999 at start; that needs
# CAP_SYS_RESOURCE, which a node may lack (containerd's restrict_oom_score_adj
# exists for such nodes), and the shim then refuses to start. Keep the score
# it inherits when the kernel says no.
manager="$src/vendor/gvisor.dev/gvisor/pkg/shim/v1/manager.go"
old='if err := sys.SetOOMScore(cmd.Process.Pid, oomScoreMax); err != nil {'
new='if err := sys.SetOOMScore(cmd.Process.Pid, oomScoreMax); err != nil \&\& !os.IsPermission(err) {'
grep -qF "$old" "$manager" || die "gvisor $GVISOR_VERSION: the shim's OOM score call changed; update the patch in $0"
sed -i "s/$(sed 's/[][\.*^$/]/\\&/g' <<<"$old")/$new/" "$manager"
grep -qF '!os.IsPermission(err) {' "$manager" || die "patching $manager failed"

rm -rf "$out.tmp" && mkdir -p "$out.tmp"
(
  cd "$src"
  CGO_ENABLED=0 go build -mod=vendor -trimpath \
    -ldflags "-s -w -X gvisor.dev/gvisor/runsc/version.version=$GVISOR_VERSION" \
    -o "$out.tmp/runsc" gvisor.dev/gvisor/runsc
  CGO_ENABLED=0 go build -mod=vendor -trimpath -ldflags "-s -w" \
    -o "$out.tmp/containerd-shim-runsc-v1" gvisor.dev/gvisor/shim
)
rm -rf "$out" && mv "$out.tmp" "$out"
rm -rf "$src"
log "gvisor built in $((SECONDS - start)) s"
echo "$out"
