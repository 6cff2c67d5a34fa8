#!/usr/bin/env bash
# Build the cluster's images from the recipes in images/ (debootstrap roots or a
# static binary) into OCI archives in the cache, keyed by a hash of the recipe
# and the tooling. Usage: images.sh [RECIPE...]  (default: all)
# Prints "<recipe> <archive>" per image. Importing is up.sh's job.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/versions.env"
. "$here/lib.sh"
require_root

recipes=("$@")
((${#recipes[@]})) || recipes=($(cd "$here/images" && ls *.recipe | sed 's/\.recipe$//'))
out_dir="$ICEE_CACHE/images"
mkdir -p "$out_dir"

for r in "${recipes[@]}"; do
  recipe="$here/images/$r.recipe"
  [[ -f "$recipe" ]] || die "no image recipe $recipe"
  # shellcheck disable=SC1090
  ( unset IMAGE KIND SUITE PACKAGES EXTRA_PACKAGES SOURCE ENTRYPOINT USER ENV IMPORT
    . "$recipe"
    key="$(cat "$recipe" "$here/oci_image.py" "$here/images.sh" ${SOURCE:+"$here/images/$SOURCE"} | sha256sum | cut -c1-16)"
    archive="$out_dir/$r-$key.tar"
    if [[ ! -f "$archive" ]]; then
      start=$SECONDS
      root="$(mktemp -d "$out_dir/.root-$r.XXXX")"
      trap 'rm -rf "$root"' EXIT
      case "$KIND" in
        static)
          cc -static -Os -s -o "$root/${ENTRYPOINT#/}" "$here/images/$SOURCE" ;;
        debootstrap)
          log "debootstrap $SUITE + $PACKAGES for $IMAGE"
          debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$(debian_mirror)" \
            > "$out_dir/$r.debootstrap.log" 2>&1 || die "debootstrap failed, see $out_dir/$r.debootstrap.log"
          if [[ -n "${EXTRA_PACKAGES:-}" ]]; then
            # Packages whose maintainer scripts need a complete system (npm).
            mount -t proc proc "$root/proc"
            trap 'umount "$root/proc" 2>/dev/null; rm -rf "$root"' EXIT
            { chroot "$root" apt-get update -q && DEBIAN_FRONTEND=noninteractive chroot "$root" \
                apt-get install -y -q --no-install-recommends ${EXTRA_PACKAGES//,/ }; } \
              >> "$out_dir/$r.debootstrap.log" 2>&1 || die "installing $EXTRA_PACKAGES failed, see $out_dir/$r.debootstrap.log"
            umount "$root/proc"
          fi
          # Small and reproducible: no caches, docs, logs or machine identity.
          rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/log/* \
            "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
            "$root"/usr/share/locale/* "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old \
            "$root"/var/cache/ldconfig/aux-cache "$root"/etc/machine-id "$root"/root/.bash_history "$root"/tmp/*
          mkdir -p "$root/workspace" "$root/icee/src" ;;
        *) die "$recipe: unknown KIND '$KIND'" ;;
      esac
      args=(--user "${USER:-65532:65532}")
      [[ -n "${ENTRYPOINT:-}" ]] && args+=(--entrypoint "$ENTRYPOINT")
      for e in ${ENV:-}; do args+=(--env "$e"); done
      python3 "$here/oci_image.py" "$root" "$IMAGE" "$archive" "${args[@]}" >/dev/null
      # Older archives of this recipe are superseded.
      find "$out_dir" -maxdepth 1 -name "$r-*.tar" ! -path "$archive" -delete
      log "built $IMAGE in $((SECONDS - start)) s ($(du -m "$archive" | cut -f1) MB)"
    fi
    echo "$IMAGE $archive"
  )
done
