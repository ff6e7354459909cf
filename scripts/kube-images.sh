#!/usr/bin/env bash
# Container images for the test cluster, without a registry: built with
# buildah and kept as docker-archive files in $GRANARY_TOOLS/images, which
# scripts/kube.sh imports into containerd. A part already built is skipped
# (the Granary image is rebuilt from the working tree every time; buildah's
# layer cache keeps that to the compile step).
#
#   scripts/kube-images.sh base      pause and CoreDNS (what every cluster needs)
#   scripts/kube-images.sh sidecars  csi-provisioner, and the Kubeflow training-operator (TFJobs)
#   scripts/kube-images.sh granary   the project's Dockerfile, as granary.local/granary:dev-<image id>
#                                    (a new tag per content, so that helm upgrade rolls the pods)
#   scripts/kube-images.sh tf        the TFJob benchmark's image, granary.local/granary-tf:tf-<content hash>:
#                                    Debian's python3 with tensorflow-cpu (bench/tf/requirements.txt,
#                                    wheels from PyPI kept in $GRANARY_TOOLS/wheels/tf) and bench/tf/train.py
#   scripts/kube-images.sh all       all but tf
#
# The Dockerfile's bases (debian:bookworm, debian:bookworm-slim) are made
# once with debootstrap from Debian's mirror and stored in buildah's storage.
set -Eeuo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
TOOLS=${GRANARY_TOOLS:-$HOME/.cache/granary-tools}
KUBE_BIN=$TOOLS/kube-v1.34.4/bin
IMAGES=$TOOLS/images
DEBIAN_MIRROR=${GRANARY_DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { printf 'kube-images: %s\n' "$*" >&2; }
trap 'log "failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR
mkdir -p "$IMAGES"

# export_image REF NAME: buildah image -> $IMAGES/NAME.tar (docker-archive).
export_image() {
  rm -f "$IMAGES/$2.tar.tmp"
  buildah push -q "$1" "docker-archive:$IMAGES/$2.tar.tmp:$1" >/dev/null
  mv "$IMAGES/$2.tar.tmp" "$IMAGES/$2.tar"
}

# scratch_image NAME TAG BINARY [ARG...]: one static binary as the whole image.
scratch_image() {
  local name=$1 tag=$2 bin=$3; shift 3
  local tar=$IMAGES/$name.tar
  if [ -f "$tar" ] && [ "$tar" -nt "$bin" ]; then
    return
  fi
  log "image granary.local/$name:$tag from $bin"
  local c entry
  c=$(buildah from scratch)
  buildah copy -q "$c" "$bin" "/$name" >/dev/null
  entry=$(printf '"%s",' "/$name" "$@")
  buildah config --entrypoint "[${entry%,}]" --cmd '' "$c"
  buildah commit -q --rm "$c" "granary.local/$name:$tag" >/dev/null
  export_image "granary.local/$name:$tag" "$name"
}

pause_image() {
  local bin=$IMAGES/pause-bin
  if [ ! -x "$bin" ] || [ "$here/scripts/kube/pause.c" -nt "$bin" ]; then
    gcc -static -O2 -o "$bin" "$here/scripts/kube/pause.c"
  fi
  scratch_image pause 1 "$bin"
}

# debian:bookworm and debian:bookworm-slim for the Dockerfile's FROM lines:
# one minbase debootstrap serves both (the -slim variant only drops docs).
debian_base() {
  buildah inspect --type image docker.io/library/debian:bookworm-slim >/dev/null 2>&1 && return
  local rootfs=$IMAGES/debian-bookworm-rootfs.tar
  if [ ! -f "$rootfs" ]; then
    log "debootstrap bookworm (minbase) from $DEBIAN_MIRROR"
    local tmp
    tmp=$(mktemp -d)
    debootstrap --variant=minbase bookworm "$tmp/root" "$DEBIAN_MIRROR" >/dev/null
    rm -rf "$tmp/root/var/cache/apt/archives/"*.deb "$tmp/root/var/lib/apt/lists/"*
    tar -C "$tmp/root" -cf "$rootfs.tmp" .
    mv "$rootfs.tmp" "$rootfs"
    rm -rf "$tmp"
  fi
  log "base images debian:bookworm, debian:bookworm-slim"
  local c
  c=$(buildah from scratch)
  buildah add -q "$c" "$rootfs" / >/dev/null
  buildah config --cmd '["bash"]' --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c"
  buildah commit -q --rm "$c" docker.io/library/debian:bookworm >/dev/null
  buildah tag docker.io/library/debian:bookworm docker.io/library/debian:bookworm-slim
}

# debian:bookworm-slim for the cluster too: the examples' reader pod uses it.
debian_slim_image() {
  debian_base
  [ -f "$IMAGES/debian-slim.tar" ] || export_image docker.io/library/debian:bookworm-slim debian-slim
}

granary_image() {
  debian_base
  log "image granary.local/granary from the Dockerfile"
  local t0=$SECONDS
  buildah bud -q --pull-never --network host --layers \
    -f "$here/Dockerfile" -t granary.local/granary:dev "$here" >/dev/null
  local built=$((SECONDS - t0)) id tag mib
  id=$(buildah images --noheading --no-trunc --format '{{.ID}}' granary.local/granary:dev | awk 'NR == 1')
  id=${id#sha256:}
  tag=dev-${id:0:12}
  buildah tag granary.local/granary:dev "granary.local/granary:$tag"
  export_image "granary.local/granary:$tag" granary
  mib=$(du -m "$IMAGES/granary.tar" | cut -f1)
  log "granary.local/granary:$tag built in ${built} s, $mib MiB as an archive"
  printf 'image_tag=%s\nimage_build_s=%s\nimage_archive_mib=%s\n' "$tag" "$built" "$mib" \
    > "$IMAGES/granary.stats"
}

# The TFJob benchmark's image (bench/tfjob.sh): two steps, so that a change
# of train.py does not reinstall TensorFlow. The base (python3, a venv with
# the pinned wheels) is tagged with a hash of requirements.txt and of this
# recipe; the image adds train.py and is tagged with a hash of both.
tf_image() {
  debian_base
  local req=$here/bench/tf/requirements.txt wheels=$TOOLS/wheels/tf c
  local recipe='python3 python3-venv; venv /opt/tf; pip install --no-index -r requirements.txt; no tensorflow/include'
  local base tag
  base=$( { cat "$req"; echo "$recipe"; } | sha256sum | cut -c1-12)
  tag=tf-$( { echo "$base"; cat "$here/bench/tf/train.py"; } | sha256sum | cut -c1-12)
  if [ -f "$IMAGES/granary-tf.tar" ] && grep -qx "image_tag=$tag" "$IMAGES/granary-tf.stats" 2>/dev/null; then
    return
  fi
  mkdir -p "$wheels"
  if ! buildah inspect --type image "granary.local/granary-tf-base:$base" >/dev/null 2>&1; then
    log "image granary.local/granary-tf-base:$base: python3 and tensorflow-cpu"
    c=$(buildah from --pull-never docker.io/library/debian:bookworm-slim)
    buildah run --network host "$c" -- sh -c 'apt-get update -q >/dev/null &&
      DEBIAN_FRONTEND=noninteractive apt-get install -q -y --no-install-recommends python3 python3-venv >/dev/null &&
      rm -rf /var/lib/apt/lists/*'
    # The wheels stay in the tools cache: a second build installs from there
    # without asking PyPI. A host that reaches PyPI through a CA of its own
    # (pip's cert setting) lends the build its CA bundle.
    local ca=() f
    for f in "${PIP_CERT:-}" "${REQUESTS_CA_BUNDLE:-}" "${SSL_CERT_FILE:-}"; do
      if [ -n "$f" ] && [ -f "$f" ]; then ca=(-v "$f:/etc/host-ca.crt:ro"); break; fi
    done
    buildah run --network host -v "$wheels:/wheels" -v "$req:/requirements.txt:ro" "${ca[@]}" "$c" -- sh -c '
      if [ -f /etc/host-ca.crt ]; then export PIP_CERT=/etc/host-ca.crt; fi &&
      python3 -m venv /opt/tf &&
      pip="/opt/tf/bin/pip --disable-pip-version-check -q" &&
      { $pip install --no-index --find-links /wheels -r /requirements.txt 2>/dev/null ||
        { $pip download --only-binary=:all: -d /wheels -r /requirements.txt &&
          $pip install --no-index --find-links /wheels -r /requirements.txt; }; } &&
      rm -rf /root/.cache /opt/tf/lib/python3*/site-packages/tensorflow/include'
    buildah config --env PATH=/opt/tf/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --env TF_CPP_MIN_LOG_LEVEL=2 --cmd '' "$c"
    buildah commit -q --rm "$c" "granary.local/granary-tf-base:$base" >/dev/null
  fi
  log "image granary.local/granary-tf:$tag"
  c=$(buildah from --pull-never "granary.local/granary-tf-base:$base")
  buildah copy -q "$c" "$here/bench/tf/train.py" /opt/tfbench/train.py >/dev/null
  buildah config --workingdir /opt/tfbench "$c"
  buildah commit -q --rm "$c" "granary.local/granary-tf:$tag" >/dev/null
  export_image "granary.local/granary-tf:$tag" granary-tf
  printf 'image_tag=%s\nimage_archive_mib=%s\n' "$tag" "$(du -m "$IMAGES/granary-tf.tar" | cut -f1)" \
    > "$IMAGES/granary-tf.stats"
}

case ${1:-all} in
base) pause_image; scratch_image coredns 1 "$KUBE_BIN/coredns" ;;
sidecars)
  scratch_image csi-provisioner 1 "$KUBE_BIN/csi-provisioner"
  scratch_image training-operator 1 "$KUBE_BIN/training-operator"
  ;;
debian) debian_base ;;
granary) granary_image; debian_slim_image ;;
tf) tf_image ;;
all)
  pause_image
  scratch_image coredns 1 "$KUBE_BIN/coredns"
  scratch_image csi-provisioner 1 "$KUBE_BIN/csi-provisioner"
  scratch_image training-operator 1 "$KUBE_BIN/training-operator"
  granary_image
  debian_slim_image
  ;;
*) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
