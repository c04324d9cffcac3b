#!/usr/bin/env bash
# The README's main command: brings up a single-node knode cluster on this machine — a private
# containerd, a control plane, the kubelet (with knode-bridge pod networking) and kube-proxy —
# then runs a demo pod and Service and prints the kubectl lines to try next.
#
#   scripts/up.sh                 # set up the host, build, start everything, run the demo
#   scripts/up.sh --down          # stop everything and remove the cluster's state
#   --control-plane knode         # (default) knode-control-plane: one Rust process, seconds to start
#   --control-plane upstream      # the real kube-apiserver, controller-manager, scheduler and etcd
#                                 # (v1.37.2, built from Go modules and cached: the first run builds
#                                 # for tens of minutes); the node joins by bootstrap token as with
#                                 # `kubeadm join`, CoreDNS serves cluster DNS (kube-dns at
#                                 # 10.96.0.10) and kubectl is the built v1.37.2
#   options (both modes): --dir DIR (state, default /var/lib/knode-up; --down reads the mode from
#            it), --no-setup (skip apt/host setup), --no-build, --node-ip IP, --registry-port N
#            (default 5000), --api-port N (default 6443)
#
# Everything the cluster creates lives under DIR (containerd root and socket, control plane data,
# kubelet root, pod logs, CNI state) plus, in the network namespace it runs in, the knode0 bridge
# and the nftables tables `ip kube-proxy` and `ip knode-cni`; `--down` removes all of it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DIR=/var/lib/knode-up
SETUP=1
BUILD=1
DOWN=0
NODE_IP=""
REG_PORT=5000
API_PORT=6443
MODE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR=$2; shift 2 ;;
    --no-setup) SETUP=0; shift ;;
    --no-build) BUILD=0; shift ;;
    --down) DOWN=1; shift ;;
    --node-ip) NODE_IP=$2; shift 2 ;;
    --registry-port) REG_PORT=$2; shift 2 ;;
    --api-port) API_PORT=$2; shift 2 ;;
    --control-plane) MODE=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "up.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
BIN=${KNODE_BIN_DIR:-$ROOT/target/debug}
CGROUP_ROOT=${KNODE_CGROUP_ROOT:-/knode-up}
SOCK=$DIR/containerd/c.sock
NODE=$(tr -d '\n' < /proc/sys/kernel/hostname | tr 'A-Z' 'a-z')
KUBECONFIG_ADMIN=$DIR/admin.conf
if [ -z "$MODE" ]; then MODE=$(cat "$DIR/mode" 2>/dev/null || echo knode); fi
case "$MODE" in knode|upstream) ;; *) echo "up.sh: --control-plane must be knode or upstream" >&2; exit 2 ;; esac

log() { echo "up.sh: $*" >&2; }

