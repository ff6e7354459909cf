#!/usr/bin/env bash
# Reads through a granary-fuse mount against the same reads of the same
# files on local disk, in one run, and prints each figure and its ratio:
#   - warm epoch with the TFRecord reader (target >= 0.9 of local)
#   - page-cached sequential reads: dd 1 MiB, fio 256 KiB with 1 and 2 jobs
#     (target >= 0.75; a minimal FUSE filesystem reaches about 0.8 here)
#   - cold epoch through the mount against raw S3 GET throughput at the same
#     concurrency (target >= 0.85)
#   - stat of 100,000 files, attributes cached, against local stat (>= 0.5)
#
#   bench/fuse-read.sh [--shards 16] [--shard-mib 64] [--threads 4] [--stat-files 100000]
#                      [--cache-dir /dev/shm/granary-bench-cache]
# The block cache sits on tmpfs by default, as a node's cache would on NVMe:
# this machine's virtual disk takes buffered writes at about 400 MB/s, which
# would measure the disk, not Granary (give --cache-dir to measure a disk).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=${GRANARY_BUILD:-$here/build}
bin=$build/bin
shards=16 shard_mib=64 threads=4 stat_files=100000 cache_dir=/dev/shm/granary-bench-cache
while [ $# -gt 0 ]; do
  case "$1" in
    --shards) shards=$2; shift 2 ;;
    --shard-mib) shard_mib=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --stat-files) stat_files=$2; shift 2 ;;
    --cache-dir) cache_dir=$2; shift 2 ;;
    *) echo "fuse-read.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done

work=$build/bench-fuse
s3dir=$work/s3
mnt=$work/mnt
mkdir -p "$work" "$mnt"
cleanup() {
  for m in "$mnt" "$work/mnt-stat"; do
    if mountpoint -q "$m" 2>/dev/null; then pkill -TERM -f "granary-fuse --mountpoint $m" || true; fi
  done
  sleep 0.5
  for m in "$mnt" "$work/mnt-stat"; do fusermount3 -u "$m" 2>/dev/null || true; done
  "$here/scripts/s3-server.sh" stop "$s3dir"
  rm -rf "$cache_dir"
}
trap cleanup EXIT
eval "$("$here/scripts/s3-server.sh" start "$s3dir")"
"$here/scripts/s3-server.sh" mkbucket "$s3dir" fusebench
storeflags=(--store.endpoint "$GRANARY_S3_ENDPOINT" --store.credentials_file "$GRANARY_S3_CREDENTIALS")

data=$work/tfr
if [ ! -f "$data/.done-$shards-$shard_mib" ]; then
  rm -rf "$data"
  "$bin/granary-tfrecord" gen "$data" --shards "$shards" --shard_size "${shard_mib}MiB" >/dev/null
  "$bin/granary-store" "${storeflags[@]}" sync "$data" s3://fusebench/tfr/ >/dev/null
  touch "$data/.done-$shards-$shard_mib"
fi
total_mb=$(awk -v s="$shards" -v m="$shard_mib" 'BEGIN { print s * m * 1.048576 }')

