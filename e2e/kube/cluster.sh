#!/usr/bin/env bash
# The cluster tests' fixture: a real single-node Kubernetes cluster
# (scripts/kube.sh) with Granary installed by Helm from the image the
# project's Dockerfile builds, and an S3 server (versitygw) on the host that
# pods reach at the node's gateway address.
#
#   e2e/kube/cluster.sh up     build the images, start the cluster and S3, helm install, wait Ready
#   e2e/kube/cluster.sh down   helm uninstall, stop the cluster and S3 (runs even after failures)
#
# The settings the tests need are written to $GRANARY_KUBE_WORK/env (default
# /tmp/granary-kube-e2e/env). Timings go to $GRANARY_KUBE_WORK/timings.
set -Eeuo pipefail

src=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${GRANARY_KUBE_WORK:-/tmp/granary-kube-e2e}
TOOLS=${GRANARY_TOOLS:-$HOME/.cache/granary-tools}
NS=granary-system
RELEASE=granary
kube=$src/scripts/kube.sh

log() { printf 'cluster: %s\n' "$*" >&2; }
trap 'log "failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

eval "$("$kube" env)"

helm_() { "$kube" exec "$TOOLS/bin/helm" --kubeconfig "$KUBECONFIG" "$@"; }
kctl() { "$kube" kubectl "$@"; }

timing() { echo "$1=$2" >> "$WORK/timings"; }

up() {
  mkdir -p "$WORK"
  : > "$WORK/timings"
  local t0=$SECONDS
  "$src/scripts/kube-images.sh" base
  "$src/scripts/kube-images.sh" sidecars
  local tb=$SECONDS
  "$src/scripts/kube-images.sh" granary
  timing image_build_total_s $((SECONDS - tb))
  cat "$TOOLS/images/granary.stats" >> "$WORK/timings"
  local tag
  tag=$(sed -n 's/^image_tag=//p' "$TOOLS/images/granary.stats")
  [ -n "$tag" ] || { log "no image_tag in $TOOLS/images/granary.stats"; exit 1; }

  local tu=$SECONDS
  "$kube" up
  timing cluster_up_s $((SECONDS - tu))
  local img
  for img in granary csi-provisioner training-operator debian-slim; do
    [ -f "$TOOLS/images/$img.tar" ] && "$kube" import "$TOOLS/images/$img.tar"
  done
  # TFJobs, as Kubeflow serves them: the operator's published CRD (too big
  # for client-side apply's annotation) and the operator itself.
  kctl apply --server-side -f "$GRANARY_KUBE_BIN/../tfjobs-crd.yaml" >/dev/null
  kctl apply -f "$src/scripts/kube/training-operator.yaml" >/dev/null

  # The store, on the host side of the cluster's veth.
  local env
  env=$(GRANARY_S3_BIND=$GRANARY_KUBE_HOST_IP "$src/scripts/s3-server.sh" start "$WORK/s3")
  eval "$env"
  "$src/scripts/s3-server.sh" mkbucket "$WORK/s3" datasets
  local key secret
  key=$(sed -n 's/^aws_access_key_id = //p' "$GRANARY_S3_CREDENTIALS")
  secret=$(sed -n 's/^aws_secret_access_key = //p' "$GRANARY_S3_CREDENTIALS")

  kctl create namespace "$NS" --dry-run=client -o yaml | kctl apply -f - >/dev/null
  kctl label namespace "$NS" pod-security.kubernetes.io/enforce=privileged --overwrite >/dev/null
  kctl -n "$NS" create secret generic granary-store-credentials \
    --from-literal=accessKeyID="$key" --from-literal=secretAccessKey="$secret" \
    --dry-run=client -o yaml | kctl apply -f - >/dev/null

  # Only images and host paths differ from the chart's defaults (and the
  # store the cluster's datasets live in, which the tenant namespace
  # team-data of e2e/kube/test_datasets may read with the cluster's
  # credentials), and TLS is on: every test then also runs meta's gRPC and
  # the workers' HTTP over the chart's certificates (the plaintext default
  # is what the e2e tests outside the cluster run).
  local ti=$SECONDS
  helm_ upgrade --install "$RELEASE" "$src/helm/granary" --namespace "$NS" \
    --set image.repository=granary.local/granary --set-string image.tag="$tag" \
    --set sidecars.provisioner.image.repository=granary.local/csi-provisioner \
    --set-string sidecars.provisioner.image.tag=1 \
    --set node.kubeletDir="$GRANARY_KUBE_KUBELET_DIR" \
    --set node.stateDir=/var/lib/granary-kube/granary/csi \
    --set cache.dir=/var/lib/granary-kube/granary/cache --set cache.capacity=4Gi \
    --set store.endpoint="$GRANARY_S3_ENDPOINT" \
    --set store.credentials.existingSecret=granary-store-credentials \
    --set-json 'datasets.clusterCredentials=[{"namespace":"","sources":["*"]},{"namespace":"team-data","sources":["s3://datasets/"]}]' \
    --set tls.enabled=true \
    --wait --timeout 5m >/dev/null || { dump; exit 1; }
  # helm's --wait lets a DaemonSet be short of its maxUnavailable (1): a
  # worker still joining meta counts as done. Wait for every pod.
  kctl -n "$NS" wait --for=condition=Ready pod --all --timeout=120s >/dev/null || { dump; exit 1; }
  timing helm_install_ready_s $((SECONDS - ti))
  timing fixture_total_s $((SECONDS - t0))
  {
    echo "$env"
    echo "GRANARY_S3_ACCESS_KEY=$key"
    echo "GRANARY_S3_SECRET_KEY=$secret"
    echo "GRANARY_KUBE_NAMESPACE=$NS"
    echo "GRANARY_KUBE_RELEASE=$RELEASE"
    echo "GRANARY_KUBE_IMAGE=granary.local/granary:$tag"
    "$kube" env
  } > "$WORK/env"
  log "ready: $(tr '\n' ' ' < "$WORK/timings")"
}

dump() {
  kctl get pods -A -o wide >&2 || true
  kctl -n "$NS" get events --sort-by=.lastTimestamp >&2 || true
  local p
  for p in $(kctl -n "$NS" get pods -o name 2>/dev/null); do
    log "--- logs of $p"
    kctl -n "$NS" logs "$p" --all-containers --tail=30 >&2 || true
  done
}

down() {
  if "$kube" status 2>/dev/null; then
    helm_ uninstall "$RELEASE" --namespace "$NS" --wait --timeout 2m >/dev/null 2>&1 || true
  fi
  "$kube" down
  "$src/scripts/s3-server.sh" stop "$WORK/s3"
}

case ${1:-} in
up) up ;;
down) down ;;
dump) dump ;;
*) echo "usage: $0 up|down|dump" >&2; exit 2 ;;
esac
