# Shared helpers for the cluster scripts. Sourced, never executed.
ICEE_CACHE="${ICEE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/icee}"
ICEE_STATE="${ICEE_STATE:-/var/lib/icee-cluster}"
ICEE_RUN="${ICEE_RUN:-/run/icee-cluster}"

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }

k8s_bin_dir() { echo "$ICEE_CACHE/k8s-v$K8S_VERSION/bin"; }

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
