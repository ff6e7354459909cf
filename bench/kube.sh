#!/usr/bin/env bash
# Figures of Granary in the local Kubernetes cluster (scripts/kube.sh):
#
#   tools_build_s          (--fresh only) scripts/kube-tools.sh into empty tool,
#                          Go module and Go build caches: the "from nothing" time
#   cluster_up_s           scripts/kube.sh up after down (tools built; new etcd,
#                          kubelet state and pods) until the node and CoreDNS are Ready
#   cluster_up_again_s     a second up of the running cluster (reuses everything)
#   image_build_s, image_archive_mib
#                          the Granary image from the Dockerfile (buildah) and its size
#   helm_install_ready_s   helm install until every Granary pod is Ready
#   pvc_bound_s, pod_running_*_s, epoch_*_mb_per_s, ratio_*
#                          bench/kube_bench.py, in the cluster (see there)
#
#   bench/kube.sh [--fresh] [kube_bench.py options: --shards N --shard-mib N --threads N]
#
# Needs root and a build (GRANARY_BUILD, default build/). Leaves the cluster down.
set -euo pipefail

# shellcheck source=bench/kube-env.sh
. "$(dirname "$0")/kube-env.sh"

fresh=0
if [ "${1:-}" = --fresh ]; then
  fresh=1
  shift
fi

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

if [ $fresh = 1 ]; then
  scratch=$(mktemp -d /var/tmp/granary-fresh-tools.XXXXXX)
  t=$(now)
  GRANARY_TOOLS=$scratch GOMODCACHE=$scratch/gomod GOCACHE=$scratch/gocache \
    "$src/scripts/kube-tools.sh" >/dev/null
  echo "tools_build_s=$(since "$t")"
  # Go makes its module cache read-only.
  chmod -R u+w "$scratch" && rm -rf "$scratch"
fi

"$cluster" down >/dev/null 2>&1 || true
trap '"$cluster" down >/dev/null 2>&1 || true' EXIT

t=$(now)
"$kube" up
echo "cluster_up_s=$(since "$t")"
t=$(now)
"$kube" up
echo "cluster_up_again_s=$(since "$t")"

"$cluster" up
grep -E '^(image_build_s|image_archive_mib|helm_install_ready_s)=' "$GRANARY_KUBE_WORK/timings"

PYTHONPATH=$src/e2e/kube "$kube" exec "$TOOLS/venv/bin/python" "$src/bench/kube_bench.py" "$@"
