#!/bin/sh
# The "runsc" runtime's binary for containerd's runc v2 shim. Rendered by up.sh.
#
# The runc shim waits on the pid it is given and has no notion of a pod-wide
# gVisor sandbox, so each pod's pause container runs under runc (it only holds
# namespaces) and each workload container becomes its own standalone gVisor
# sandbox: its exit status, stdio and memory cgroup are then the sandbox's, as
# the shim expects. Calls about a container runc created go to runc.
root=/run/containerd/runc
prev=
for a in "$@"; do
  [ "$prev" = --root ] && root="$a"
  prev="$a"
done
for a in "$@"; do
  [ -f "$root/$a/state.json" ] && exec /usr/sbin/runc "$@"
done
case " $* " in
  *" create "*)
    bundle=.
    prev=
    for a in "$@"; do
      [ "$prev" = --bundle ] && bundle="$a"
      case "$a" in --bundle=*) bundle="${a#--bundle=}" ;; esac
      prev="$a"
    done
    if grep -q '"io.kubernetes.cri.container-type":"sandbox"' "$bundle/config.json"; then
      exec /usr/sbin/runc "$@"
    fi
    # A workload container: hide the CRI pod annotations so runsc boots a
    # sandbox of its own instead of looking for the pod's (runc) sandbox.
    sed -i 's/"io\.kubernetes\.cri\.container-type"/"icee.dev\/cri-container-type"/; s/"io\.kubernetes\.cri\.sandbox-id"/"icee.dev\/cri-sandbox-id"/' "$bundle/config.json"
    ;;
esac
runsc="${NODE_PREFIX}/usr/bin/runsc"
case " $* " in
  *" kill "*)
    # The shim ignores a kill of an exited container only if the error says
    # so in runc's words; runsc says "sandbox is not running".
    if ! out="$("$runsc" --network=none --platform=systrap "$@" 2>&1)"; then
      case "$out" in
        *"not running"*|*"not found"*|*"no such"*) echo "container not running: $out" >&2 ;;
        *) echo "$out" >&2 ;;
      esac
      exit 1
    fi
    exit 0 ;;
esac
exec "$runsc" --network=none --platform=systrap "$@"
