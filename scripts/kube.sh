#!/usr/bin/env bash
# A single-node Kubernetes cluster on this machine, for the cluster tests and
# for trying Granary as a user would. Everything runs in a network namespace
# of its own (granary-kube): containerd, etcd, the control plane, the kubelet,
# kube-proxy and every pod; iptables rules and interfaces live and die with
# that namespace. The binaries come from scripts/kube-tools.sh (pinned
# versions built from the Go module proxy and Debian's packages).
#
#   scripts/kube.sh up          start the cluster (a second up reuses it), wait for a Ready node
#   scripts/kube.sh down        stop it: no process, mount, cgroup, namespace or rule is left
#   scripts/kube.sh status      exit 0 when the cluster answers
#   scripts/kube.sh kubectl ... kubectl against the cluster, inside its namespace
#   scripts/kube.sh exec CMD... any command inside the cluster's network namespace
#   scripts/kube.sh import TAR  load an image archive (docker-archive) into containerd
#   scripts/kube.sh env         KUBECONFIG and friends, as shell variables
#
# Addresses: the node is 172.31.0.2 (a veth whose peer, 172.31.0.1, is in
# the host namespace: the host reaches the apiserver at
# https://172.31.0.2:6443, and pods reach servers the host runs on
# 172.31.0.1). Pods get 10.244.0.0/24, Services 10.96.0.0/16, cluster DNS
# (CoreDNS) is 10.96.0.10.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=${GRANARY_TOOLS:-$HOME/.cache/granary-tools}
KUBE_VERSION=v1.34.4
CNI_VERSION=v1.9.1
KUBE_BIN=$TOOLS/kube-$KUBE_VERSION/bin
CNI_BIN=$TOOLS/cni-$CNI_VERSION/bin
STATE=${GRANARY_KUBE_DIR:-/var/lib/granary-kube}
RUN=/run/granary-kube
NETNS=granary-kube
NODE_NAME=granary-node
NODE_IP=172.31.0.2
HOST_IP=172.31.0.1
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
DNS_IP=10.96.0.10
CGROUP_ROOT=granary-kube
export KUBECONFIG=$STATE/pki/admin.kubeconfig
export CONTAINERD_SOCK=$RUN/containerd.sock

