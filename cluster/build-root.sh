#!/usr/bin/env bash
# Build one image's root filesystem from its recipe into ROOT (an empty
# directory). Everything that decides an image's content is here, so
# images.sh keys its cache on this file. Usage: build-root.sh RECIPE ROOT LOG
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/versions.env"
. "$here/lib.sh"
recipe="$1" root="$2" build_log="$3"
unset IMAGE KIND SUITE PACKAGES EXTRA_PACKAGES SOURCE ENTRYPOINT
# shellcheck disable=SC1090
. "$recipe"
: > "$build_log"
case "$KIND" in
  static)
    cc -static -Os -s -o "$root/${ENTRYPOINT#/}" "$(dirname "$recipe")/$SOURCE" ;;
  debootstrap)
    log "debootstrap $SUITE + $PACKAGES for $IMAGE"
    debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$(debian_mirror)" \
      >> "$build_log" 2>&1 || die "debootstrap failed, see $build_log"
    if [[ -n "${EXTRA_PACKAGES:-}" ]]; then
      # Packages whose maintainer scripts need a complete system (npm).
      mount -t proc proc "$root/proc"
      trap 'umount "$root/proc" 2>/dev/null' EXIT
      { chroot "$root" apt-get update -q && DEBIAN_FRONTEND=noninteractive chroot "$root" \
          apt-get install -y -q --no-install-recommends ${EXTRA_PACKAGES//,/ }; } \
        >> "$build_log" 2>&1 || die "installing $EXTRA_PACKAGES failed, see $build_log"
    fi
    # Small and reproducible: no caches, docs, logs or machine identity.
    rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/log/* \
      "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
      "$root"/usr/share/locale/* "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old \
      "$root"/var/cache/ldconfig/aux-cache "$root"/etc/machine-id "$root"/root/.bash_history "$root"/tmp/*
    # Mount points of the sandbox pod (the root filesystem is read-only).
    mkdir -p "$root/workspace" "$root/icee/src" ;;
  *) die "$recipe: unknown KIND '$KIND'" ;;
esac
