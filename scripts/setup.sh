#!/usr/bin/env bash
# Installs everything Granary needs to build and test, idempotently:
#   - Debian packages (compilers, -dev libraries, FUSE, test tools) with apt-get;
#   - third-party test tools built from source registries into a cache folder
#     ($GRANARY_TOOLS, default ~/.cache/granary-tools): the versitygw S3 server,
#     helm, csi-sanity, and the parts of the local Kubernetes test cluster
#     (scripts/kube-tools.sh: Kubernetes, etcd, csi-provisioner, CoreDNS, CNI).
# A second run finds everything in place and takes seconds.
set -euo pipefail

TOOLS=${GRANARY_TOOLS:-$HOME/.cache/granary-tools}
VERSITYGW_VERSION=v1.8.0
# Python test tools (e2e/meta/test_meta_python.py), from PyPI into $TOOLS/venv.
PY_TEST_PACKAGES=(grpcio==1.68.1 grpcio-tools==1.68.1 pytest==8.3.4)

log() { printf 'setup: %s\n' "$*" >&2; }

debian_packages=(
  build-essential cmake ninja-build pkg-config git curl ca-certificates
  ccache # scripts/compiler-cache.sh
  libcurl4-openssl-dev libssl-dev libexpat1-dev libyaml-dev
  libfuse3-dev fuse3 libmicrohttpd-dev check libsubunit-dev
  libprotobuf-c-dev protobuf-c-compiler libgrpc-dev libisal-dev
  libprotobuf-dev
  libxxhash-dev uthash-dev
  libjansson-dev
  clang libclang-rt-14-dev # libFuzzer: scripts/fuzz.sh
  valgrind fio python3 python3-venv
  iproute2 nftables # e2e/faults: the S3 server in a network namespace, shaped and lossy
  s3fs rclone python3-matplotlib
  openssl # e2e/test_cluster's case "tls" and unit/test_tls make their certificates with it
)

install_debian() {
  local missing=()
  for p in "${debian_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "debian packages present"
    return
  fi
  log "installing debian packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# go_tool NAME MODULE_PATH VERSION: builds MODULE_PATH@VERSION into $TOOLS/bin/NAME-VERSION.
go_tool() {
  local name=$1 module=$2 version=$3
  local target="$TOOLS/bin/$name-$version"
  if [ -x "$target" ]; then
    log "$name $version present"
  else
    log "building $name $version from the Go module proxy"
    local tmp
    tmp=$(mktemp -d)
    GOBIN="$tmp" GOFLAGS=-buildvcs=false go install "$module@$version"
    mkdir -p "$TOOLS/bin"
    mv "$tmp/$(basename "$module")" "$target"
    rm -rf "$tmp"
  fi
  # Linked only when it is not already: a warm set-up writes nothing.
  [ "$(readlink "$TOOLS/bin/$name")" = "$target" ] || ln -sf "$target" "$TOOLS/bin/$name"
}

# A virtual environment with grpcio, grpcio-tools and pytest: the test that
# calls granary-meta from Python. Skipped when it already imports them.
python_venv() {
  local venv="$TOOLS/venv"
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import grpc, grpc_tools, pytest' 2>/dev/null; then
    log "python venv present"
    return
  fi
  log "creating python venv in $venv: ${PY_TEST_PACKAGES[*]}"
  mkdir -p "$TOOLS"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${PY_TEST_PACKAGES[@]}"
}

install_debian
python_venv
if ! command -v go >/dev/null 2>&1; then
  log "error: the Go toolchain (go 1.24 or newer) is needed to build the test tools; install it and run again"
  exit 1
fi
mkdir -p "$TOOLS/bin"
go_tool versitygw github.com/versity/versitygw/cmd/versitygw "$VERSITYGW_VERSION"
go_tool helm helm.sh/helm/v3/cmd/helm v3.19.0 # the chart test (e2e/helm): lint and render helm/granary
log "tools in $TOOLS/bin"
# The CSI conformance suite that e2e/csi/run_sanity.sh runs against granary-csi.
go_tool csi-sanity github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity v5.6.0
# The local Kubernetes cluster of the cluster tests (e2e/kube, scripts/kube.sh).
"$(dirname "$0")/kube-tools.sh"