log() { printf 'kube: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

in_ns() { nsenter --net="/run/netns/$NETNS" -- "$@"; }
kctl() { in_ns "$KUBE_BIN/kubectl" --kubeconfig "$KUBECONFIG" "$@"; }

# running PID: the process runs. A zombie does not: a daemon whose starter
# exited is reparented, and a subreaper may reap it late or never, so kill -0
# would take an ended kubelet for a live one and never start another.
running() {
  local s
  s=$(sed -n 's/^.*) \(.\).*/\1/p' "/proc/$1/stat" 2>/dev/null)
  [ -n "$s" ] && [ "$s" != Z ]
}

# start NAME CMD...: a daemon inside the namespace, detached, logged, with a pid file.
start() {
  local name=$1; shift
  if [ -f "$RUN/$name.pid" ] && running "$(cat "$RUN/$name.pid")"; then
    return
  fi
  setsid nsenter --net="/run/netns/$NETNS" -- "$@" > "$STATE/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$name.pid"
}

# wait_for WHAT SECONDS CMD...: polls CMD every 0.2 s.
wait_for() {
  local what=$1 secs=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || { log "timed out waiting for $what"; return 1; }
    sleep 0.2
  done
}

check_tools() {
  local b
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl crictl coredns; do
    [ -x "$KUBE_BIN/$b" ] || die "$KUBE_BIN/$b missing: run scripts/kube-tools.sh"
  done
  for b in bridge host-local loopback portmap; do
    [ -x "$CNI_BIN/$b" ] || die "$CNI_BIN/$b missing: run scripts/kube-tools.sh"
  done
  command -v containerd >/dev/null || die "containerd missing: run scripts/kube-tools.sh"
}

network_up() {
  [ -e "/run/netns/$NETNS" ] && return
  ip netns add "$NETNS"
  ip link add gk-host type veth peer name gk-node
  ip link set gk-node netns "$NETNS"
  ip addr add "$HOST_IP/24" dev gk-host
  ip link set gk-host up
  in_ns ip link set lo up
  in_ns ip addr add "$NODE_IP/24" dev gk-node
  in_ns ip link set gk-node up
  in_ns ip route add default via "$HOST_IP"
  in_ns sysctl -qw net.ipv4.ip_forward=1
  in_ns sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
}

# A CA, the apiserver's serving certificate, one client certificate for the
# control plane and admin (system:masters), and the service-account keys.
pki() {
  local p=$STATE/pki
  [ -f "$p/admin.kubeconfig" ] && return
  mkdir -p "$p"
  (
    cd "$p"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
      -subj "/CN=granary-kube-ca" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
      -subj "/CN=kube-apiserver" 2>/dev/null
    printf 'subjectAltName=IP:%s,IP:10.96.0.1,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n' \
      "$NODE_IP" > apiserver.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -out apiserver.crt -days 3650 -extfile apiserver.ext 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr \
      -subj "/O=system:masters/CN=granary-kube-admin" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' > client.ext
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -out admin.crt -days 3650 -extfile client.ext 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    cat > admin.kubeconfig.tmp <<EOF
apiVersion: v1
kind: Config
clusters:
- name: granary-kube
  cluster:
    server: https://$NODE_IP:6443
    certificate-authority: $p/ca.crt
users:
- name: admin
  user:
    client-certificate: $p/admin.crt
    client-key: $p/admin.key
contexts:
- name: granary-kube
  context: {cluster: granary-kube, user: admin}
current-context: granary-kube
EOF
    mv admin.kubeconfig.tmp admin.kubeconfig
  )
}

# put FILE [DAEMON]: stdin into FILE, only when it differs (kube-proxy exits
# when its configuration file is written, even with the same content). A
# changed file stops DAEMON if it runs, so that `up` starts it again with
# the new configuration.
put() {
  local new pid
  new=$(cat)
  if [ ! -f "$1" ] || [ "$(cat "$1")" != "$new" ]; then
    printf '%s\n' "$new" > "$1.tmp" && mv "$1.tmp" "$1"
    if [ -n "${2:-}" ] && [ -f "$RUN/$2.pid" ]; then
      pid=$(cat "$RUN/$2.pid")
      if running "$pid"; then
        log "$(basename "$1") changed: restarting $2"
        kill "$pid"
        wait_for "$2 to stop" 30 eval "! running $pid"
      fi
    fi
  fi
}

configs() {
  mkdir -p "$STATE/cni" "$STATE/logs" "$STATE/kubelet" "$RUN"
  put "$STATE/containerd.toml" containerd <<EOF
version = 2
root = "$STATE/containerd"
state = "$RUN/containerd"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "granary.local/pause:1"
  # root here lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj below
  # its own, which pause containers would otherwise ask for.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$STATE/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
EOF
  put "$STATE/cni/10-granary.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "granary-kube",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  echo "nameserver $HOST_IP" | put "$STATE/resolv.conf"
  put "$STATE/kubelet.yaml" kubelet <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $STATE/pki/ca.crt}
authorization: {mode: Webhook}
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
resolvConf: $STATE/resolv.conf
failSwapOn: false
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
# Volume health: NodeGetVolumeStats' condition becomes a VolumeConditionAbnormal
# event on the pod (alpha gate), checked every 10-20 s instead of every minute.
featureGates: {CSIVolumeHealth: true}
volumeStatsAggPeriod: 10s
EOF
  put "$STATE/kube-proxy.yaml" kube-proxy <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $KUBECONFIG}
hostnameOverride: $NODE_NAME
clusterCIDR: 10.244.0.0/16
bindAddress: $NODE_IP
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# conntrack sysctls are global, not the namespace's: leave them alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {masqueradeAll: true}
EOF
}

# The kubelet directory must be a shared mount, so that the node plugin's
# FUSE and bind mounts (Bidirectional propagation) reach pods.
kubelet_dir() {
  local d=$STATE/kubelet
  if ! findmnt -n "$d" >/dev/null; then
    mount --bind "$d" "$d"
  fi
  mount --make-rshared "$d"
}

