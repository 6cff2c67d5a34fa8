#!/usr/bin/env bash
# Build the icee image from the Dockerfile offline, with buildah (no daemon) and
# locally made base images, then import it into the cluster's containerd.
# Prints the image name. The tag is a hash of the sources, so a changed tree
# gives a new tag and `helm upgrade` rolls the pods.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
. "$here/versions.env"
. "$here/lib.sh"
require_root
command -v buildah >/dev/null || die "buildah is not installed: apt-get install buildah"

tag="$(cd "$repo" && cat Dockerfile .dockerignore pyproject.toml ui/package.json ui/package-lock.json \
  $(git ls-files core api operator ui | grep -v '^ui/dist' | sort) | sha256sum | cut -c1-12)"
image="icee/icee:$ICEE_VERSION-$tag"
archive="$ICEE_CACHE/images/icee-$tag.tar"
bah=(buildah --root "$ICEE_CACHE/buildah/root" --runroot "$ICEE_RUN-buildah" --storage-driver overlay)

# One build at a time on a machine: a second one's cleanup would remove the first
# one's layers mid-build ("image not known"). buildah leaves no daemon holding it.
mkdir -p "$ICEE_CACHE"
exec 8>"$ICEE_CACHE/buildah.lock"
flock 8
if [[ ! -f "$archive" ]]; then
  start=$SECONDS
  while read -r name path; do
    if ! "${bah[@]}" inspect --type image "localhost/$name" >/dev/null 2>&1; then
      id="$("${bah[@]}" pull -q "oci-archive:$path")"
      "${bah[@]}" tag "$id" "localhost/$name"
    fi
  done < <("$here/images.sh" base-python base-node)
  log "building $image with buildah (cold: a few minutes; layers are cached)"
  # RUN steps see this machine's CA bundle (package registries may sit behind
  # a TLS-inspecting proxy here); it is mounted, never copied into the image.
  "${bah[@]}" bud --isolation chroot --layers --pull-never -q \
    -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
    --build-arg BASE=localhost/icee/base-python:3.11 --build-arg NODE_BASE=localhost/icee/base-node:20 \
    -f "$repo/Dockerfile" -t "localhost/$image" "$repo" >/dev/null
  "${bah[@]}" push -q "localhost/$image" "oci-archive:$archive.tmp:docker.io/$image" >/dev/null
  mv "$archive.tmp" "$archive"
  find "$ICEE_CACHE/images" -maxdepth 1 -name 'icee-*.tar' ! -path "$archive" -delete
  # Older builds' images and dangling layers would only fill the disk.
  "${bah[@]}" images --format '{{.Name}}:{{.Tag}}' | grep '^localhost/icee/icee:' | grep -vx "localhost/$image" \
    | xargs -r "${bah[@]}" rmi >/dev/null 2>&1 || true
  "${bah[@]}" rmi --prune >/dev/null 2>&1 || true
  log "built $image in $((SECONDS - start)) s ($(du -m "$archive" | cut -f1) MB archive)"
fi
exec 8>&-

ctr=("$(node_prefix)/usr/bin/ctr" --address "$ICEE_RUN/containerd/containerd.sock" -n k8s.io)
if ! grep -qx "docker.io/$image" <<<"$("${ctr[@]}" images ls -q)"; then
  "${ctr[@]}" images import "$archive" >/dev/null || die "importing $archive failed (is the cluster up?)"
  log "imported $image"
fi
echo "$image"
