#!/usr/bin/env bash
# What checking every cached byte costs on the warm path: a warm epoch of
# the TFRecord reader through a standalone granary-fuse whose block cache
# already holds the whole dataset, with the checks on (verify=true, the
# default) and off (verify=false), in one run, alternating, and
#   - the throughput of each and their ratio (off/on - 1 is the cost),
#   - the granary-fuse CPU seconds per GB read of each.
# keep_cache is off, so that every epoch reaches the daemon (with it on, a
# warm epoch is served from the kernel's page cache and checks nothing).
# Also prints bench/checksum_bench's figures for the candidate checksums.
#
#   bench/verify-cost.sh [--shards 8] [--shard-mib 64] [--threads 2] [--rounds 3]
#                        [--cache-dir /dev/shm/granary-verify-cache]
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=${GRANARY_BUILD:-$here/build}
bin=$build/bin
shards=8 shard_mib=64 threads=2 rounds=3 cache_dir=/dev/shm/granary-verify-cache
while [ $# -gt 0 ]; do
  case "$1" in
    --shards) shards=$2; shift 2 ;;
    --shard-mib) shard_mib=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --cache-dir) cache_dir=$2; shift 2 ;;
    *) echo "verify-cost.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done

work=$build/bench-verify
mnt=$work/mnt
data=$work/tfr
mkdir -p "$work" "$mnt"
pid=
cleanup() {
  if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  fusermount3 -u "$mnt" 2>/dev/null || true
  rm -rf "$cache_dir"
}
trap cleanup EXIT

if [ ! -f "$data/.done-$shards-$shard_mib" ]; then
  rm -rf "$data"
  "$bin/granary-tfrecord" gen "$data" --shards "$shards" --shard_size "${shard_mib}MiB" >/dev/null
  touch "$data/.done-$shards-$shard_mib"
fi
gb=$(awk -v s="$shards" -v m="$shard_mib" 'BEGIN { print s * m * 1.048576 / 1000 }')

mount_fuse() { # verify
  "$bin/granary-fuse" --mountpoint "$mnt" --source "file://$data/" --cache.dir "$cache_dir" \
    --cache.capacity 4GiB --keep_cache false --verify "$1" > "$work/fuse.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 200); do mountpoint -q "$mnt" && return 0; sleep 0.05; done
  cat "$work/fuse.log" >&2; return 1
}
unmount_fuse() {
  kill -TERM "$pid"; wait "$pid" || true; pid=
}
cpu_s() { # pid -> user + system CPU seconds
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}
epoch() { "$bin/granary-tfrecord" read "$mnt" --threads "$threads" --epochs 1 | tail -1 | sed 's/.*mb_per_s=\([0-9.]*\).*/\1/'; }

echo "== $shards TFRecord shards x $shard_mib MiB ($gb GB), $threads readers, $(nproc) CPUs, cache on $cache_dir"
"$bin/checksum_bench" 4 64 | sed 's/^/checksum_bench: /'

# Fill the block cache once (cold epoch), then measure warm epochs.
rm -rf "$cache_dir"
mount_fuse true
epoch >/dev/null
unmount_fuse

declare -A mbs cpu
for v in true false; do mbs[$v]=0; cpu[$v]=0; done
for r in $(seq 1 "$rounds"); do
  for v in true false; do
    mount_fuse "$v"
    epoch >/dev/null # the daemon's own warm-up
    c0=$(cpu_s "$pid")
    m=$(epoch)
    c1=$(cpu_s "$pid")
    unmount_fuse
    echo "round $r verify=$v: mb_per_s=$m fuse_cpu_s=$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')"
    mbs[$v]=$(awk -v a="${mbs[$v]}" -v b="$m" 'BEGIN { print a + b }')
    cpu[$v]=$(awk -v a="${cpu[$v]}" -v b="$c0" -v c="$c1" 'BEGIN { print a + c - b }')
  done
done
on=$(awk -v a="${mbs[true]}" -v n="$rounds" 'BEGIN { printf "%.1f", a / n }')
off=$(awk -v a="${mbs[false]}" -v n="$rounds" 'BEGIN { printf "%.1f", a / n }')
con=$(awk -v a="${cpu[true]}" -v n="$rounds" -v g="$gb" 'BEGIN { printf "%.3f", a / n / g }')
coff=$(awk -v a="${cpu[false]}" -v n="$rounds" -v g="$gb" 'BEGIN { printf "%.3f", a / n / g }')
echo "warm epoch, mean of $rounds: verify_on_mb_per_s=$on verify_off_mb_per_s=$off ratio=$(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.3f", a / b }') (target >= 0.95)"
echo "granary-fuse CPU per GB: verify_on_s=$con verify_off_s=$coff extra_s=$(awk -v a="$con" -v b="$coff" 'BEGIN { printf "%.3f", a - b }')"
