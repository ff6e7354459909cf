#!/usr/bin/env bash
# Builds the pinned parts of the local Kubernetes test cluster into the tools
# cache ($GRANARY_TOOLS, default ~/.cache/granary-tools), from the Go module
# proxy and Debian's packages only. Each part is skipped when its binary is
# already there, so a second run takes seconds.
#
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
#   kube-proxy, kubectl   k8s.io/kubernetes (one go build for all six)
#   etcd                  go.etcd.io/etcd/server/v3 (a one-line main module)
#   csi-provisioner       github.com/kubernetes-csi/external-provisioner/v6
#   crictl                sigs.k8s.io/cri-tools
#   coredns               github.com/coredns/coredns
#   CNI plugins           github.com/containernetworking/plugins
#   training-operator     github.com/kubeflow/training-operator (TFJob), and its CRDs
#   containerd, runc, buildah, debootstrap, umoci, skopeo: Debian packages
set -euo pipefail

TOOLS=${GRANARY_TOOLS:-$HOME/.cache/granary-tools}
KUBE_VERSION=v1.34.4
KUBE_STAGING_VERSION=v0.34.4
ETCD_VERSION=v3.6.16
PROVISIONER_VERSION=v6.4.0
CRICTL_VERSION=v1.34.0
CNI_VERSION=v1.9.1
COREDNS_VERSION=v1.12.4
TRAINING_OPERATOR_VERSION=v1.8.1
KUBE_BIN=$TOOLS/kube-$KUBE_VERSION/bin

log() { printf 'kube-tools: %s\n' "$*" >&2; }

export GOFLAGS=-buildvcs=false CGO_ENABLED=0

debian_packages=(containerd runc iptables iproute2 conntrack ethtool socat
                 buildah debootstrap umoci skopeo busybox-static)

