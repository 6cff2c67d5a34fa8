#!/usr/bin/env bash
# Certificates and kubeconfigs for the local cluster: one CA, a serving cert for
# the API server, a client cert per component, and the service-account key.
# Kept across restarts; regenerated only when missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/versions.env"
. "$here/lib.sh"

pki="$ICEE_STATE/pki"
mkdir -p "$pki"
chmod 700 "$pki"
cd "$pki"

if [[ ! -f ca.crt ]]; then
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
    -subj "/CN=icee-local-ca" 2>/dev/null
fi

# cert NAME CN [O] [SANS]: a key and a cert signed by the CA.
cert() {
  local name="$1" cn="$2" org="${3:-}" sans="${4:-}"
  [[ -f "$name.crt" ]] && return 0
  local subj="/CN=$cn"; [[ -n "$org" ]] && subj="/O=$org$subj"
  local ext; ext="$(mktemp)"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n "$sans" ]]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$sans";
    else echo "extendedKeyUsage=clientAuth"; fi
  } > "$ext"
  openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "$subj" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
    -extfile "$ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$ext"
}

cert apiserver kube-apiserver "" \
  "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$SERVICE_IP,IP:$NODE_IP"
cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
cert admin icee-admin system:masters
cert controller-manager system:kube-controller-manager
cert scheduler system:kube-scheduler
cert kube-proxy system:kube-proxy
cert kubelet "system:node:$NODE_NAME" system:nodes
cert kubelet-serving "system:node:$NODE_NAME" system:nodes "DNS:$NODE_NAME,DNS:localhost,IP:127.0.0.1,IP:$NODE_IP"
[[ -f sa.key ]] || { openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null; }

# kubeconfig NAME CERT: a kubeconfig that authenticates with CERT's key pair.
kubeconfig() {
  local file="$1" cert="$2" server="https://127.0.0.1:$APISERVER_PORT"
  cat > "$file" <<KC
apiVersion: v1
kind: Config
clusters:
- name: icee-local
  cluster:
    certificate-authority-data: $(base64 -w0 < ca.crt)
    server: $server
users:
- name: $cert
  user:
    client-certificate-data: $(base64 -w0 < "$cert.crt")
    client-key-data: $(base64 -w0 < "$cert.key")
contexts:
- name: icee-local
  context: {cluster: icee-local, user: $cert}
current-context: icee-local
KC
  chmod 600 "$file"
}
for c in admin controller-manager scheduler kube-proxy kubelet; do kubeconfig "$c.kubeconfig" "$c"; done
cp admin.kubeconfig "$ICEE_STATE/kubeconfig"
