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
# Roots of builds that died mid-way (an hour is far longer than any build).
find "$out_dir" -maxdepth 1 -name '.root-*' -mmin +60 -exec rm -rf {} + 2>/dev/null || true

for r in "${recipes[@]}"; do
  recipe="$here/images/$r.recipe"
  [[ -f "$recipe" ]] || die "no image recipe $recipe"
  # shellcheck disable=SC1090
  ( unset IMAGE KIND SUITE PACKAGES EXTRA_PACKAGES SOURCE ENTRYPOINT USER ENV IMPORT
    . "$recipe"
    # What decides an image's content: its recipe, the root builder, the packer.
    key="$(cat "$recipe" "$here/build-root.sh" "$here/oci_image.py" ${SOURCE:+"$here/images/$SOURCE"} | sha256sum | cut -c1-16)"
    archive="$out_dir/$r-$key.tar"
    if [[ ! -f "$archive" ]]; then
      start=$SECONDS
      root="$(mktemp -d "$out_dir/.root-$r.XXXX")"
      trap 'rm -rf "$root"' EXIT
      "$here/build-root.sh" "$recipe" "$root" "$out_dir/$r.build.log"
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
