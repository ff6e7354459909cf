#!/usr/bin/env bash
# Regenerates the plain manifests in manifests/ from the Helm chart
# helm/granary, so that they always match it:
#   manifests/namespace.yaml            the granary-system namespace
#   manifests/granary.yaml              every object of the chart, default values
#   manifests/storageclass-example.yaml a credentials Secret and a StorageClass
#
#   scripts/render-manifests.sh          rewrite manifests/
#   scripts/render-manifests.sh DIR      write the three files into DIR instead
#                                        (the chart test compares DIR with manifests/)
#
# helm comes from $HELM, else $GRANARY_TOOLS/bin (scripts/setup.sh builds
# it there), else PATH. The values that differ from the chart's defaults are
# clusterToken.existingSecret and metaKeys.existingSecret: a default render
# holds a random token and random keys, which a committed file must not
# (everyone would share them, and every render would differ). With the plain
# manifests you create those two Secrets yourself.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/manifests}
tools=${GRANARY_TOOLS:-$HOME/.cache/granary-tools}

helm=${HELM:-}
if [ -z "$helm" ]; then
  if [ -x "$tools/bin/helm" ]; then
    helm=$tools/bin/helm
  elif command -v helm >/dev/null 2>&1; then
    helm=$(command -v helm)
  else
    echo "render-manifests: helm not found in $tools/bin or PATH: run scripts/setup.sh" >&2
    exit 1
  fi
fi

namespace=granary-system
release=granary
token_secret=granary-cluster-token
keys_secret=granary-meta-keys
render=(template "$release" helm/granary --namespace "$namespace")
main_flags=(--set "clusterToken.existingSecret=$token_secret"
            --set "metaKeys.existingSecret=$keys_secret")
sc_flags=(--set storageClass.create=true --show-only templates/storageclass.yaml)

# header HOW: the generated-file comment; HOW says where the content comes from.
header() {
  cat <<HEADER
# GENERATED FILE - do not edit. Written by scripts/render-manifests.sh:
#   $1
# Change the chart (or the script) and run scripts/render-manifests.sh again;
# the ctest e2e/test_chart fails while manifests/ and the chart disagree.
HEADER
}

mkdir -p "$out"
cd "$here"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

{
  header "by the script itself (with Helm, helm install --create-namespace makes it)"
  cat <<'YAML'
#
# The namespace of manifests/granary.yaml. The node plugin runs privileged
# with hostPath volumes, so Pod Security admission must allow privileged pods
# here.
apiVersion: v1
kind: Namespace
metadata:
  name: granary-system
  labels:
    app.kubernetes.io/part-of: granary
    pod-security.kubernetes.io/enforce: privileged
    pod-security.kubernetes.io/audit: privileged
    pod-security.kubernetes.io/warn: privileged
YAML
} >"$tmp/namespace.yaml"

{
  header "helm ${render[*]} ${main_flags[*]}"
  cat <<YAML
#
# Install: kubectl apply -f manifests/namespace.yaml, then create the cluster
# token Secret and granary-meta's role keys that this file refers to, then
# apply this file:
#   kubectl -n $namespace create secret generic $token_secret \\
#     --from-literal=token="\$(openssl rand -hex 32)"
#   kubectl -n $namespace create secret generic $keys_secret \\
#     --from-literal=csi="\$(openssl rand -hex 32)" \\
#     --from-literal=worker="\$(openssl rand -hex 32)"
#   kubectl apply -f manifests/granary.yaml
YAML
  "$helm" "${render[@]}" "${main_flags[@]}"
} >"$tmp/granary.yaml"

{
  header "helm ${render[*]} ${sc_flags[*]}"
  cat <<'YAML'
#
# An example dataset: edit the Secret's keys and the StorageClass's source,
# endpoint and region, then kubectl apply -f this file. The Secret is written
# by the script; the StorageClass comes from the chart.
---
apiVersion: v1
kind: Secret
metadata:
  name: granary-s3-credentials
  namespace: granary-system
type: Opaque
stringData:
  accessKeyID: REPLACE_WITH_ACCESS_KEY_ID
  secretAccessKey: REPLACE_WITH_SECRET_ACCESS_KEY
  # sessionToken: only for temporary credentials
YAML
  "$helm" "${render[@]}" "${sc_flags[@]}"
} >"$tmp/storageclass-example.yaml"

for f in namespace.yaml granary.yaml storageclass-example.yaml; do
  mv "$tmp/$f" "$out/$f"
done
