# Sourced by the cluster benchmarks (bench/kube.sh, bench/tfjob.sh): where
# the sources, the build, the tools and the cluster's scripts are.
src=$(cd "$(dirname "$0")/.." && pwd)
build=${GRANARY_BUILD:-$src/build}
TOOLS=${GRANARY_TOOLS:-$HOME/.cache/granary-tools}
export GRANARY_BIN_DIR=$build/bin
export GRANARY_KUBE_WORK=${GRANARY_KUBE_WORK:-$build/bench-kube}
kube=$src/scripts/kube.sh
cluster=$src/e2e/kube/cluster.sh