control_plane() {
  local p=$STATE/pki
  mkdir -p "$STATE/etcd"
  start etcd "$KUBE_BIN/etcd" --data-dir "$STATE/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --log-level warn \
    --quota-backend-bytes 2147483648
  start containerd containerd --config "$STATE/containerd.toml"
  start kube-apiserver "$KUBE_BIN/kube-apiserver" \
    --etcd-servers http://127.0.0.1:2379 \
    --advertise-address "$NODE_IP" --bind-address 0.0.0.0 --secure-port 6443 \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" \
    --client-ca-file "$p/ca.crt" \
    --kubelet-client-certificate "$p/admin.crt" --kubelet-client-key "$p/admin.key" \
    --kubelet-preferred-address-types InternalIP,Hostname \
    --service-account-key-file "$p/sa.pub" --service-account-signing-key-file "$p/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --authorization-mode Node,RBAC --allow-privileged=true \
    --enable-admission-plugins NodeRestriction
  wait_for "kube-apiserver" 60 kctl get --raw /readyz
  start kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
    --kubeconfig "$KUBECONFIG" --leader-elect=false --bind-address 127.0.0.1 \
    --service-account-private-key-file "$p/sa.key" --root-ca-file "$p/ca.crt" \
    --cluster-signing-cert-file "$p/ca.crt" --cluster-signing-key-file "$p/ca.key" \
    --use-service-account-credentials=true --service-cluster-ip-range "$SERVICE_CIDR"
  start kube-scheduler "$KUBE_BIN/kube-scheduler" \
    --kubeconfig "$KUBECONFIG" --leader-elect=false --bind-address 127.0.0.1
}

# The kubelet wants its cgroupRoot to exist in every hierarchy (cgroup v1);
# a new cpuset cgroup has no CPUs or memory nodes until given its parent's.
cgroup_root() {
  local h
  for h in /sys/fs/cgroup/*/; do
    [ -e "$h/cgroup.procs" ] || continue
    mkdir -p "$h$CGROUP_ROOT"
  done
  if [ -e "/sys/fs/cgroup/cpuset/$CGROUP_ROOT/cpuset.cpus" ]; then
    cat /sys/fs/cgroup/cpuset/cpuset.cpus > "/sys/fs/cgroup/cpuset/$CGROUP_ROOT/cpuset.cpus"
    cat /sys/fs/cgroup/cpuset/cpuset.mems > "/sys/fs/cgroup/cpuset/$CGROUP_ROOT/cpuset.mems"
  fi
}

node_up() {
  cgroup_root
  wait_for "containerd" 30 ctr_ version
  start kubelet "$KUBE_BIN/kubelet" --config "$STATE/kubelet.yaml" \
    --kubeconfig "$KUBECONFIG" --root-dir "$STATE/kubelet" --cert-dir "$STATE/pki/kubelet" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP"
  start kube-proxy "$KUBE_BIN/kube-proxy" --config "$STATE/kube-proxy.yaml"
}

ctr_() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# import TAR: a docker-archive into containerd's k8s.io namespace.
import_image() {
  ctr_ images import --all-platforms "$1" >/dev/null
}

# The images every cluster needs (pause, CoreDNS), built by scripts/kube-images.sh.
base_images() {
  "$here/scripts/kube-images.sh" base >/dev/null
  local img
  for img in pause coredns; do
    import_image "$TOOLS/images/$img.tar"
  done
}

dns() {
  kctl apply -f "$here/scripts/kube/coredns.yaml" >/dev/null
}

node_ready() {
  [ "$(kctl get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

dns_ready() {
  [ "$(kctl -n kube-system get deploy coredns -o 'jsonpath={.status.readyReplicas}')" = 1 ]
}

up() {
  [ "$(id -u)" -eq 0 ] || die "needs root (network namespace, mounts, cgroups)"
  check_tools
  local t0=$SECONDS
  mkdir -p "$STATE" "$RUN"
  network_up
  pki
  configs
  kubelet_dir
  control_plane
  node_up
  base_images
  wait_for "node $NODE_NAME Ready" 90 node_ready || { status_dump; exit 1; }
  dns
  wait_for "CoreDNS" 90 dns_ready || { status_dump; exit 1; }
  log "cluster up in $((SECONDS - t0)) s: node $NODE_NAME ($NODE_IP) Ready; KUBECONFIG=$KUBECONFIG"
}

status_dump() {
  kctl get nodes,pods -A -o wide >&2 || true
  local f
  for f in "$STATE"/logs/*.log; do
    log "--- tail of $f"
    tail -n 15 "$f" >&2
  done
}

# Every process of the cluster: the daemons (pid files), anything else in its
# network namespace (containerd shims), and what is left in its cgroups
# (container processes).
cluster_pids() {
  local f pid
  {
    for f in "$RUN"/*.pid; do
      [ -f "$f" ] && cat "$f"
    done
    [ -e "/run/netns/$NETNS" ] && ip netns pids "$NETNS" 2>/dev/null
    find /sys/fs/cgroup/*/"$CGROUP_ROOT" -name cgroup.procs -exec cat {} + 2>/dev/null
  } | sort -u | while read -r pid; do
    kill -0 "$pid" 2>/dev/null && echo "$pid"
  done
  true
}

