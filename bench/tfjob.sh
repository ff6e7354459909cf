#!/usr/bin/env bash
# The TFJob benchmark in the local Kubernetes cluster (scripts/kube.sh):
# Kubeflow TFJobs of 1, 2 and 4 workers running a TensorFlow input pipeline
# (bench/tf/train.py) over TFRecord shards on a Granary PVC, on the node's
# local disk, and on synthetic data made in memory; images/s of each and the
# ratio to synthetic (bench/tfjob_bench.py says how).
#
#   bench/tfjob.sh [--reuse] [--keep-data] [tfjob_bench.py options:
#                  --shards 16 --records 1152 --workers 1,2,4 --modes synthetic,granary,local
#                  --batch 32 --compute-ms 100 --warmup 5]
#
#   --reuse      use the cluster that `e2e/kube/cluster.sh up` brought up and
#                leave it up (default: bring it down, up, and down at the end)
#   --keep-data  keep the shards on the node's disk (/var/lib/granary-kube/tfbench-local)
#                for the next run
#
# Needs root and a build (GRANARY_BUILD, default build/). The image
# granary.local/granary-tf (scripts/kube-images.sh tf) is built first.
set -euo pipefail

# shellcheck source=bench/kube-env.sh
. "$(dirname "$0")/kube-env.sh"

reuse=0 keep=0
while [ $# -gt 0 ]; do
  case $1 in
    --reuse) reuse=1; shift ;;
    --keep-data) keep=1; shift ;;
    *) break ;;
  esac
done

"$src/scripts/kube-images.sh" tf
tag=$(sed -n 's/^image_tag=//p' "$TOOLS/images/granary-tf.stats")

cleanup() {
  [ $keep = 1 ] || rm -rf /var/lib/granary-kube/tfbench-local
  [ $reuse = 1 ] || "$cluster" down >/dev/null 2>&1 || true
}
if [ $reuse = 0 ]; then
  "$cluster" down >/dev/null 2>&1 || true
  trap cleanup EXIT
  "$cluster" up
else
  trap cleanup EXIT
  "$kube" status || { echo "tfjob: no cluster up (e2e/kube/cluster.sh up)" >&2; exit 1; }
fi
t=$SECONDS
eval "$("$kube" env)"
if ! ctr --address "$GRANARY_KUBE_CONTAINERD_SOCK" --namespace k8s.io images ls -q |
    grep -qx "granary.local/granary-tf:$tag"; then
  "$kube" import "$TOOLS/images/granary-tf.tar"
fi
echo "tf_image=granary.local/granary-tf:$tag tf_image_mib=$(du -m "$TOOLS/images/granary-tf.tar" | cut -f1) import_s=$((SECONDS - t))"
echo "machine: $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(free -g | awk '/^Mem:/ {print $2}') GiB, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"

PYTHONPATH=$src/e2e/kube "$kube" exec "$TOOLS/venv/bin/python" -u "$src/bench/tfjob_bench.py" \
  --image "granary.local/granary-tf:$tag" "$@"
