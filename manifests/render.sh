#!/usr/bin/env bash
# Render the chart's default installation as plain YAML for `kubectl apply`
# users. `manifests/render.sh > manifests/icee.yaml` regenerates the file; a
# test checks that the committed file matches.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
helm="${HELM:-$("$repo/cluster/build-helm.sh")}"
cat <<'HEAD'
# icee for `kubectl apply -f manifests/icee.yaml` (generated from charts/icee by
# manifests/render.sh with the chart's default values; do not edit by hand).
apiVersion: v1
kind: Namespace
metadata:
  name: icee-system
HEAD
"$helm" template icee "$repo/charts/icee" --namespace icee-system --include-crds --skip-tests \
  | grep -v '^# Source: ' | sed -e 's/[[:space:]]*$//'