down() {
  if [ -S "$CONTAINERD_SOCK" ] && [ -x "$KUBE_BIN/crictl" ]; then
    # Stop pods through the runtime first, so that their mounts and network
    # namespaces are taken down by the parts that made them.
    timeout 60 "$KUBE_BIN/crictl" --runtime-endpoint "unix://$CONTAINERD_SOCK" rmp -fa >/dev/null 2>&1 || true
  fi
  local pids round
  for round in TERM TERM KILL KILL; do
    pids=$(cluster_pids)
    [ -n "$pids" ] || break
    # shellcheck disable=SC2086
    kill -s "$round" $pids 2>/dev/null || true
    sleep 1
  done
  pids=$(cluster_pids)
  [ -z "$pids" ] || log "warning: processes left: $(echo $pids)"
  # Mounts under the state and run folders (pod volumes, overlay rootfs,
  # shm, the shared kubelet bind), deepest first; then the pods' namespaces.
  local m
  for round in 1 2 3; do
    for m in $(awk -v s="$STATE" -v r="$RUN" '$5 ~ "^"s"(/|$)" || $5 ~ "^"r"(/|$)" {print $5}' /proc/self/mountinfo | sort -r); do
      umount -l "$(printf '%b' "$m")" 2>/dev/null || true
    done
  done
  for m in $(find /run/netns -maxdepth 1 -name 'cni-*' 2>/dev/null); do
    umount "$m" 2>/dev/null && rm -f "$m"
  done
  # Cgroups the kubelet made, leaves first.
  local dir
  for dir in /sys/fs/cgroup/*/"$CGROUP_ROOT"; do
    [ -d "$dir" ] && find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  if [ -e "/run/netns/$NETNS" ]; then
    ip netns delete "$NETNS"
  fi
  ip link delete gk-host 2>/dev/null || true
  # Cluster state goes, the node's host paths too (the workers' caches and
  # the node plugin's records, which a new cluster's nodes do not have);
  # images (containerd's content) and certificates stay for the next up.
  rm -rf "$STATE/etcd" "$STATE/kubelet" "$STATE/logs" "$STATE/granary" "$RUN"
  log "cluster down"
}

case ${1:-} in
up) up ;;
down) down ;;
status) kctl get --raw /readyz >/dev/null ;;
kubectl) shift; kctl "$@" ;;
exec) shift; in_ns "$@" ;;
import) shift; import_image "$1" ;;
env)
  echo "KUBECONFIG=$KUBECONFIG"
  echo "GRANARY_KUBE_NETNS=$NETNS"
  echo "GRANARY_KUBE_NODE=$NODE_NAME"
  echo "GRANARY_KUBE_NODE_IP=$NODE_IP"
  echo "GRANARY_KUBE_HOST_IP=$HOST_IP"
  echo "GRANARY_KUBE_KUBELET_DIR=$STATE/kubelet"
  echo "GRANARY_KUBE_BIN=$KUBE_BIN"
  echo "GRANARY_KUBE_CONTAINERD_SOCK=$CONTAINERD_SOCK"
  ;;
*) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
