# Shared helpers for the cluster scripts. Sourced, never executed.
ICEE_CACHE="${ICEE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/icee}"
ICEE_STATE="${ICEE_STATE:-/var/lib/icee-cluster}"
ICEE_RUN="${ICEE_RUN:-/run/icee-cluster}"

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }

k8s_bin_dir() { echo "$ICEE_CACHE/k8s-v$K8S_VERSION/bin"; }
# runsc and its containerd shim, built from source by build-gvisor.sh; keyed by
# the version and by what builds and patches it.
gvisor_bin_dir() {
  local d; d="$(dirname "${BASH_SOURCE[0]}")"
  echo "$ICEE_CACHE/gvisor-$GVISOR_VERSION-$(cat "$d/build-gvisor.sh" "$d/gvisor/go.mod" "$d/gvisor/go.sum" | sha256sum | cut -c1-12)/bin"
}

# The Debian mirror this machine's apt uses (never written into the repository).
debian_mirror() {
  local uri
  uri="$(grep -rhsE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
    | grep -oE 'https?://[^ ]+/debian/?$|https?://[^ ]+/debian ' | head -1 | tr -d ' ')"
  [[ -n "$uri" ]] || die "no Debian mirror found in the apt configuration"
  echo "${uri%/}"
}

# apt with a private state directory for another suite, so the host's own apt
# sources stay untouched. Usage: suite_apt SUITE apt-get-args...
suite_apt() {
  local suite="$1"; shift
  local dir="$ICEE_CACHE/apt-$suite"
  mkdir -p "$dir/lists/partial" "$dir/archives/partial" "$dir/etc"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(debian_mirror) $suite main" > "$dir/etc/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$dir/etc/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
    -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache::Archives=$dir/archives" -o "Dir::State::status=$dir/status"
    -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o "APT::Get::AllowUnauthenticated=false" -o "APT::Sandbox::User=root" -q)
  touch "$dir/status"
  if [[ ! -f "$dir/lists/.updated" ]] || [[ -n "$(find "$dir/lists/.updated" -mmin +1440)" ]]; then
    apt-get "${opts[@]}" update >/dev/null && touch "$dir/lists/.updated"
  fi
  apt-get "${opts[@]}" "$@"
}

# Fetch a package of SUITE and unpack it into DEST (no install, no scripts).
suite_extract() {
  local suite="$1" pkg="$2" dest="$3"
  local dir="$ICEE_CACHE/apt-$suite"
  mkdir -p "$dest" "$dir/debs"
  (cd "$dir/debs" && suite_apt "$suite" download "$pkg" >/dev/null)
  local deb; deb="$(ls -t "$dir/debs/${pkg}_"*.deb | head -1)"
  dpkg-deb -x "$deb" "$dest"
}

require_root() { [[ $EUID == 0 ]] || die "must run as root (the node runs containerd and the kubelet); try: sudo $0"; }

# containerd and etcd unpacked from a newer Debian suite, keyed by suite.
node_prefix() { echo "$ICEE_CACHE/node-$CONTAINERD_SUITE-$ETCD_SUITE"; }

kc() { "$(k8s_bin_dir)/kubectl" --kubeconfig "$ICEE_STATE/kubeconfig" "$@"; }

# render FILE: substitute ${VAR} from the environment (versions.env and paths).
render() {
  ICEE_STATE="$ICEE_STATE" ICEE_RUN="$ICEE_RUN" NODE_PREFIX="$(node_prefix)" GVISOR_BIN="$(gvisor_bin_dir)" \
  POD_CIDR="$POD_CIDR" NODE_IP="$NODE_IP" NODE_NAME="$NODE_NAME" CLUSTER_DNS_IP="$CLUSTER_DNS_IP" \
  python3 -c 'import os, re, sys
text = open(sys.argv[1]).read()
sys.stdout.write(re.sub(r"\$\{(\w+)\}", lambda m: os.environ[m.group(1)], text))' "$1"
}

# start NAME CMD...: run a component in the background in its own session,
# logging to $ICEE_STATE/logs/NAME.log, its pid in $ICEE_RUN/NAME.pid.
start() {
  local name="$1"; shift
  mkdir -p "$ICEE_STATE/logs" "$ICEE_RUN"
  setsid "$@" >"$ICEE_STATE/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$ICEE_RUN/$name.pid"
}

