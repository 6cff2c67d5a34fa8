#!/usr/bin/env bash
# Runs test commands side by side; fails if any of them fails (a pytest that
# collected no test exits 5: that is a failure too). The suites mostly wait on the
# cluster; which of them may share the node is decided in the Makefile.
#
#   bash tests/side-by-side.sh NAME 'COMMAND' [NAME 'COMMAND']...
#
# Each part's output goes to artifacts/test-logs/NAME.log. When all have ended,
# the logs are printed one after another (not interleaved), then one line per part
# with its exit status and wall time.
set -uo pipefail
cd "$(dirname "$0")/.."
logs=artifacts/test-logs
mkdir -p "$logs"
if (($# == 0 || $# % 2)); then
  echo "usage: $0 NAME 'COMMAND' [NAME 'COMMAND']..." >&2
  exit 2
fi

pids=()
declare -A name=() status=() seconds=()
start=$SECONDS
while (($#)); do
  # A single command: bash -c execs it, so $! is the test process itself.
  bash -c "$2" >"$logs/$1.log" 2>&1 &
  pids+=("$!")
  name[$!]=$1
  shift 2
done

# Background jobs of a script ignore SIGINT: stop them when the script is stopped.
stop() {
  for pid in "${pids[@]}"; do
    [[ -v status[$pid] ]] || kill "$pid" 2>/dev/null
  done
  exit 130
}
trap stop INT TERM

while ((${#status[@]} < ${#pids[@]})); do
  pid=
  wait -n -p pid
  rc=$?
  [[ -n ${pid:-} ]] || break # no child left (cannot happen while one is unwaited)
  status[$pid]=$rc
  seconds[$pid]=$((SECONDS - start))
done

failed=0
for pid in "${pids[@]}"; do
  echo "======== ${name[$pid]} (exit ${status[$pid]}, ${seconds[$pid]} s) ========"
  cat "$logs/${name[$pid]}.log"
done
for pid in "${pids[@]}"; do
  echo "side by side: ${name[$pid]}: exit ${status[$pid]} after ${seconds[$pid]} s"
  ((status[$pid] == 0)) || failed=1
done
exit "$failed"
