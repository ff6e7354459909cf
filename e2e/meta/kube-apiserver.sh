#!/usr/bin/env bash
# The fixture of e2e/test_meta_kube: a real kube-apiserver over a real etcd,
# on loopback ports, with the chart's Dataset CRD (helm template of
# helm/granary) and nothing else of a cluster (no kubelet, scheduler or
# controllers): the Dataset controller and the cache gate of granary-meta
# run in the test process against it.
#
#   e2e/meta/kube-apiserver.sh start DIR   prints the settings as shell vars
#   e2e/meta/kube-apiserver.sh stop DIR
#
# DIR holds etcd's data, the logs, the pid files, the apiserver's
# certificate (DIR/ca.crt, for 127.0.0.1), a bearer token of the group
# system:masters (DIR/token, mode 0600) and DIR/env:
#   GRANARY_KUBE_API=https://127.0.0.1:PORT
#   GRANARY_KUBE_API_TOKEN=DIR/token
#   GRANARY_KUBE_API_CA=DIR/ca.crt
# Binaries: $GRANARY_KUBE_BIN (etcd, kube-apiserver, kubectl), else those
# scripts/kube-tools.sh builds; helm from $GRANARY_TOOLS/bin
# (scripts/setup.sh). Touches no other cluster: scripts/kube.sh's runs in
# a network namespace of its own.
set -euo pipefail

src=$(cd "$(dirname "$0")/../.." && pwd)
TOOLS=${GRANARY_TOOLS:-$HOME/.cache/granary-tools}
KUBE_BIN=${GRANARY_KUBE_BIN:-$("$src/scripts/kube.sh" env | sed -n 's/^GRANARY_KUBE_BIN=//p')}

die() { echo "kube-apiserver: $*" >&2; exit 1; }

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: $0 start|stop DIR"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

stop_pid() {
  local f=$1 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  # Nothing of theirs outlives the test (etcd's data goes next, the ports
  # are drawn anew at each start): no shutdown to wait for.
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$f"
}

case "$cmd" in
start)
  if [ -f "$dir/apiserver.pid" ] && kill -0 "$(cat "$dir/apiserver.pid")" 2>/dev/null; then
    cat "$dir/env"
    exit 0
  fi
  for b in etcd kube-apiserver kubectl; do
    [ -x "$KUBE_BIN/$b" ] || die "$b not found in $KUBE_BIN: run scripts/kube-tools.sh"
  done
  [ -x "$TOOLS/bin/helm" ] || die "helm not found in $TOOLS/bin: run scripts/setup.sh"
  rm -rf "$dir/etcd"
  (
    cd "$dir"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 \
      -subj "/CN=granary-e2e-apiserver" -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rand -hex 24 > token
    printf '%s,granary-e2e,granary-e2e,system:masters\n' "$(cat token)" > tokens.csv
  )
  etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)
  setsid "$KUBE_BIN/etcd" --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "default=http://127.0.0.1:$peer_port" \
    --log-level warn > "$dir/etcd.log" 2>&1 < /dev/null &
  echo $! > "$dir/etcd.pid"
  setsid "$KUBE_BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$dir/ca.crt" --tls-private-key-file "$dir/ca.key" \
    --token-auth-file "$dir/tokens.csv" --authorization-mode RBAC \
    --service-account-key-file "$dir/sa.key" --service-account-signing-key-file "$dir/sa.key" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-cluster-ip-range 10.96.0.0/24 > "$dir/apiserver.log" 2>&1 < /dev/null &
  echo $! > "$dir/apiserver.pid"
  url=https://127.0.0.1:$api_port
  cat > "$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster: {server: "$url", certificate-authority: "$dir/ca.crt"}
users:
- name: e2e
  user: {tokenFile: "$dir/token"}
contexts:
- name: e2e
  context: {cluster: e2e, user: e2e}
current-context: e2e
EOF
  kctl() { "$KUBE_BIN/kubectl" --kubeconfig "$dir/kubeconfig" "$@"; }
  ready=
  for _ in $(seq 1 600); do
    if kctl get --raw /readyz >/dev/null 2>&1; then ready=1; break; fi
    kill -0 "$(cat "$dir/apiserver.pid")" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$ready" ]; then
    tail -20 "$dir/etcd.log" "$dir/apiserver.log" >&2
    "$0" stop "$dir"
    die "kube-apiserver did not become ready within 60s (logs: $dir)"
  fi
  "$TOOLS/bin/helm" template granary "$src/helm/granary" \
    --show-only templates/crd-dataset.yaml | kctl apply -f - >/dev/null
  kctl wait --for condition=established --timeout=60s crd/datasets.granary.io >/dev/null
  {
    echo "GRANARY_KUBE_API=$url"
    echo "GRANARY_KUBE_API_TOKEN=$dir/token"
    echo "GRANARY_KUBE_API_CA=$dir/ca.crt"
  } > "$dir/env"
  cat "$dir/env"
  ;;
stop)
  stop_pid "$dir/apiserver.pid"
  stop_pid "$dir/etcd.pid"
  rm -rf "$dir/etcd" "$dir/env"
  ;;
*) die "unknown command '$cmd'" ;;
esac
