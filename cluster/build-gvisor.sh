#!/usr/bin/env bash
# Compile the pinned gVisor (runsc and containerd-shim-runsc-v1) from the Go
# module gvisor.dev/gvisor into the cache. Four small patches make it work on
# these machines (below); the cache is keyed by the version and by this script,
# so a change to either rebuilds, and a second run is a no-op. Prints the
# directory holding the two binaries.
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
# Vendored outside the work tree, so the patches never touch the module cache
# or the repository.
src="$out/../src"
rm -rf "$src" && mkdir -p "$src"
cp "$here/gvisor/go.mod" "$here/gvisor/go.sum" "$here/gvisor/tools.go" "$src/"
(cd "$src" && GOFLAGS=-mod=mod go mod vendor)

# patch_vendored FILE: in the vendored FILE, replace the text before a line
# "----" on stdin by the text after it; the old text must occur exactly once.
patch_vendored() {
  python3 -c '
import sys
path = sys.argv[1]
old, new = sys.stdin.read().rstrip("\n").split("\n----\n")
text = open(path).read()
if text.count(old) != 1:
    sys.exit(1)
open(path, "w").write(text.replace(old, new))
' "$src/vendor/$1" || die "gvisor $GVISOR_VERSION: $1 changed; update its patch in $0"
}

# 1. The shim lowers its own oom_score_adj to -999 at start; that needs
# CAP_SYS_RESOURCE, which a node may lack (containerd's restrict_oom_score_adj
# exists for such nodes), and the shim then refuses to start. Keep the score it
# inherits when the kernel says no.
patch_vendored gvisor.dev/gvisor/pkg/shim/v1/manager.go <<'GO'
	if err := sys.SetOOMScore(cmd.Process.Pid, oomScoreMax); err != nil {
----
	if err := sys.SetOOMScore(cmd.Process.Pid, oomScoreMax); err != nil && !os.IsPermission(err) {
GO

# 2. --oci-seccomp turns every SCMP_ACT_ERRNO into EPERM, ignoring the
# profile's errnoRet. containerd's RuntimeDefault profile answers clone3 with
# ENOSYS so that glibc falls back to clone; given EPERM, glibc 2.34+ cannot
# start a single thread. Honour errnoRet and defaultErrnoRet, as runc does.
patch_vendored gvisor.dev/gvisor/runsc/specutils/seccomp/seccomp.go <<'GO'
		action, err := convertAction(syscall.Action)
		if err != nil {
			return nil, err
		}
----
		action, err := convertAction(syscall.Action)
		if err != nil {
			return nil, err
		}
		if syscall.Action == specs.ActErrno && syscall.ErrnoRet != nil {
			action = seccomp.ReturnError.Code(uint16(*syscall.ErrnoRet))
		}
GO
patch_vendored gvisor.dev/gvisor/runsc/specutils/seccomp/seccomp.go <<'GO'
		return bpf.Program{}, fmt.Errorf("secomp default action: %w", err)
	}
----
		return bpf.Program{}, fmt.Errorf("secomp default action: %w", err)
	}
	if s.DefaultAction == specs.ActErrno && s.DefaultErrnoRet != nil {
		defaultAction = seccomp.ReturnError.Code(uint16(*s.DefaultErrnoRet))
	}
GO

# 3. The shim turns a container's /dev/shm bind mount (the pod's shm, or a
# memory emptyDir mounted there) into a tmpfs of the sandbox's own, dropping the
# host tmpfs's size: /dev/shm would then be bounded only by the pod's memory.
# Keep the size of the tmpfs it replaces.
patch_vendored gvisor.dev/gvisor/pkg/shim/v1/utils/volumes.go <<'GO'
	"github.com/containerd/log"
----
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
GO
patch_vendored gvisor.dev/gvisor/pkg/shim/v1/utils/volumes.go <<'GO'
			if specutils.ChangeMountType(m, devshmType) {
				updated = true
			}
----
			if specutils.ChangeMountType(m, devshmType) {
				updated = true
			}
			var st unix.Statfs_t
			if err := unix.Statfs(m.Source, &st); err == nil && st.Type == unix.TMPFS_MAGIC {
				size := "size=" + strconv.FormatUint(st.Blocks*uint64(st.Bsize), 10)
				m.Options = append(m.Options, size)
				if IsSandbox(s) {
					s.Annotations[volumeKeyPrefix+devshmName+".options"] = "rw," + size
				}
				updated = true
			}
GO

# 4. A terminal's input queue holding only an end of file (Ctrl-D on an empty line
# in canonical mode) is readable (read returns 0), but poll and epoll did not say
# so: a program reading its terminal through an event loop (Node) never saw the
# end of its input. Report it readable, as Linux's n_tty does.
patch_vendored gvisor.dev/gvisor/pkg/sentry/fsimpl/devpts/queue.go <<'GO'
	if len(q.readBuf) > 0 && q.readable {
		return waiter.ReadableEvents
	}
----
	if q.readable {
		return waiter.ReadableEvents
	}
GO

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
