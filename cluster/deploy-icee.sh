#!/usr/bin/env bash
# The whole system on the local cluster: cluster up, icee image built offline
# and imported, chart installed with helm. Prints where the UI is.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
. "$here/versions.env"
. "$here/lib.sh"
require_root
t0=$SECONDS
"$here/up.sh"
helm="$("$here/build-helm.sh")"
image="$("$here/build-icee-image.sh")"
export KUBECONFIG="$ICEE_STATE/kubeconfig"
# helm installs charts/icee/crds on the first install only; schema changes are
# additive, so apply them on every deploy.
kc apply --server-side --force-conflicts -f "$repo/charts/icee/crds/" >/dev/null
log "installing the chart (release icee, namespace $ICEE_RELEASE_NAMESPACE)"
"$helm" upgrade --install icee "$repo/charts/icee" \
  --namespace "$ICEE_RELEASE_NAMESPACE" --create-namespace \
  --set image.repository="${image%:*}" --set image.tag="${image##*:}" --set image.pullPolicy=Never \
  --set sandbox.imagePullPolicy=Never \
  --set api.service.type=NodePort --set api.service.nodePort="$ICEE_NODE_PORT" \
  --wait --timeout 5m >/dev/null
# Until the quota controller has counted the sandbox namespace's ResourceQuota, the
# apiserver refuses every CodeSession ("status unknown for quota"): wait for it.
uncounted() {
  kc -n "$ICEE_SANDBOX_NAMESPACE" get resourcequota \
    -o go-template='{{range .items}}{{if not .status}}x{{else if not .status.hard}}x{{end}}{{end}}'
}
for _ in $(seq 240); do [ -z "$(uncounted)" ] && break; sleep 0.5; done
[ -z "$(uncounted)" ] || log "warning: the sandbox ResourceQuota is still not counted"
log "icee is up in $((SECONDS - t0)) s"
echo "icee UI and API: http://127.0.0.1:$ICEE_NODE_PORT/"
echo "kubectl: KUBECONFIG=$ICEE_STATE/kubeconfig cluster/kubectl -n $ICEE_SANDBOX_NAMESPACE get codesessions"
