#!/usr/bin/env bash
# The README's main command: brings up a knode cluster on this machine — a control plane and one
# or more nodes, each with a private containerd, the kubelet (knode-bridge pod networking) and
# kube-proxy — then runs a demo pod and Service and prints the kubectl lines to try next.
#
#   scripts/up.sh                 # set up the host, build, start everything, run the demo
#   scripts/up.sh --down          # stop everything and remove the cluster's state
#   --control-plane knode         # (default) knode-control-plane: one Rust process, seconds to start
#   --control-plane upstream      # the real kube-apiserver, controller-manager, scheduler and etcd
#                                 # (v1.37.2, built from Go modules and cached: the first run builds
#                                 # for tens of minutes); nodes join by bootstrap token as with
#                                 # `kubeadm join`, CoreDNS serves cluster DNS (kube-dns at
#                                 # 10.96.0.10) and kubectl is the built v1.37.2
#   --nodes N                     # N nodes (default 1: the node runs in this network namespace).
#                                 # N >= 2: each node is a network namespace on a bridge this script
#                                 # makes (10.210.0.0/24; the control plane, registry and this host
#                                 # on .1, node i on .10+i), pods routed between nodes by
#                                 # knode-hostgw (also run here, so this host reaches pod IPs)
#   options (both modes): --dir DIR (state, default /var/lib/knode-up; --down reads the mode and
#            node count from it), --no-setup (skip apt/host setup), --no-build, --node-ip IP (one
#            node only), --registry-port N (default 5000), --api-port N (default 6443)
#   environment: CARGO_TARGET_DIR (cargo's, honoured: binaries are taken from $CARGO_TARGET_DIR/debug),
#            KNODE_BIN_DIR (take the binaries from this directory instead)
#
# Everything the cluster creates lives under DIR (containerd roots and sockets, control plane data,
# kubelet roots, pod logs, CNI state) plus: with one node, in the network namespace it runs in, the
# knode0 bridge and the nftables tables `ip kube-proxy` and `ip knode-cni`; with N nodes, the
# nodes' namespaces `kn-<tag>-<i>`, the bridge `knbr-<tag>` and knode-hostgw's routes here.
# `--down` removes all of it.
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
NODES=""
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
    --nodes) NODES=$2; shift 2 ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "up.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
# Built binaries: where cargo put them (CARGO_TARGET_DIR honoured, relative to the repo as cargo
# takes it from here), unless KNODE_BIN_DIR names another directory.
TARGET_DIR=${CARGO_TARGET_DIR:-target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
BIN=${KNODE_BIN_DIR:-$TARGET_DIR/debug}
CGROUP_ROOT=${KNODE_CGROUP_ROOT:-/knode-up}
HOST=$(tr -d '\n' < /proc/sys/kernel/hostname | tr 'A-Z' 'a-z')
KUBECONFIG_ADMIN=$DIR/admin.conf
if [ -z "$MODE" ]; then MODE=$(cat "$DIR/mode" 2>/dev/null || echo knode); fi
if [ -z "$NODES" ]; then NODES=$(cat "$DIR/nodes" 2>/dev/null || echo 1); fi
case "$MODE" in knode|upstream) ;; *) echo "up.sh: --control-plane must be knode or upstream" >&2; exit 2 ;; esac
case "$NODES" in ''|*[!0-9]*) echo "up.sh: --nodes must be a number from 1 to 50" >&2; exit 2 ;; esac
if [ "$NODES" -lt 1 ] || [ "$NODES" -gt 50 ]; then echo "up.sh: --nodes must be a number from 1 to 50" >&2; exit 2; fi
if [ "$NODES" -gt 1 ] && [ -n "$NODE_IP" ]; then echo "up.sh: --node-ip is for one node; with --nodes N the nodes are 10.210.0.10+i" >&2; exit 2; fi
# Names of this cluster's namespaces and bridge (unique per DIR, short enough for link names).
TAG=$(printf '%s' "$DIR" | md5sum | cut -c1-6)
BRIDGE=knbr-$TAG
CP_IP=10.210.0.1

log() { echo "up.sh: $*" >&2; }