stop_pid() { # name [seconds to wait before SIGKILL]
  local f=$DIR/$1.pid
  if [ -f "$f" ]; then
    local pid; pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq $((${2:-5} * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
  fi
}

down() {
  log "stopping the cluster in $DIR"
  stop_pid kube-proxy
  stop_pid kubelet
  if [ -S "$SOCK" ]; then
    for id in $(ctr --address "$SOCK" -n k8s.io containers ls -q 2>/dev/null); do
      ctr --address "$SOCK" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    sleep 0.5
    for id in $(ctr --address "$SOCK" -n k8s.io containers ls -q 2>/dev/null); do
      ctr --address "$SOCK" -n k8s.io tasks rm -f "$id" >/dev/null 2>&1 || true
      ctr --address "$SOCK" -n k8s.io containers rm "$id" >/dev/null 2>&1 || true
    done
  fi
  # The upstream plane stops its own processes (each up to 10 s) and removes its state.
  stop_pid control-plane 60
  stop_pid containerd
  stop_pid registry
  [ -x "$BIN/kube-proxy" ] && "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  nft delete table ip knode-cni 2>/dev/null || true
  ip link delete knode0 2>/dev/null || true
  # Unmount what the sandboxes and containers left (deepest first), then remove the state.
  if [ -d "$DIR" ]; then
    grep " $DIR" /proc/self/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    for ctl in /sys/fs/cgroup/*; do
      [ -d "$ctl$CGROUP_ROOT" ] && find "$ctl$CGROUP_ROOT" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
    rm -rf "$DIR"
  fi
  log "down"
}

if [ "$DOWN" = 1 ]; then down; exit 0; fi

if [ "$SETUP" = 1 ]; then
  if [ "$MODE" = upstream ]; then scripts/setup-host.sh --upstream; else scripts/setup-host.sh; fi
fi
if [ "$BUILD" = 1 ]; then
  log "building knode (debug profile)"
  cargo build -p knode-control-plane -p kubelet -p kube-proxy -p cni -p knode-harness --bins
  scripts/build-testimg.sh
fi
if [ "$MODE" = upstream ]; then
  log "upstream components (built once, then cached; see scripts/build-upstream.sh)"
  scripts/build-upstream.sh >/dev/null
fi
for b in knode-control-plane kubelet kube-proxy knode-bridge knode-push-test-images knode-upstream-plane; do
  [ -x "$BIN/$b" ] || { echo "up.sh: $BIN/$b is missing (run without --no-build)" >&2; exit 1; }
done
if [ -f "$DIR/kubelet.pid" ] && kill -0 "$(cat "$DIR/kubelet.pid")" 2>/dev/null; then
  echo "up.sh: a cluster is already running in $DIR (scripts/up.sh --down first)" >&2; exit 1
fi
mkdir -p "$DIR"/{containerd,registry,cp,kubelet,logs,cni/net.d,cni/ipam,manifests}
echo "$MODE" > "$DIR/mode"
sysctl -qw net.ipv4.ip_forward=1 || true
ip link set lo up 2>/dev/null || true
if [ -z "$NODE_IP" ]; then
  NODE_IP=$(ip -4 route get 192.0.2.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -1)
  NODE_IP=${NODE_IP:-127.0.0.1}
fi

wait_for() { # what, seconds, command...
  local what=$1 secs=$2; shift 2
  for _ in $(seq $((secs * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "up.sh: timed out waiting for $what; logs are in $DIR/*.log" >&2; exit 1
}

# 1. A local registry with the demo image (the machine may have no internet access).
cat > "$DIR/registry/config.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $DIR/registry/data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$REG_PORT}
EOF
docker-registry serve "$DIR/registry/config.yml" > "$DIR/registry.log" 2>&1 &
echo $! > "$DIR/registry.pid"
wait_for "the registry" 20 curl -sf "http://127.0.0.1:$REG_PORT/v2/"
# sed, not head: head exits after one line and the pusher's second line would hit a closed pipe.
IMAGE=$("$BIN/knode-push-test-images" "127.0.0.1:$REG_PORT" | sed -n 1p)
log "pushed $IMAGE"

# 2. A private containerd (its own root and socket; the CRI plugin is not used by knode).
cat > "$DIR/containerd/config.toml" <<EOF
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[metrics]
  address = ""
EOF
containerd --config "$DIR/containerd/config.toml" > "$DIR/containerd.log" 2>&1 &
echo $! > "$DIR/containerd.pid"
wait_for "containerd" 30 ctr --address "$SOCK" version

# 3. The control plane, an admin kubeconfig and the node's credentials.
if [ "$MODE" = knode ]; then
  "$BIN/knode-control-plane" --listen "127.0.0.1:$API_PORT" --data-dir "$DIR/cp" \
    --write-kubeconfig "$KUBECONFIG_ADMIN" > "$DIR/control-plane.log" 2>&1 &
  echo $! > "$DIR/control-plane.pid"
  wait_for "the control plane" 30 test -s "$KUBECONFIG_ADMIN"
  "$BIN/knode-control-plane" issue-kubeconfig --data-dir "$DIR/cp" --user "system:node:$NODE" \
    --group system:nodes --server "https://127.0.0.1:$API_PORT" --out "$DIR/node.conf" >/dev/null
  CA_FILE=$DIR/cp/pki/ca.crt
  KUBELET_CREDS=(--kubeconfig "$DIR/node.conf")
  PROXY_KUBECONFIG=$DIR/node.conf
  KUBECTL=$(command -v kubectl)
else
  # As `kubeadm init`: PKI, etcd, the apiserver advertising the node IP, the controller-manager
  # (CSR signing and auto-approval, nodeipam) and the scheduler; a bootstrap token for the node.
  # --registry: CoreDNS's image is pushed there and the addon deployed, as kubeadm does.
  "$BIN/knode-upstream-plane" --dir "$DIR/cp" --advertise-address "$NODE_IP" --port "$API_PORT" \
    --registry "127.0.0.1:$REG_PORT" > "$DIR/control-plane.log" 2>&1 &
  echo $! > "$DIR/control-plane.pid"
  wait_for "the upstream control plane" 180 test -s "$DIR/cp/ready"
  cp "$DIR/cp/admin.conf" "$KUBECONFIG_ADMIN"
  CA_FILE=$DIR/cp/ca.crt
  KUBELET_CREDS=(--bootstrap-kubeconfig "$DIR/cp/bootstrap-kubelet.conf" --kubeconfig "$DIR/kubelet/kubelet.conf")
  PROXY_KUBECONFIG=$DIR/cp/kube-proxy.conf
  KUBECTL=$DIR/cp/kubectl
fi
kubectl() { "$KUBECTL" "$@"; }
export KUBECONFIG=$KUBECONFIG_ADMIN

# 4. Pod networking: knode-bridge on the node's pod CIDR (the first node gets 10.244.0.0/24).
cat > "$DIR/cni/net.d/10-knode.conflist" <<EOF
{"cniVersion":"1.0.0","name":"knode","plugins":[{"type":"knode-bridge","bridge":"knode0",
 "isDefaultGateway":true,"ipMasq":true,"hairpinMode":true,
 "ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.0.0/24"}]],"dataDir":"$DIR/cni/ipam"}}]}
EOF

# 5. The kubelet and kube-proxy. Upstream mode has cluster DNS: pods get CoreDNS's address and the
# cluster domain's search path (knode's light plane has no DNS server yet). With
# systemd-resolved, the host's real upstream servers, as kubeadm configures it: 127.0.0.53 inside
# CoreDNS's pod would be CoreDNS itself.
DNS_CONFIG=""
if [ "$MODE" = upstream ]; then
  DNS_CONFIG="clusterDNS: [10.96.0.10]"
  if grep -q '^nameserver 127\.0\.0\.53' /etc/resolv.conf 2>/dev/null && [ -f /run/systemd/resolve/resolv.conf ]; then
    DNS_CONFIG="$DNS_CONFIG
resolvConf: /run/systemd/resolve/resolv.conf"
  fi
fi
cat > "$DIR/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
podLogsDir: $DIR/logs
staticPodPath: $DIR/manifests
authentication:
  x509: {clientCAFile: $CA_FILE}
  webhook: {enabled: true}
authorization: {mode: Webhook}
rotateCertificates: true
serverTLSBootstrap: $([ "$MODE" = upstream ] && echo true || echo false)
clusterDomain: cluster.local
$DNS_CONFIG
# Absolute disk floors instead of upstream's 10 %/15 %: a developer's disk is often fuller than
# that, and the demo node would refuse its pod under DiskPressure.
evictionHard: {memory.available: 100Mi, nodefs.available: 1Gi, imagefs.available: 1Gi}
EOF
"$BIN/kubelet" "${KUBELET_CREDS[@]}" --config "$DIR/kubelet-config.yaml" \
  --hostname-override "$NODE" --node-ip "$NODE_IP" --root-dir "$DIR/kubelet" \
  --container-runtime-endpoint "unix://$SOCK" --insecure-registry "127.0.0.1:$REG_PORT" \
  --cgroup-root "$CGROUP_ROOT" --cni-conf-dir "$DIR/cni/net.d" --cni-bin-dir "$BIN,/usr/lib/cni" \
  > "$DIR/kubelet.log" 2>&1 &
echo $! > "$DIR/kubelet.pid"
"$BIN/kube-proxy" --kubeconfig "$PROXY_KUBECONFIG" --hostname-override "$NODE" \
  --cluster-cidr 10.244.0.0/16 --healthz-bind-address 127.0.0.1:10256 \
  --metrics-bind-address 127.0.0.1:10249 > "$DIR/kube-proxy.log" 2>&1 &
echo $! > "$DIR/kube-proxy.pid"
if [ "$MODE" = upstream ]; then
  # The serving certificate is not auto-approved upstream; kubeadm users approve it like this.
  wait_for "the kubelet's serving CSR" 120 sh -c "'$KUBECTL' get csr -o jsonpath='{range .items[?(@.spec.signerName==\"kubernetes.io/kubelet-serving\")]}{.metadata.name}{\"\\n\"}{end}' | grep -q ."
  for csr in $(kubectl get csr -o jsonpath='{range .items[?(@.spec.signerName=="kubernetes.io/kubelet-serving")]}{.metadata.name}{"\n"}{end}'); do
    kubectl certificate approve "$csr" >/dev/null
  done
fi
wait_for "node $NODE Ready" 120 sh -c "'$KUBECTL' get node '$NODE' -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"

# 6. The demo: a pod serving HTTP and a NodePort Service in front of it.
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: demo, labels: {app: demo}}
spec:
  containers:
  - name: web
    image: $IMAGE
    args: ["serve", "--http-port", "8080"]
    ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: demo}
spec:
  type: NodePort
  selector: {app: demo}
  ports: [{name: http, port: 80, targetPort: http}]
EOF
kubectl wait --for=condition=Ready pod/demo --timeout=120s >/dev/null
CLUSTER_IP=$(kubectl get svc demo -o jsonpath='{.spec.clusterIP}')
NODE_PORT=$(kubectl get svc demo -o jsonpath='{.spec.ports[0].nodePort}')
wait_for "the demo Service at $CLUSTER_IP" 30 curl -sf --max-time 2 "http://$CLUSTER_IP/hostname"
ANSWER=$(curl -s --max-time 2 "http://$CLUSTER_IP/hostname")
DNS_LINE=""
TRY_DNS=""
if [ "$MODE" = upstream ]; then
  TRY_DNS=$'  kubectl exec demo -- nslookup demo.default.svc.cluster.local\n  kubectl exec demo -- wget -qO- http://demo.default/hostname\n'
  # Cluster DNS from inside the pod: CoreDNS (running on this node) answers for the Service.
  wait_for "CoreDNS" 120 sh -c "'$KUBECTL' -n kube-system get deploy coredns -o jsonpath='{.status.availableReplicas}' | grep -qx 1"
  wait_for "demo.default.svc.cluster.local in cluster DNS" 30 sh -c "'$KUBECTL' exec demo -- nslookup demo.default.svc.cluster.local | grep -q '$CLUSTER_IP'"
  DNS_LINE="
From the pod, cluster DNS (CoreDNS at 10.96.0.10) answers for the Service:
$(kubectl exec demo -- nslookup demo.default.svc.cluster.local 2>&1 | sed 's/^/  /')
"
fi

cat <<EOF

knode single-node cluster is up ($MODE control plane; node $NODE, $NODE_IP). The demo pod answered "$ANSWER" through
Service demo ($CLUSTER_IP:80, NodePort $NODE_PORT).
$DNS_LINE
Try next:
  export KUBECONFIG=$KUBECONFIG_ADMIN$([ "$MODE" = upstream ] && printf '\n  alias kubectl=%s    # v1.37.2, matching the control plane' "$KUBECTL")
  kubectl get nodes -o wide
  kubectl get pods -o wide
  kubectl get svc,endpointslices
  kubectl logs demo
${TRY_DNS}  curl http://$CLUSTER_IP/hostname
  curl http://$NODE_IP:$NODE_PORT/hostname
  kubectl delete pod demo

Logs: $DIR/{control-plane,kubelet,kube-proxy,containerd}.log   Stop: scripts/up.sh --down --dir $DIR
EOF
