#!/usr/bin/env bash
# Crash one node daemon and bring it back: SIGKILL, DOWN_SECONDS without it, then
# start it the way up.sh does and wait until it answers (what a supervisor would do;
# the chaos tests use it). Running pods and their shims are left alone.
# Usage: restart.sh containerd|kubelet [DOWN_SECONDS]
# While it runs, /tmp/icee-cluster-restarting exists: runs sharing the machine
# that see it wait for the cluster instead of failing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/versions.env"
. "$here/lib.sh"
require_root
name="${1:-}"; down="${2:-0}"
case "$name" in
  containerd|kubelet) ;;
  *) die "usage: $0 containerd|kubelet [DOWN_SECONDS]" ;;
esac
flag=/tmp/icee-cluster-restarting
touch "$flag"
trap 'rm -f "$flag"' EXIT
t0=$SECONDS
if running "$name"; then
  pid="$(cat "$ICEE_RUN/$name.pid")"
  kill -9 "$pid"
  # Not our child: wait for the kernel to reap it (its sockets and pid file with it).
  while [[ -e /proc/$pid ]] && [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]]; do sleep 0.05; done
  log "$name (pid $pid) killed"
else
  log "$name was not running"
fi
sleep "$down"
# start truncates the log: keep the killed one's for whoever diagnoses the restart.
mv -f "$ICEE_STATE/logs/$name.log" "$ICEE_STATE/logs/$name.log.1" 2>/dev/null || true
"start_$name"
wait_for "$name" 120 "${name}_answers"
log "$name back (pid $(cat "$ICEE_RUN/$name.pid")) after $((SECONDS - t0)) s"
