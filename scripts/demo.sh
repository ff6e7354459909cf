#!/usr/bin/env bash
# The local demo on the embedded default (standalone granary-fuse, no
# Kubernetes): installs what is missing, builds, starts a local S3 server,
# loads a TFRecord dataset into it, mounts it through granary-fuse, reads two
# epochs with a parallel reader that checks every record's CRC, prints cold
# and warm throughput and the cache hit ratio, and unmounts.
#
#   scripts/demo.sh [--shards 16] [--shard-mib 64] [--threads 4]
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
shards=16 shard_mib=64 threads=4
while [ $# -gt 0 ]; do
  case "$1" in
    --shards) shards=$2; shift 2 ;;
    --shard-mib) shard_mib=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    *) echo "demo: unknown option '$1'" >&2; exit 2 ;;
  esac
done

"$here/scripts/setup.sh"
build=$here/build
cmake -S "$here" -B "$build" -G Ninja >/dev/null
ninja -C "$build" >/dev/null
bin=$build/bin

work=$build/demo
s3dir=$work/s3
mnt=$work/mnt
fuse_pid=
cleanup() {
  if [ -n "$fuse_pid" ] && kill -0 "$fuse_pid" 2>/dev/null; then
    kill -TERM "$fuse_pid"; wait "$fuse_pid" || true
  fi
  "$here/scripts/s3-server.sh" stop "$s3dir"
}
trap cleanup EXIT
eval "$("$here/scripts/s3-server.sh" start "$s3dir")"
"$here/scripts/s3-server.sh" mkbucket "$s3dir" demo

echo "== generating $shards TFRecord shards of $shard_mib MiB (framing and CRC32C as TensorFlow writes them)"
rm -rf "$work/data" "$work/cache" && mkdir -p "$work/data"
"$bin/granary-tfrecord" gen "$work/data/train" --shards "$shards" --shard_size "${shard_mib}MiB"
echo "== uploading to s3://demo/ at $GRANARY_S3_ENDPOINT"
"$bin/granary-store" --store.endpoint "$GRANARY_S3_ENDPOINT" \
  --store.credentials_file "$GRANARY_S3_CREDENTIALS" sync "$work/data" s3://demo/

echo "== mounting s3://demo/train/ at $mnt"
mkdir -p "$mnt"
"$bin/granary-fuse" --mountpoint "$mnt" --source s3://demo/train/ \
  --store.endpoint "$GRANARY_S3_ENDPOINT" --store.credentials_file "$GRANARY_S3_CREDENTIALS" \
  --cache.dir "$work/cache" --cache.capacity 4GiB > "$work/fuse.log" 2>&1 &
fuse_pid=$!
for _ in $(seq 1 200); do mountpoint -q "$mnt" && break; sleep 0.05; done
mountpoint -q "$mnt" || { cat "$work/fuse.log" >&2; exit 1; }
ls -l "$mnt" | head -4

stat_of() { # key -> value from the mount's counters
  python3 -c "import os,sys; d=dict(w.split('=') for w in os.getxattr(sys.argv[1],'user.granary.stats').decode().split()); print(d[sys.argv[2]])" "$mnt" "$1"
}
for epoch in 1 2; do
  before=$(stat_of store_bytes); reads_before=$(stat_of reads)
  line=$("$bin/granary-tfrecord" read "$mnt" --threads "$threads")
  after=$(stat_of store_bytes); reads_after=$(stat_of reads)
  bytes=$(echo "$line" | sed 's/.*bytes=\([0-9]*\).*/\1/')
  mbps=$(echo "$line" | sed 's/.*mb_per_s=\([0-9.]*\).*/\1/')
  records=$(echo "$line" | sed 's/.*records=\([0-9]*\).*/\1/')
  kind=cold; [ "$epoch" = 2 ] && kind=warm
  awk -v e="$epoch" -v k="$kind" -v m="$mbps" -v r="$records" -v b="$bytes" -v s=$((after - before)) \
      -v d=$((reads_after - reads_before)) \
    'BEGIN { printf "epoch %d (%s): %d records verified, %.0f MB/s, cache hit ratio %.1f%% (%d MB from S3, %d reads reached the daemon)\n",
             e, k, r, m, 100 * (1 - s / b), s / 1e6, d }'
done

echo "== unmounting"
kill -TERM "$fuse_pid"; wait "$fuse_pid"; fuse_pid=
mountpoint -q "$mnt" && { echo "demo: mount still present" >&2; exit 1; }
echo "unmounted cleanly"