mount_fuse() { # mountpoint source [flags...]
  local m=$1 src=$2; shift 2
  "$bin/granary-fuse" --mountpoint "$m" --source "$src" "$@" > "$work/fuse-$(basename "$m").log" 2>&1 &
  for _ in $(seq 1 200); do mountpoint -q "$m" && return 0; sleep 0.05; done
  cat "$work/fuse-$(basename "$m").log" >&2; return 1
}
epoch() { "$bin/granary-tfrecord" read "$1" --threads "$threads" --epochs "${2:-1}" | tail -1 | sed 's/.*mb_per_s=\([0-9.]*\).*/\1/'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
dd_rate() { # file -> MB/s
  dd if="$1" of=/dev/null bs=1M 2>&1 | awk '/copied/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9.]+$/ && $(i+1) ~ /B\/s/) { v = $i; u = $(i+1) } }
    END { if (u == "GB/s") v *= 1000; if (u == "kB/s") v /= 1000; print v }'
}
fio_rate() { # dir jobs -> MB/s
  fio --name=r --directory="$1" --rw=read --bs=256k --ioengine=psync --invalidate=0 --numjobs="$2" \
      --filename_format='train-$jobnum-of-x' --size=64m --group_reporting --minimal 2>/dev/null \
    | awk -F';' '{ printf "%.1f\n", $7 / 1000 }'
}

echo "== dataset: $shards TFRecord shards x $shard_mib MiB, $threads readers, $(nproc) CPUs"

# Cold: an empty cache, blocks come from S3; baseline: raw GETs, same concurrency.
raw=$("$bin/s3_get_bench" "${storeflags[@]}" --uri s3://fusebench/tfr/ --threads "$threads" \
      | sed 's/.*mb_per_s=\([0-9.]*\).*/\1/')
rm -rf "$cache_dir"
mount_fuse "$mnt" s3://fusebench/tfr/ "${storeflags[@]}" --cache.dir "$cache_dir"
cold=$(epoch "$mnt")
echo "cold epoch: mount_mb_per_s=$cold s3_raw_get_mb_per_s=$raw ratio=$(ratio "$cold" "$raw") (target >= 0.85)"

# Warm: both in page cache, same reader, same concurrency.
epoch "$mnt" >/dev/null; epoch "$data" >/dev/null
warm=$(epoch "$mnt" 3); local_warm=$(epoch "$data" 3)
echo "warm epoch: mount_mb_per_s=$warm local_mb_per_s=$local_warm ratio=$(ratio "$warm" "$local_warm") (target >= 0.9)"

f=$(basename "$(ls "$data"/*.tfrecord | head -1)")
dm=$(dd_rate "$mnt/$f"); dl=$(dd_rate "$data/$f")
echo "dd 1MiB page-cached: mount_mb_per_s=$dm local_mb_per_s=$dl ratio=$(ratio "$dm" "$dl") (target >= 0.75)"

# fio reads files named train-<job>-of-x: give it links to the shards.
for d in "$work/fio-mnt" "$work/fio-local"; do rm -rf "$d"; mkdir -p "$d"; done
for j in 0 1; do
  s=$(ls "$data"/*.tfrecord | sed -n "$((j + 1))p")
  ln -s "$mnt/$(basename "$s")" "$work/fio-mnt/train-$j-of-x"
  ln -s "$s" "$work/fio-local/train-$j-of-x"
done
for jobs in 1 2; do
  fio_rate "$work/fio-mnt" "$jobs" >/dev/null; fio_rate "$work/fio-local" "$jobs" >/dev/null
  fm=$(fio_rate "$work/fio-mnt" "$jobs"); fl=$(fio_rate "$work/fio-local" "$jobs")
  echo "fio 256KiB psync jobs=$jobs: mount_mb_per_s=$fm local_mb_per_s=$fl ratio=$(ratio "$fm" "$fl") (target >= 0.75)"
done

# stat: many small files on local disk, mounted through file:// standalone.
sdir=$work/statfiles
if [ ! -f "$sdir/.done-$stat_files" ]; then
  rm -rf "$sdir"; mkdir -p "$sdir"
  python3 - "$sdir" "$stat_files" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%03d" % (i // 1000))
    if i % 1000 == 0: os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "f%06d" % i), "w").close()
PY
  touch "$sdir/.done-$stat_files"
fi
mkdir -p "$work/mnt-stat"
mount_fuse "$work/mnt-stat" "file://$sdir" --cache.dir "$work/cache-stat"
"$bin/stat_bench" "$work/mnt-stat" 1 >/dev/null  # first pass fills the kernel's caches
sm=$("$bin/stat_bench" "$work/mnt-stat" 3 | sed 's/.*stats_per_s=\([0-9.]*\).*/\1/')
sl=$("$bin/stat_bench" "$sdir" 3 | sed 's/.*stats_per_s=\([0-9.]*\).*/\1/')
echo "stat of $stat_files files: mount_per_s=$sm local_per_s=$sl ratio=$(ratio "$sm" "$sl") (target >= 0.5)"