# The node daemons' command lines, shared by up.sh and restart.sh. The configs
# are the ones up.sh rendered into $ICEE_STATE/config.
# containerd finds each runtime's shim (containerd-shim-runsc-v1, -runc-v2) on its PATH.
start_containerd() {
  local prefix; prefix="$(node_prefix)"
  start containerd env PATH="$(gvisor_bin_dir):$prefix/usr/bin:$PATH" \
    "$prefix/usr/bin/containerd" --config "$ICEE_STATE/config/containerd.toml"
}
start_kubelet() {
  start kubelet "$(k8s_bin_dir)/kubelet" --config="$ICEE_STATE/config/kubelet.yaml" \
    --kubeconfig="$ICEE_STATE/pki/kubelet.kubeconfig" --root-dir="$ICEE_STATE/kubelet" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --oom-score-adj=0 --v=0
}
containerd_answers() {
  "$(node_prefix)/usr/bin/ctr" --address "$ICEE_RUN/containerd/containerd.sock" version && return 0
  reap_stuck_leaked_shim
  return 1
}
# While it boots, containerd deletes the shims of containers it has no record of
# ("cleaning leaked shim process"), one at a time. A gVisor shim whose container was
# being created when containerd died never answers that delete, and containerd waits
# on it for minutes, serving nothing (seen in tests/chaos). Such a shim, the one the
# log has named for 10 s with nothing after, is killed: containerd then cleans up
# after it as after any dead shim, and goes on. Recorded in logs/reaped-shims.log.
reap_stuck_leaked_shim() {
  local log="$ICEE_STATE/logs/containerd.log" last id pid quiet
  last="$(tail -n 1 "$log" 2>/dev/null)" || return 0
  [[ "$last" == *'msg="cleaning leaked shim process"'* ]] || return 0
  quiet=$(( $(date +%s) - $(stat -c %Y "$log") ))
  (( quiet >= 10 )) || return 0
  id="$(sed -nE 's/.* id=([0-9a-f]{64}).*/\1/p' <<<"$last")"
  [[ -n "$id" ]] || return 0
  pid="$(pgrep -f -- "containerd-shim-runsc-v1 .*-id $id" || true)"
  [[ -n "$pid" ]] || return 0
  echo "$(date -u +%FT%TZ) containerd stuck ${quiet}s cleaning leaked shim $id: killed pid $pid" \
    >> "$ICEE_STATE/logs/reaped-shims.log"
  kill -9 $pid 2>/dev/null || true
}
kubelet_answers() { curl -sf --max-time 2 http://127.0.0.1:10248/healthz; }

# running NAME: its recorded process is alive (not a zombie, not a reused pid).
running() {
  local p state
  p="$(cat "$ICEE_RUN/$1.pid" 2>/dev/null)" && [[ -n "$p" ]] || return 1
  state="$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" || return 1
  [[ -n "$state" && "$state" != Z && "$state" != X ]] || return 1
  grep -q -- "$1" <<<"$(tr '\0' ' ' < "/proc/$p/cmdline")"
}

# wait_for WHAT SECONDS CMD...: retry CMD until it succeeds, or fail saying which.
wait_for() {
  local what="$1" limit="$2"; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      die "$what not ready after ${limit}s; logs in $ICEE_STATE/logs/"
    fi
    sleep 0.5
  done
}

node_ready() {
  [[ "$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}

# import_images: put every cached image archive into containerd's k8s.io
# namespace, skipping ones already imported (a stamp per archive).
import_images() {
  local ctr="$(node_prefix)/usr/bin/ctr" stamps="$ICEE_STATE/containerd-imported"
  mkdir -p "$stamps"
  local image archive
  while read -r image archive; do
    local stamp="$stamps/$(basename "$archive")"
    if [[ ! -f "$stamp" ]] || ! grep -qx "$(full_image_name "$image")" \
        <<<"$("$ctr" --address "$ICEE_RUN/containerd/containerd.sock" -n k8s.io images ls -q)"; then
      "$ctr" --address "$ICEE_RUN/containerd/containerd.sock" -n k8s.io images import --no-unpack=false "$archive" >/dev/null \
        || die "importing $archive into containerd failed"
      touch "$stamp"
      log "imported $image"
    fi
  done < <(cd "$(dirname "${BASH_SOURCE[0]}")" && ./images.sh $(grep -L '^IMPORT=no' images/*.recipe | xargs -n1 basename | sed 's/\.recipe$//'))
}

full_image_name() {
  local first="${1%%/*}"
  if [[ "$1" == */* && ( "$first" == *.* || "$first" == *:* || "$first" == localhost ) ]]; then echo "$1"
  elif [[ "$1" == */* ]]; then echo "docker.io/$1"; else echo "docker.io/library/$1"; fi
}

# preflight: stop early, saying what is missing and what to do.
preflight() {
  require_root
  [[ "$(uname -s)" == Linux ]] || die "Linux only"
  for c in memory pids cpu cpuset; do
    [[ -d /sys/fs/cgroup/$c ]] || [[ -f /sys/fs/cgroup/cgroup.controllers ]] \
      || die "cgroup controller '$c' is not mounted under /sys/fs/cgroup"
  done
  grep -qw overlay /proc/filesystems || die "the kernel has no overlay filesystem (containerd's snapshotter needs it)"
  [[ -d /proc/sys/net/bridge ]] || die "bridge netfilter is missing: load br_netfilter (modprobe br_netfilter)"
  command -v go >/dev/null || die "go is not installed (Go 1.24+ compiles Kubernetes): apt-get install golang or see go.dev"
  command -v python3 >/dev/null || die "python3 is not installed"
  command -v openssl >/dev/null || die "openssl is not installed: apt-get install openssl"
  local port
  for port in "$APISERVER_PORT" 2379 2380 10250 10257 10259; do
    if ss -Hltn "sport = :$port" 2>/dev/null | grep -q . && ! owned_port "$port"; then
      die "port $port is taken by another program ($(ss -Hltnp "sport = :$port" | grep -o 'users:.*' | head -1)); stop it or run make cluster-down"
    fi
  done
}

# A port held by one of our own (possibly stale) components is fine: down.sh stops it.
owned_port() { ss -Hltnp "sport = :$1" | grep -qE '"(etcd|kube-[a-z-]+|kubelet|containerd)"'; }

# The processes of the local cluster, in start order.
COMPONENTS="etcd containerd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy"
