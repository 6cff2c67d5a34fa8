#!/usr/bin/env bash
# Say what of the local cluster is up. Exit 0 only if all of it is healthy.
# --quiet: no output, just the exit code.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/versions.env"
. "$here/lib.sh"
quiet=0; [[ "${1:-}" == --quiet ]] && quiet=1
say() { ((quiet)) || echo "$@"; }
ok=1
for c in $COMPONENTS; do
  if running "$c"; then say "  $c: running (pid $(cat "$ICEE_RUN/$c.pid"))"; else say "  $c: DOWN"; ok=0; fi
done
# The pinned gVisor the "runsc" handler runs (runsc.toml's binary_name).
# (Read whole: with pipefail, `| head -1` would fail it on SIGPIPE.)
if runsc_version="$("$(gvisor_bin_dir)/runsc" --version 2>/dev/null)"; then
  say "  gvisor: ${runsc_version%%$'\n'*}"
  # A running cluster started with another build (before a patch changed): not up.
  if [[ -f "$ICEE_STATE/config/runsc.toml" ]] \
    && ! grep -qF "binary_name = \"$(gvisor_bin_dir)/runsc\"" "$ICEE_STATE/config/runsc.toml"; then
    say "  gvisor: the cluster runs another build than $(gvisor_bin_dir) (make cluster restarts it)"; ok=0
  fi
else
  say "  gvisor: runsc $GVISOR_VERSION MISSING (cluster/build-gvisor.sh)"; ok=0
fi
# A running cluster started from other node configs (a setting changed since): not
# up, so that make up restarts it with the checkout's. Comments do not count.
settings() { grep -v '^[[:space:]]*#' "$@"; }
for f in containerd.toml kubelet.yaml kube-proxy.yaml runsc.toml; do
  if [[ -f "$ICEE_STATE/config/$f" ]] \
    && ! cmp -s <(render "$here/config/$f" | settings) <(settings "$ICEE_STATE/config/$f"); then
    say "  config: the cluster runs another $f than cluster/config/$f (make cluster restarts it)"; ok=0
  fi
done
if ((ok)) && [[ -x "$(k8s_bin_dir)/kubectl" ]] && node_ready 2>/dev/null; then
  say "  node $NODE_NAME: Ready"
  if kc get runtimeclass gvisor >/dev/null 2>&1; then say "  runtimeclass gvisor: present"; else say "  runtimeclass gvisor: MISSING"; ok=0; fi
else
  say "  node $NODE_NAME: not Ready"; ok=0
fi
if ((ok)); then say "cluster: up (export KUBECONFIG=$ICEE_STATE/kubeconfig)"; exit 0; fi
say "cluster: not up (make cluster)"; exit 1
