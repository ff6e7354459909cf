#!/usr/bin/env bash
# Runs the CSI conformance suite (csi-sanity, from scripts/setup.sh) against
# a real granary-csi --mode all, from ctest:
#   - uploads a few objects to s3://granary-e2e/csi-sanity/ on the S3 fixture;
#   - starts granary-meta on a unix socket, then granary-csi with its state
#     dir and allowed roots under a temporary directory; the node role mounts
#     real FUSE volumes (granary-fuse on /dev/fd/N), so this needs root and
#     /dev/fuse;
#   - runs csi-sanity with StorageClass parameters (source, endpoint) and the
#     fixture's credentials as the CreateVolume and NodeStageVolume secrets.
# Groups that do not apply (snapshots, expansion, cloning, ListVolumes,
# GetCapacity, ControllerPublish) skip themselves on the capabilities the
# driver reports; nothing is skipped by name. The exit status is
# csi-sanity's (or 1 when a daemon misbehaved), so ctest fails with it.
#
# Needs GRANARY_BIN_DIR (built binaries) and GRANARY_S3_DIR (the fixture).
# Optional: GRANARY_SANITY_ARGS (more csi-sanity flags, e.g. --ginkgo.v),
# GRANARY_SANITY_LOG (a file to keep csi-sanity's whole output in; the
# plugin's log goes next to it, with .csi appended).
set -euo pipefail

: "${GRANARY_BIN_DIR:?set by ctest}" "${GRANARY_S3_DIR:?set by ctest}"
TOOLS=${GRANARY_TOOLS:-$HOME/.cache/granary-tools}
sanity=$TOOLS/bin/csi-sanity
if ! [ -x "$sanity" ]; then
  echo "run_sanity: no csi-sanity in $TOOLS/bin: run scripts/setup.sh" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ] || ! [ -c /dev/fuse ]; then
  echo "run_sanity: needs root and /dev/fuse (the node plugin mounts FUSE volumes)" >&2
  exit 1
fi
# shellcheck disable=SC1091
. "$GRANARY_S3_DIR/env"

work=$(mktemp -d /tmp/granary-csi-sanity-XXXXXX)
meta_pid="" csi_pid=""

