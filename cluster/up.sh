#!/usr/bin/env bash
# Bring up the local single-node Kubernetes cluster: etcd, the control plane,
# containerd with runc and gVisor (its own shim: one sandbox per pod), the
# kubelet and kube-proxy, all as plain processes on this machine. Idempotent:
# a healthy cluster is left as it is; a broken or half-dead one (killed
# processes, stale mounts) is cleaned first.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/versions.env"
. "$here/lib.sh"
require_root
t0=$SECONDS

if "$here/status.sh" --quiet; then
  # Sandbox images may have changed since (a recipe, the runner): build and
  # import those; a no-op when nothing did.
  import_images
  log "cluster already up; KUBECONFIG=$ICEE_STATE/kubeconfig"
  exit 0
fi

preflight
"$here/down.sh" --keep-images
"$here/node-deps.sh"
"$here/build-k8s.sh"
"$here/build-gvisor.sh" >/dev/null
"$here/pki.sh"

bin="$(k8s_bin_dir)"
prefix="$(node_prefix)"
pki="$ICEE_STATE/pki"
mkdir -p "$ICEE_STATE"/{logs,etcd,kubelet,cni/net.d,cni/ipam,config} "$ICEE_RUN"
cfg="$ICEE_STATE/config"

# Kernel settings the pod network and kube-proxy rely on.
sysctl -qw net.ipv4.ip_forward=1
sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1

# The node's address is the pod bridge's gateway; create it before the API
# server advertises it (the bridge CNI plugin adopts it as it is).
ip link show cni0 >/dev/null 2>&1 || ip link add cni0 type bridge
ip addr show dev cni0 | grep -q "inet $NODE_IP/" || ip addr add "$NODE_IP/${POD_CIDR#*/}" dev cni0
ip link set cni0 up

render "$here/config/containerd.toml" > "$cfg/containerd.toml"
render "$here/config/cni.conflist" > "$ICEE_STATE/cni/net.d/10-icee.conflist"
render "$here/config/kubelet.yaml" > "$cfg/kubelet.yaml"
render "$here/config/kube-proxy.yaml" > "$cfg/kube-proxy.yaml"
render "$here/config/runsc.toml" > "$cfg/runsc.toml"

start etcd "$prefix/usr/bin/etcd" --name icee --data-dir "$ICEE_STATE/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster icee=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381 \
  --unsafe-no-fsync --log-level warn

start_containerd

start kube-apiserver "$bin/kube-apiserver" \
  --etcd-servers=http://127.0.0.1:2379 \
  --bind-address=0.0.0.0 --secure-port="$APISERVER_PORT" --advertise-address="$NODE_IP" \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --client-ca-file="$pki/ca.crt" --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
  --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types=InternalIP \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
  --allow-privileged=true --profiling=false --v=0

wait_for "kube-apiserver" 120 kc get --raw /readyz

start kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig="$pki/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$pki/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$pki/controller-manager.kubeconfig" \
  --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
  --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
  --use-service-account-credentials=true --leader-elect=false --bind-address=127.0.0.1 \
  --profiling=false

start kube-scheduler "$bin/kube-scheduler" \
  --kubeconfig="$pki/scheduler.kubeconfig" \
  --authentication-kubeconfig="$pki/scheduler.kubeconfig" \
  --authorization-kubeconfig="$pki/scheduler.kubeconfig" \
  --leader-elect=false --bind-address=127.0.0.1 --profiling=false

wait_for "containerd" 60 containerd_answers
import_images

start_kubelet

start kube-proxy "$bin/kube-proxy" --config="$cfg/kube-proxy.yaml"

wait_for "node $NODE_NAME Ready" 180 node_ready
wait_for "default service account" 60 kc -n default get serviceaccount default
kc apply -f "$here/config/addons.yaml" >/dev/null

log "cluster up in $((SECONDS - t0)) s"
log "export KUBECONFIG=$ICEE_STATE/kubeconfig   (kubectl: $bin/kubectl)"
