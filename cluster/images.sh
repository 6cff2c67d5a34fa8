#!/usr/bin/env bash
# Build the cluster's images from the recipes in images/ (debootstrap roots or a
# static binary) into OCI archives in the cache, keyed by a hash of the recipe
# and the tooling. Sandbox images (icee/sandbox-*) get one more layer with the
# in-sandbox runner (/usr/local/bin/icee-runner, runner/), keyed by the runner's
# source, so a change to the runner repacks that layer only.
# Usage: images.sh [RECIPE...]  (default: all)
# Prints "<image> <archive>" per image. Importing is up.sh's job.
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

# The runner layer's key: its source, its build, the layer packer and the other
# file of that layer (a placeholder that keeps /tmp read-only under gVisor).
runner_dir="$here/../runner"
tmp_placeholder="$here/images/tmp-read-only.txt"
runner_key="$(cat "$runner_dir/icee-runner.c" "$runner_dir/Makefile" "$here/oci_add_layer.py" "$tmp_placeholder" | sha256sum | cut -c1-16)"
runner_bin="$out_dir/icee-runner-$runner_key"

for r in "${recipes[@]}"; do
  recipe="$here/images/$r.recipe"
  [[ -f "$recipe" ]] || die "no image recipe $recipe"
  # shellcheck disable=SC1090
  ( unset IMAGE KIND SUITE PACKAGES EXTRA_PACKAGES SOURCE ENTRYPOINT USER ENV IMPORT
    . "$recipe"
    # What decides an image's content: its recipe, the root builder, the packer.
    key="$(cat "$recipe" "$here/build-root.sh" "$here/oci_image.py" ${SOURCE:+"$here/images/$SOURCE"} | sha256sum | cut -c1-16)"
    archive="$out_dir/$r-$key.tar"
    final="$archive"
    [[ "$IMAGE" == icee/sandbox-* ]] && final="$out_dir/$r-$key-runner-$runner_key.tar"
    if [[ ! -f "$final" && ! -f "$archive" ]]; then
      start=$SECONDS
      root="$(mktemp -d "$out_dir/.root-$r.XXXX")"
      trap 'rm -rf "$root"' EXIT
      "$here/build-root.sh" "$recipe" "$root" "$out_dir/$r.build.log"
      args=(--user "${USER:-65532:65532}")
      [[ -n "${ENTRYPOINT:-}" ]] && args+=(--entrypoint "$ENTRYPOINT")
      for e in ${ENV:-}; do args+=(--env "$e"); done
      python3 "$here/oci_image.py" "$root" "$IMAGE" "$archive" "${args[@]}" >/dev/null
      log "built $IMAGE in $((SECONDS - start)) s ($(du -m "$archive" | cut -f1) MB)"
    fi
    if [[ ! -f "$final" ]]; then
      if [[ ! -x "$runner_bin" ]]; then
        make -s -C "$runner_dir" OUT="$runner_bin.tmp" >&2 || die "building the runner failed"
        mv "$runner_bin.tmp" "$runner_bin"
      fi
      python3 "$here/oci_add_layer.py" "$archive" "$final" "$runner_bin:/usr/local/bin/icee-runner:0755" \
        "$tmp_placeholder:/tmp/.icee-read-only:0444" >/dev/null
      log "added the runner layer ($runner_key) to $IMAGE"
    fi
    # Older archives of this recipe are superseded (its base is kept beside the final image).
    find "$out_dir" -maxdepth 1 -name "$r-*.tar" ! -path "$archive" ! -path "$final" -delete
    echo "$IMAGE $final"
  )
done
find "$out_dir" -maxdepth 1 -name 'icee-runner-*' ! -path "$runner_bin" -delete