# Per node i (0-based): its state dir, network namespace, name and containerd namespace.
node_dir() { if [ "$NODES" = 1 ]; then echo "$DIR"; else echo "$DIR/node$1"; fi; }
node_ns() { echo "kn-$TAG-$1"; }
node_name() { if [ "$NODES" = 1 ]; then echo "$HOST"; else echo "$HOST-$(($1 + 1))"; fi; }
node_ctrns() { if [ "$NODES" = 1 ]; then echo k8s.io; else echo "knode-n$1"; fi; }
# Runs a command in node i's network namespace (nsenter keeps this mount namespace, so the
# kubelet's sandbox bind mounts stay visible to containerd).
in_node() { local i=$1; shift; if [ "$NODES" = 1 ]; then "$@"; else nsenter --net="/run/netns/$(node_ns "$i")" -- "$@"; fi; }
# Starts a daemon in node i's namespace, in the background: its PID (the program's own, exec'd
# through the subshell and nsenter) into PIDFILE, its output into LOG.
spawn_in_node() { # i pidfile log program args...
  local i=$1 pidfile=$2 logfile=$3; shift 3
  if [ "$NODES" = 1 ]; then
    ( exec "$@" ) > "$logfile" 2>&1 &
  else
    ( exec nsenter --net="/run/netns/$(node_ns "$i")" -- "$@" ) > "$logfile" 2>&1 &
  fi
  echo $! > "$pidfile"
}