install_debian() {
  local missing=()
  for p in "${debian_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  log "installing debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# module_dir MODULE@VERSION: downloads a module and prints its (read-only)
# folder. A download the proxy fails (it has answered nothing at all once
# in a while) is tried twice more; then the proxy's error is logged and
# the caller stops.
module_dir() {
  local out dir try
  for try in 1 2 3; do
    out=$(go mod download -json "$1" 2>&1) || true
    dir=$(printf '%s\n' "$out" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
    if [ -n "$dir" ] && [ -d "$dir" ]; then
      printf '%s\n' "$dir"
      return 0
    fi
    [ "$try" = 3 ] || sleep $((try * 5))
  done
  log "go mod download $1 failed three times: $(printf '%s\n' "$out" | sed -n 's/^\t"Error": //p' | head -1)"
  return 1
}

# The module zip of k8s.io/kubernetes leaves out staging/src/k8s.io/* (nested
# modules); each replace target is fetched as k8s.io/NAME@v0.x and put back.
build_kubernetes() {
  local want=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
  local b missing=0
  for b in "${want[@]}"; do [ -x "$KUBE_BIN/$b" ] || missing=1; done
  [ $missing = 0 ] && { log "kubernetes $KUBE_VERSION present"; return; }
  log "building kubernetes $KUBE_VERSION from the Go module proxy (about 5 minutes)"
  local src tmp
  src=$(module_dir "k8s.io/kubernetes@$KUBE_VERSION")
  tmp=$(mktemp -d)
  cp -r "$src" "$tmp/k8s" && chmod -R u+w "$tmp/k8s"
  local name staged
  for name in $(sed -n 's|^\tk8s.io/\([a-z-]*\) => ./staging/src/k8s.io/.*|\1|p' "$tmp/k8s/go.mod"); do
    local dst="$tmp/k8s/staging/src/k8s.io/$name"
    mkdir -p "$(dirname "$dst")"
    case $name in
      sample-cli-plugin|sample-controller) # not served, not needed by any binary built here
        mkdir -p "$dst"; printf 'module k8s.io/%s\n\ngo 1.24\n' "$name" > "$dst/go.mod" ;;
      *)
        staged=$(module_dir "k8s.io/$name@$KUBE_STAGING_VERSION")
        cp -r "$staged" "$dst" && chmod -R u+w "$dst" ;;
    esac
  done
  mkdir -p "$KUBE_BIN"
  (cd "$tmp/k8s" && rm -rf vendor && GOWORK=off go build -mod=mod -trimpath -ldflags="-s -w \
      -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
      -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION" \
      -o "$KUBE_BIN/" $(printf './cmd/%s ' "${want[@]}"))
  rm -rf "$tmp"
}

# etcd's go.mod has replace directives, so `go install` refuses it: a tiny
# main module that calls etcdmain.Main builds it instead.
build_etcd() {
  [ -x "$KUBE_BIN/etcd" ] && { log "etcd $ETCD_VERSION present"; return; }
  log "building etcd $ETCD_VERSION"
  local tmp
  tmp=$(mktemp -d)
  cat > "$tmp/main.go" <<'EOF'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  (cd "$tmp" && go mod init granary.local/etcd >/dev/null 2>&1 &&
     go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1 &&
     go mod tidy >/dev/null 2>&1 &&
     go build -trimpath -ldflags="-s -w" -o "$KUBE_BIN/etcd" .)
  rm -rf "$tmp"
}

# external-provisioner also carries replace directives: build inside a
# writable copy of the module.
build_module_cmd() { # NAME MODULE VERSION PACKAGE_DIR
  local name=$1 module=$2 version=$3 pkg=$4
  [ -x "$KUBE_BIN/$name" ] && { log "$name $version present"; return; }
  log "building $name $version"
  local src tmp
  src=$(module_dir "$module@$version")
  tmp=$(mktemp -d)
  cp -r "$src" "$tmp/m" && chmod -R u+w "$tmp/m"
  (cd "$tmp/m" && GOWORK=off go build -trimpath -ldflags="-s -w" -o "$KUBE_BIN/$name" "$pkg")
  rm -rf "$tmp"
}

go_install() { # NAME MODULE_PACKAGE VERSION
  local name=$1 pkg=$2 version=$3
  [ -x "$KUBE_BIN/$name" ] && { log "$name $version present"; return; }
  log "building $name $version"
  GOBIN="$KUBE_BIN" go install -trimpath -ldflags="-s -w" "$pkg@$version"
}

build_cni() {
  local dir=$TOOLS/cni-$CNI_VERSION/bin p
  mkdir -p "$dir"
  for p in main/bridge ipam/host-local main/loopback meta/portmap; do
    [ -x "$dir/${p#*/}" ] && continue
    log "building CNI plugin ${p#*/} $CNI_VERSION"
    GOBIN="$dir" go install -trimpath -ldflags="-s -w" \
      "github.com/containernetworking/plugins/plugins/$p@$CNI_VERSION"
  done
}

install_debian
mkdir -p "$KUBE_BIN"
build_etcd
build_kubernetes
build_module_cmd csi-provisioner github.com/kubernetes-csi/external-provisioner/v6 "$PROVISIONER_VERSION" ./cmd/csi-provisioner
go_install crictl sigs.k8s.io/cri-tools/cmd/crictl "$CRICTL_VERSION"
build_module_cmd coredns github.com/coredns/coredns "$COREDNS_VERSION" .
build_cni
build_module_cmd training-operator github.com/kubeflow/training-operator "$TRAINING_OPERATOR_VERSION" ./cmd/training-operator.v1
# The TFJob CRD as the operator's release publishes it, from the same module.
if [ ! -f "$KUBE_BIN/../tfjobs-crd.yaml" ]; then
  operator_src=$(module_dir "github.com/kubeflow/training-operator@$TRAINING_OPERATOR_VERSION")
  cp "$operator_src/manifests/base/crds/kubeflow.org_tfjobs.yaml" \
    "$KUBE_BIN/../tfjobs-crd.yaml"
  chmod u+w "$KUBE_BIN/../tfjobs-crd.yaml"
fi
log "cluster tools in $KUBE_BIN and $TOOLS/cni-$CNI_VERSION/bin"
