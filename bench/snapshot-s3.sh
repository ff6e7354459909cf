#!/usr/bin/env bash
# Time to build a dataset's namespace snapshot from a real S3 listing:
# snapshot_build_from_store over N zero-byte objects in the local S3 server
# (versitygw), shaped like an image dataset:
#   s3://snapbench/imagenet/train/class-%04d/img-%08d.JPEG  (1000 classes)
# Target: 1,000,000 objects in under 60 s.
#
#   bench/snapshot-s3.sh [--objects 1000000] [--runs 1]
#
# The objects are not PUT one by one (a million signed PUTs would take far
# longer than what is measured). versitygw's POSIX backend serves the files
# under its root directory as the objects of the bucket of the same name, so
# the script creates empty files straight in $GRANARY_S3_ROOT/snapbench/...
# The listing that is timed is nonetheless the real thing: ListObjectsV2
# pages of 1000 keys, signed, over HTTP, parsed, as meta does it. These
# files carry none of the metadata a PUT would leave, so the listing gives
# them computed or empty ETags; that changes no cost measured here.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=${GRANARY_BUILD:-$here/build}
objects=1000000 runs=1
while [ $# -gt 0 ]; do
  case "$1" in
    --objects) objects=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    *) echo "snapshot-s3.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
[ -x "$build/bin/snapshot_bench" ] || {
  echo "snapshot-s3.sh: $build/bin/snapshot_bench not built (set GRANARY_BUILD)" >&2; exit 1; }

s3dir=$build/bench-s3-snapshot
trap '"$here/scripts/s3-server.sh" stop "$s3dir"' EXIT
eval "$("$here/scripts/s3-server.sh" start "$s3dir")"
"$here/scripts/s3-server.sh" mkbucket "$s3dir" snapbench

data=$GRANARY_S3_ROOT/snapbench/imagenet
if [ ! -f "$s3dir/.objects-$objects" ]; then
  echo "creating $objects empty objects under $data (files in the server's root)"
  rm -rf "$data"; rm -f "$s3dir"/.objects-*
  t0=$(date +%s.%N)
  python3 - "$data" "$objects" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
per_class = (n + 999) // 1000
for c in range((n + per_class - 1) // per_class):
    d = os.path.join(root, "train", "class-%04d" % c)
    os.makedirs(d, exist_ok=True)
    for i in range(c * per_class, min(n, (c + 1) * per_class)):
        os.close(os.open(os.path.join(d, "img-%08d.JPEG" % i), os.O_CREAT | os.O_WRONLY, 0o644))
EOF
  t1=$(date +%s.%N)
  touch "$s3dir/.objects-$objects"
  awk -v a="$t0" -v z="$t1" 'BEGIN { printf "created in %.1f s\n", z - a }'
fi

echo "objects=$objects runs=$runs endpoint=$GRANARY_S3_ENDPOINT"
for r in $(seq 1 "$runs"); do
  line=$("$build/bin/snapshot_bench" --uri s3://snapbench/imagenet/ \
    --store.endpoint "$GRANARY_S3_ENDPOINT" \
    --store.credentials_file "$GRANARY_S3_CREDENTIALS")
  echo "run $r: $line"
  secs=$(sed -n 's/.* seconds=\([0-9.]*\).*/\1/p' <<<"$line")
  files=$(sed -n 's/.* files=\([0-9]*\).*/\1/p' <<<"$line")
  [ "$files" = "$objects" ] || { echo "snapshot-s3.sh: listed $files of $objects objects" >&2; exit 1; }
done
awk -v s="$secs" -v n="$objects" 'BEGIN {
  printf "last run: %.1f s for %d objects; 1M extrapolated: %.1f s (target < 60)\n", s, n, s * 1000000 / n }'