stop_pid() { # pidfile [seconds to wait before SIGKILL]
  local f=$1
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
  for i in $(seq 0 $((NODES - 1))); do
    local nd sock ctrns; nd=$(node_dir "$i"); sock=$nd/containerd/c.sock; ctrns=$(node_ctrns "$i")
    stop_pid "$nd/knode-hostgw.pid"
    stop_pid "$nd/kube-proxy.pid"
    stop_pid "$nd/kubelet.pid"
    if [ -S "$sock" ]; then
      for id in $(ctr --address "$sock" -n "$ctrns" containers ls -q 2>/dev/null); do
        ctr --address "$sock" -n "$ctrns" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
      done
      sleep 0.5
      for id in $(ctr --address "$sock" -n "$ctrns" containers ls -q 2>/dev/null); do
        ctr --address "$sock" -n "$ctrns" tasks rm -f "$id" >/dev/null 2>&1 || true
        ctr --address "$sock" -n "$ctrns" containers rm "$id" >/dev/null 2>&1 || true
      done
    fi
    stop_pid "$nd/containerd.pid"
    if [ "$NODES" -gt 1 ]; then
      # Anything still running in the node's namespace would keep it (and its veth) alive.
      ip netns pids "$(node_ns "$i")" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
      ip netns delete "$(node_ns "$i")" 2>/dev/null || true
    fi
  done
  stop_pid "$DIR/knode-hostgw.pid"
  # The upstream plane stops its own processes (each up to 10 s) and removes its state.
  stop_pid "$DIR/control-plane.pid" 60
  stop_pid "$DIR/registry.pid"
  if [ "$NODES" = 1 ]; then
    [ -x "$BIN/kube-proxy" ] && "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
    nft delete table ip knode-cni 2>/dev/null || true
    ip link delete knode0 2>/dev/null || true
  else
    [ -x "$BIN/knode-hostgw" ] && "$BIN/knode-hostgw" --cleanup >/dev/null 2>&1 || true
    ip link delete "$BRIDGE" 2>/dev/null || true
  fi
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
for b in knode-control-plane kubelet kube-proxy knode-bridge knode-hostgw knode-push-test-images knode-upstream-plane; do
  [ -x "$BIN/$b" ] || { echo "up.sh: $BIN/$b is missing (run without --no-build)" >&2; exit 1; }
done
if [ -f "$(node_dir 0)/kubelet.pid" ] && kill -0 "$(cat "$(node_dir 0)/kubelet.pid")" 2>/dev/null; then
  echo "up.sh: a cluster is already running in $DIR (scripts/up.sh --down first)" >&2; exit 1
fi
mkdir -p "$DIR"/{registry,cp}
echo "$MODE" > "$DIR/mode"
echo "$NODES" > "$DIR/nodes"
sysctl -qw net.ipv4.ip_forward=1 || true
ip link set lo up 2>/dev/null || true
if [ "$NODES" -gt 1 ]; then
  # The nodes' L2 segment; this host (control plane, registry) is its .1.
  ip link add "$BRIDGE" type bridge
  ip addr add "$CP_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  for i in $(seq 0 $((NODES - 1))); do
    ns=$(node_ns "$i")
    ip netns add "$ns"
    ip link add "$ns" type veth peer name eth0 netns "$ns"
    ip link set "$ns" master "$BRIDGE" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "10.210.0.$((10 + i))/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "$CP_IP"
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
  done
  API_IP=$CP_IP
  REG_HOST=$CP_IP:$REG_PORT
else
  if [ -z "$NODE_IP" ]; then
    NODE_IP=$(ip -4 route get 192.0.2.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -1)
    NODE_IP=${NODE_IP:-127.0.0.1}
  fi
  API_IP=127.0.0.1
  REG_HOST=127.0.0.1:$REG_PORT
fi
node_ip() { if [ "$NODES" = 1 ]; then echo "$NODE_IP"; else echo "10.210.0.$((10 + $1))"; fi; }

wait_for() { # what, seconds, command...
  local what=$1 secs=$2; shift 2
  for _ in $(seq $((secs * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "up.sh: timed out waiting for $what; logs are in $DIR (*.log, node*/*.log)" >&2; exit 1
}

# 1. A local registry with the demo image (the machine may have no internet access).
cat > "$DIR/registry/config.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $DIR/registry/data}, delete: {enabled: true}}
http: {addr: $REG_HOST}
EOF
docker-registry serve "$DIR/registry/config.yml" > "$DIR/registry.log" 2>&1 &
echo $! > "$DIR/registry.pid"
wait_for "the registry" 20 curl -sf "http://$REG_HOST/v2/"
# sed, not head: head exits after one line and the pusher's second line would hit a closed pipe.
IMAGE=$("$BIN/knode-push-test-images" "$REG_HOST" | sed -n 1p)
log "pushed $IMAGE"

# 2. The control plane and an admin kubeconfig.
if [ "$MODE" = knode ]; then
  ADV=()
  [ "$NODES" -gt 1 ] && ADV=(--advertise-address "$CP_IP")
  "$BIN/knode-control-plane" --listen "$API_IP:$API_PORT" "${ADV[@]}" --data-dir "$DIR/cp" \
    --write-kubeconfig "$KUBECONFIG_ADMIN" > "$DIR/control-plane.log" 2>&1 &
  echo $! > "$DIR/control-plane.pid"
  wait_for "the control plane" 30 test -s "$KUBECONFIG_ADMIN"
  CA_FILE=$DIR/cp/pki/ca.crt
  KUBECTL=$(command -v kubectl)
else
  # As `kubeadm init`: PKI, etcd, the apiserver advertising the node IP (one node) or the
  # segment's address, the controller-manager (CSR signing and auto-approval, nodeipam) and the
  # scheduler; a bootstrap token for the nodes. --registry: CoreDNS's image is pushed there and
  # the addon deployed, as kubeadm does.
  ADVERTISE=$([ "$NODES" = 1 ] && echo "$NODE_IP" || echo "$CP_IP")
  "$BIN/knode-upstream-plane" --dir "$DIR/cp" --advertise-address "$ADVERTISE" --port "$API_PORT" \
    --registry "$REG_HOST" > "$DIR/control-plane.log" 2>&1 &
  echo $! > "$DIR/control-plane.pid"
  wait_for "the upstream control plane" 180 test -s "$DIR/cp/ready"
  cp "$DIR/cp/admin.conf" "$KUBECONFIG_ADMIN"
  CA_FILE=$DIR/cp/ca.crt
  KUBECTL=$DIR/cp/kubectl
fi
kubectl() { "$KUBECTL" "$@"; }
export KUBECONFIG=$KUBECONFIG_ADMIN

# Upstream mode has cluster DNS: pods get CoreDNS's address and the cluster domain's search path
# (knode's light plane has no DNS server yet). With systemd-resolved, the host's real upstream
# servers, as kubeadm configures it: 127.0.0.53 inside CoreDNS's pod would be CoreDNS itself.
DNS_CONFIG=""
if [ "$MODE" = upstream ]; then
  DNS_CONFIG="clusterDNS: [10.96.0.10]"
  if grep -q '^nameserver 127\.0\.0\.53' /etc/resolv.conf 2>/dev/null && [ -f /run/systemd/resolve/resolv.conf ]; then
    DNS_CONFIG="$DNS_CONFIG
resolvConf: /run/systemd/resolve/resolv.conf"
  fi
fi

# 3. The nodes: containerd, the kubelet, kube-proxy (and knode-hostgw with several nodes).
start_node() {
  local i=$1 nd name ip sock ctrns creds proxy_conf
  nd=$(node_dir "$i"); name=$(node_name "$i"); ip=$(node_ip "$i"); ctrns=$(node_ctrns "$i")
  sock=$nd/containerd/c.sock
  mkdir -p "$nd"/{containerd,kubelet,logs,cni/net.d,cni/ipam,manifests}
  # A private containerd (its own root and socket; the CRI plugin is not used by knode).
  cat > "$nd/containerd/config.toml" <<EOF
version = 2
root = "$nd/containerd/root"
state = "$nd/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[metrics]
  address = ""
EOF
  # In the node's namespace: a hostNetwork pod's container shares its shim's network namespace,
  # which must be the node's (its address, its hostPorts), as on a machine of its own.
  spawn_in_node "$i" "$nd/containerd.pid" "$nd/containerd.log" containerd --config "$nd/containerd/config.toml"
  wait_for "containerd of $name" 30 ctr --address "$sock" version
  # Credentials: knode's plane issues them; upstream nodes bootstrap with the token.
  if [ "$MODE" = knode ]; then
    "$BIN/knode-control-plane" issue-kubeconfig --data-dir "$DIR/cp" --user "system:node:$name" \
      --group system:nodes --server "https://$API_IP:$API_PORT" --out "$nd/node.conf" >/dev/null
    creds=(--kubeconfig "$nd/node.conf")
    proxy_conf=$nd/node.conf
  else
    creds=(--bootstrap-kubeconfig "$DIR/cp/bootstrap-kubelet.conf" --kubeconfig "$nd/kubelet/kubelet.conf")
    proxy_conf=$DIR/cp/kube-proxy.conf
  fi
  # Pod networking: knode-bridge on the node's pod CIDR. One node: written here (the first node
  # gets 10.244.0.0/24). Several: the kubelet writes it from the podCIDR the plane allocates, not
  # masquerading traffic to the other nodes' pods (--cluster-cidr).
  if [ "$NODES" = 1 ]; then
    cat > "$nd/cni/net.d/10-knode.conflist" <<EOF
{"cniVersion":"1.0.0","name":"knode","plugins":[{"type":"knode-bridge","bridge":"knode0",
 "isDefaultGateway":true,"ipMasq":true,"hairpinMode":true,
 "ipam":{"type":"host-local","ranges":[[{"subnet":"10.244.0.0/24"}]],"dataDir":"$nd/cni/ipam"}}]}
EOF
  fi
  cat > "$nd/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
podLogsDir: $nd/logs
staticPodPath: $nd/manifests
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
  spawn_in_node "$i" "$nd/kubelet.pid" "$nd/kubelet.log" "$BIN/kubelet" "${creds[@]}" --config "$nd/kubelet-config.yaml" \
    --hostname-override "$name" --node-ip "$ip" --root-dir "$nd/kubelet" \
    --container-runtime-endpoint "unix://$sock" --containerd-namespace "$ctrns" \
    --insecure-registry "$REG_HOST" --cgroup-root "$CGROUP_ROOT$([ "$NODES" = 1 ] || echo "/n$i")" \
    --cni-conf-dir "$nd/cni/net.d" --cni-bin-dir "$BIN,/usr/lib/cni" --cluster-cidr 10.244.0.0/16
  spawn_in_node "$i" "$nd/kube-proxy.pid" "$nd/kube-proxy.log" "$BIN/kube-proxy" --kubeconfig "$proxy_conf" \
    --hostname-override "$name" --cluster-cidr 10.244.0.0/16 --healthz-bind-address 127.0.0.1:10256 \
    --metrics-bind-address 127.0.0.1:10249
  if [ "$NODES" -gt 1 ]; then
    # Routes to the other nodes' pods. It lists every Node: upstream's Node authorizer refuses a
    # kubelet that, so it runs as kube-proxy (system:node-proxier) there.
    spawn_in_node "$i" "$nd/knode-hostgw.pid" "$nd/knode-hostgw.log" "$BIN/knode-hostgw" \
      --kubeconfig "$proxy_conf" --hostname-override "$name"
  fi
}
for i in $(seq 0 $((NODES - 1))); do start_node "$i"; done
if [ "$NODES" -gt 1 ]; then
  # This host routes to every node's pods too (kubectl port-forward aside, curl a pod IP).
  "$BIN/knode-hostgw" --kubeconfig "$KUBECONFIG_ADMIN" --hostname-override "$HOST-control-plane" \
    > "$DIR/knode-hostgw.log" 2>&1 &
  echo $! > "$DIR/knode-hostgw.pid"
fi
serving_csrs() {
  kubectl get csr -o jsonpath='{range .items[?(@.spec.signerName=="kubernetes.io/kubelet-serving")]}{.metadata.name} {.status.certificate}{"\n"}{end}'
}
if [ "$MODE" = upstream ]; then
  # The serving certificates are not auto-approved upstream; kubeadm users approve them like this.
  wait_for "the kubelets' serving CSRs" 120 sh -c "[ \$('$KUBECTL' get csr -o name | grep -c .) -ge $((NODES * 2)) ]"
  for csr in $(serving_csrs | awk 'NF == 1 {print $1}'); do kubectl certificate approve "$csr" >/dev/null; done
fi
for i in $(seq 0 $((NODES - 1))); do
  name=$(node_name "$i")
  wait_for "node $name Ready" 120 sh -c "'$KUBECTL' get node '$name' -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
done
READY_AT=$(date +%s)

# 4. The demo: a pod serving HTTP and a NodePort Service in front of it.
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
POD_IP=$(kubectl get pod demo -o jsonpath='{.status.podIP}')
DEMO_NODE=$(kubectl get pod demo -o jsonpath='{.spec.nodeName}')
# From the first node (with several nodes, the demo pod may run on another one).
wait_for "the demo Service at $CLUSTER_IP" 30 in_node 0 curl -sf --max-time 2 "http://$CLUSTER_IP/hostname"
ANSWER=$(in_node 0 curl -s --max-time 2 "http://$CLUSTER_IP/hostname")
DNS_LINE=""
TRY_DNS=""
if [ "$MODE" = upstream ]; then
  TRY_DNS=$'  kubectl exec demo -- nslookup demo.default.svc.cluster.local\n  kubectl exec demo -- wget -qO- http://demo.default/hostname\n'
  # Cluster DNS from inside the pod: CoreDNS (running on a knode node) answers for the Service.
  wait_for "CoreDNS" 120 sh -c "'$KUBECTL' -n kube-system get deploy coredns -o jsonpath='{.status.availableReplicas}' | grep -qx 1"
  wait_for "demo.default.svc.cluster.local in cluster DNS" 30 sh -c "'$KUBECTL' exec demo -- nslookup demo.default.svc.cluster.local | grep -q '$CLUSTER_IP'"
  DNS_LINE="
From the pod, cluster DNS (CoreDNS at 10.96.0.10) answers for the Service:
$(kubectl exec demo -- nslookup demo.default.svc.cluster.local 2>&1 | sed 's/^/  /')
"
fi
if [ "$NODES" = 1 ]; then
  SUMMARY="knode single-node cluster is up ($MODE control plane; node $(node_name 0), $NODE_IP)."
  TRY_CURL="  curl http://$CLUSTER_IP/hostname
  curl http://$NODE_IP:$NODE_PORT/hostname"
else
  SUMMARY="knode cluster of $NODES nodes is up ($MODE control plane; nodes $(node_name 0) … $(node_name $((NODES - 1))) on 10.210.0.10…, Ready $((READY_AT - $(stat -c %Y "$DIR/mode")))s after start). The demo pod runs on $DEMO_NODE."
  TRY_CURL="  nsenter --net=/run/netns/$(node_ns 0) curl http://$CLUSTER_IP/hostname    # a ClusterIP, from inside node $(node_name 0)
  curl http://$(node_ip 0):$NODE_PORT/hostname      # the NodePort of any node, from this host
  curl http://$POD_IP:8080/hostname          # the pod itself: this host routes to every node's pods"
fi

cat <<EOF

$SUMMARY The demo pod answered "$ANSWER" through
Service demo ($CLUSTER_IP:80, NodePort $NODE_PORT).
$DNS_LINE
Try next:
  export KUBECONFIG=$KUBECONFIG_ADMIN$([ "$MODE" = upstream ] && printf '\n  alias kubectl=%s    # v1.37.2, matching the control plane' "$KUBECTL")
  kubectl get nodes -o wide
  kubectl get pods -o wide
  kubectl get svc,endpointslices
  kubectl logs demo
${TRY_DNS}$TRY_CURL
  kubectl delete pod demo

Logs: $DIR/{control-plane,registry}.log and $([ "$NODES" = 1 ] && echo "$DIR/{kubelet,kube-proxy,containerd}.log" || echo "$DIR/node<i>/{kubelet,kube-proxy,knode-hostgw,containerd}.log")   Stop: scripts/up.sh --down --dir $DIR
EOF