# Whatever the outcome: stop the plugin, then any granary-fuse its records
# still name, then every mount left under $work, then meta.
cleanup() {
  local rc=$?
  if [ -n "$csi_pid" ]; then
    kill "$csi_pid" 2>/dev/null || true
    wait "$csi_pid" 2>/dev/null || true
  fi
  for rec in "$work"/state/node/*.json; do
    [ -f "$rec" ] || continue
    pid=$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' "$rec")
    [ -n "$pid" ] && [ "$pid" -gt 0 ] && kill -9 "$pid" 2>/dev/null || true
  done
  awk -v w="$work" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  if [ -n "$meta_pid" ]; then
    kill "$meta_pid" 2>/dev/null || true
    wait "$meta_pid" 2>/dev/null || true
  fi
  [ -z "${GRANARY_SANITY_LOG:-}" ] || cp "$work/csi.log" "$GRANARY_SANITY_LOG.csi" 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then
    echo "--- granary-csi log (last 60 lines) ---" >&2
    tail -n 60 "$work/csi.log" >&2 || true
    echo "--- granary-meta log (last 20 lines) ---" >&2
    tail -n 20 "$work/meta.log" >&2 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# The dataset every test volume registers: a small tree.
mkdir -p "$work/tree/train" "$work/tree/val"
printf 'aaaa' > "$work/tree/train/a.rec"
printf 'bbbbbbbb' > "$work/tree/train/b.rec"
printf 'hello from granary\n' > "$work/tree/val/hello.txt"
"$GRANARY_BIN_DIR/granary-store" --store.endpoint "$GRANARY_S3_ENDPOINT" \
  --store.credentials_file "$GRANARY_S3_CREDENTIALS" \
  sync "$work/tree" "s3://granary-e2e/csi-sanity/" >/dev/null

# The fixture's credentials, as the secrets a StorageClass would name.
key_id=$(sed -n 's/^aws_access_key_id *= *//p' "$GRANARY_S3_CREDENTIALS")
secret=$(sed -n 's/^aws_secret_access_key *= *//p' "$GRANARY_S3_CREDENTIALS")
umask 077
cat > "$work/secrets.yaml" <<EOF
CreateVolumeSecret:
  accessKeyID: "$key_id"
  secretAccessKey: "$secret"
NodeStageVolumeSecret:
  accessKeyID: "$key_id"
  secretAccessKey: "$secret"
EOF
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"
umask 022
cat > "$work/params.yaml" <<EOF
source: s3://granary-e2e/csi-sanity/
endpoint: $GRANARY_S3_ENDPOINT
cachePolicy: scan-resistant
EOF
# What every granary-fuse the node plugin starts reads first.
cat > "$work/fuse.yaml" <<EOF
cache:
  dir: $work/cache
  capacity: 256MiB
token_file: $work/token
meta:
  key_file: $work/token
store:
  max_attempts: 2
EOF
# meta's csi role key; the mount role's is the cluster token, as in the chart.
(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/csi.key")

# The fixture's S3 server is the cluster's store: the endpoint the
# StorageClass names, allowed in meta and the controller as the chart does.
"$GRANARY_BIN_DIR/granary-meta" --listen "unix://$work/meta.sock" \
  --data_dir "$work/meta" --store.endpoint "$GRANARY_S3_ENDPOINT" \
  --auth.csi_key_file "$work/csi.key" \
  --auth.mount_key_file "$work/token" > "$work/meta.log" 2>&1 &
meta_pid=$!

mkdir -p "$work/mnt"
"$GRANARY_BIN_DIR/granary-csi" --mode all --endpoint "unix://$work/csi.sock" \
  --node_id sanity-node --meta.address "unix://$work/meta.sock" \
  --meta.key_file "$work/csi.key" --store.endpoint "$GRANARY_S3_ENDPOINT" \
  --state_dir "$work/state" --allowed_roots "$work/mnt" \
  --fuse_binary "$GRANARY_BIN_DIR/granary-fuse" --fuse_config "$work/fuse.yaml" \
  --stage_timeout 60s > "$work/csi.log" 2>&1 &
csi_pid=$!

for _ in $(seq 1 100); do
  [ -S "$work/csi.sock" ] && [ -S "$work/meta.sock" ] && break
  kill -0 "$csi_pid" 2>/dev/null || { echo "run_sanity: granary-csi exited at start" >&2; exit 1; }
  kill -0 "$meta_pid" 2>/dev/null || { echo "run_sanity: granary-meta exited at start" >&2; exit 1; }
  sleep 0.1
done

rc=0
"$sanity" --csi.endpoint "unix://$work/csi.sock" \
  --csi.mountdir "$work/mnt/target" --csi.stagingdir "$work/mnt/staging" \
  --csi.testvolumeparameters "$work/params.yaml" --csi.secrets "$work/secrets.yaml" \
  --ginkgo.no-color ${GRANARY_SANITY_ARGS:-} > "$work/sanity.log" 2>&1 || rc=$?
[ -z "${GRANARY_SANITY_LOG:-}" ] || cp "$work/sanity.log" "$GRANARY_SANITY_LOG"
# The summary and any failure, without the per-spec noise.
grep -E '^(Ran [0-9]+ of|FAIL!|SUCCESS!|PASS|FAIL)|\[FAIL\]|Summarizing' "$work/sanity.log" || true
if [ "$rc" -ne 0 ]; then
  echo "--- csi-sanity output (last 120 lines) ---" >&2
  tail -n 120 "$work/sanity.log" >&2
fi

# Every volume the suite made is gone again: no daemon, no record, no mount.
left=$(find "$work/state/node" -name '*.json' 2>/dev/null | wc -l)
mounts=$(awk -v w="$work" 'index($5, w) == 1' /proc/self/mountinfo | wc -l)
if [ "$left" -ne 0 ] || [ "$mounts" -ne 0 ]; then
  echo "run_sanity: after the suite $left volume records and $mounts mounts remain" >&2
  [ "$rc" -ne 0 ] || rc=1
fi

kill -TERM "$csi_pid"
csi_rc=0
wait "$csi_pid" || csi_rc=$?
csi_pid=""
if [ "$csi_rc" -ne 0 ]; then
  echo "run_sanity: granary-csi exited with $csi_rc after SIGTERM" >&2
  [ "$rc" -ne 0 ] || rc=1
fi
exit "$rc"
