#!/usr/bin/env bash
# Runs e2e/meta/test_meta_python.py against a real granary-meta, from ctest:
# uploads a small tree to the S3 fixture with granary-store, starts meta on
# a unix socket in a temporary directory, runs pytest from the venv that
# scripts/setup.sh made, stops meta with SIGTERM. The exit status is
# pytest's (or 1 if meta did not stop cleanly), so ctest fails with it.
#
# Needs GRANARY_BIN_DIR (built binaries) and GRANARY_S3_DIR (the fixture).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
: "${GRANARY_BIN_DIR:?set by ctest}" "${GRANARY_S3_DIR:?set by ctest}"
TOOLS=${GRANARY_TOOLS:-$HOME/.cache/granary-tools}
py=$TOOLS/venv/bin/python
if ! [ -x "$py" ]; then
  echo "run_python_test: no python venv in $TOOLS/venv: run scripts/setup.sh" >&2
  exit 1
fi
# shellcheck disable=SC1091
. "$GRANARY_S3_DIR/env"

work=$(mktemp -d /tmp/granary-meta-py-XXXXXX)
meta_pid=""
cleanup() {
  if [ -n "$meta_pid" ]; then
    kill "$meta_pid" 2>/dev/null || true
    wait "$meta_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# The tree test_meta_python.py expects (TREE there), under a unique prefix.
prefix="meta-py-$$-$(date +%s%N)/"
mkdir -p "$work/tree/train" "$work/tree/val"
printf 'aaaa' > "$work/tree/train/a.rec"
printf 'bbbbbbbb' > "$work/tree/train/b.rec"
printf 'cc' > "$work/tree/val/c.rec"
"$GRANARY_BIN_DIR/granary-store" --store.endpoint "$GRANARY_S3_ENDPOINT" \
  --store.credentials_file "$GRANARY_S3_CREDENTIALS" \
  sync "$work/tree" "s3://granary-e2e/$prefix" >/dev/null

# The three role keys (mode 0600); the tests sign with them, and without.
# file:// datasets the tests make lie in $work/files; meta ends a call whose
# client reads nothing after 3 s (test_unread_snapshot_streams_...).
mkdir -p "$work/keys" "$work/files"
for role in csi worker mount; do
  (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/keys/$role")
done
"$GRANARY_BIN_DIR/granary-meta" --listen "unix://$work/meta.sock" \
  --data_dir "$work/data" --store.endpoint "$GRANARY_S3_ENDPOINT" \
  --auth.csi_key_file "$work/keys/csi" \
  --auth.worker_key_file "$work/keys/worker" --auth.mount_key_file "$work/keys/mount" \
  --allowed_file_roots "$work/files" --rpc.stall_timeout 3s \
  > "$work/meta.log" 2>&1 &
meta_pid=$!

# protoc's output and anything else pytest writes goes under $work.
export TMPDIR="$work"
export GRANARY_META_ADDRESS="unix:$work/meta.sock"
export GRANARY_META_KEY_DIR="$work/keys"
export GRANARY_META_LOG="$work/meta.log"
export GRANARY_FILE_ROOT="$work/files"
export GRANARY_PROTO_DIR="$src/api"
export PYTHONPATH="$src/e2e${PYTHONPATH:+:$PYTHONPATH}"
export GRANARY_TEST_PREFIX="$prefix"
export GRANARY_S3_ENDPOINT GRANARY_S3_CREDENTIALS

rc=0
(cd "$work" && "$py" -m pytest -q -p no:cacheprovider --rootdir "$here" "$here/test_meta_python.py") || rc=$?

kill -TERM "$meta_pid"
meta_rc=0
wait "$meta_pid" || meta_rc=$?
meta_pid=""
if [ "$meta_rc" -ne 0 ]; then
  echo "run_python_test: granary-meta exited with $meta_rc after SIGTERM" >&2
  [ "$rc" -ne 0 ] || rc=1
fi
if [ "$rc" -ne 0 ]; then
  echo "--- granary-meta log ---" >&2
  tail -n 40 "$work/meta.log" >&2
fi
exit "$rc"
