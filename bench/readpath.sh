#!/usr/bin/env bash
# What one 1 MiB read costs granary-fuse on the warm path: a warm epoch
# served from the block cache with the page cache dropped, in three set-ups
#   standalone     granary-fuse --source s3://... (its own block cache)
#   cluster-local  granary-meta + one granary-worker + granary-fuse
#                  --dataset: the node's cache directory read directly
#   cluster-peer   the same, granary-fuse given an empty cache directory,
#                  so every block comes from the worker over HTTP
# and for each
#   - system calls of the granary-fuse process (all threads, strace -c -f)
#     per MiB read, and the five most frequent;
#   - heap allocations of the granary-fuse process per MiB read
#     (malloc, calloc, realloc and the aligned ones: LD_PRELOAD
#     libgranary_alloc_count.so, bench/alloc_count.c);
#   - CPU seconds (user + system, /proc/PID/stat) per GB read of every
#     Granary process (granary-fuse; + granary-worker and granary-meta in
#     the cluster set-ups), the median of --rounds epochs.
# Each epoch reads every file once with dd bs=1M (the mount's read-ahead
# of 1 MiB makes 1 MiB FUSE requests); the counted epochs follow a cold one
# that fills the cache, and echo 3 > drop_caches precedes each. keep_cache
# is off so that every epoch reaches the daemon. The syscall epoch is
# apart from the CPU epochs, since tracing slows the process.
#
#   bench/readpath.sh [--files 4] [--file-mib 128] [--rounds 3]
#                     [--modes "standalone cluster-local cluster-peer"]
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=${GRANARY_BUILD:-$here/build}
bin=$build/bin
counter_lib=$build/lib/libgranary_alloc_count.so
files=4 file_mib=128 rounds=3 modes="standalone cluster-local cluster-peer"
while [ $# -gt 0 ]; do
  case "$1" in
    --files) files=$2; shift 2 ;;
    --file-mib) file_mib=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    *) echo "readpath.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
die() { echo "readpath.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root: the epochs need echo 3 > /proc/sys/vm/drop_caches"
command -v strace >/dev/null || die "strace missing (apt-get install strace)"
for b in granary-fuse granary-meta granary-worker granary-store granary-bench; do
  [ -x "$bin/$b" ] || die "$bin/$b missing: build first, or set GRANARY_BUILD"
done
[ -f "$counter_lib" ] || die "$counter_lib missing: build first"

work=$build/bench-readpath
s3dir=$work/s3
bucket=bench ds=rp
mkdir -p "$work/logs" "$work/mnt"
pids=()
fuse_pid=
cleanup() {
  set +e
  mountpoint -q "$work/mnt" && { kill -TERM "$fuse_pid"; sleep 1; fusermount3 -u "$work/mnt" || umount -l "$work/mnt"; }
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  "$here/scripts/s3-server.sh" stop "$s3dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

. "$here/bench/lib.sh" # free_port, wait_for, drop_caches
cpu_s() { # PID... -> their user + system CPU seconds, summed
  local p t=0
  for p in "$@"; do t=$(awk -v t="$t" -v hz="$(getconf CLK_TCK)" '{ print t + ($14 + $15) / hz }' "/proc/$p/stat"); done
  echo "$t"
}
allocs() { od -An -t u8 "$work/allocs" | tr -d ' '; }
epoch() { local f; for f in "$work/mnt"/f*; do dd if="$f" of=/dev/null bs=1M status=none; done; }
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# --- the store and its data ---------------------------------------------------
eval "$("$here/scripts/s3-server.sh" start "$s3dir")"
"$here/scripts/s3-server.sh" mkbucket "$s3dir" "$bucket"
storeflags=(--store.endpoint "$GRANARY_S3_ENDPOINT" --store.credentials_file "$GRANARY_S3_CREDENTIALS")
data=$work/data
if [ ! -f "$work/.data-$files-$file_mib" ]; then
  rm -rf "$data"; mkdir -p "$data"
  for i in $(seq 1 "$files"); do head -c "$((file_mib << 20))" /dev/urandom > "$data/f$i"; done
  rm -f "$work"/.data-*; touch "$work/.data-$files-$file_mib"
fi
rm -rf "${GRANARY_S3_ROOT:?}/$bucket/$ds"
"$bin/granary-store" "${storeflags[@]}" sync "$data" "s3://$bucket/$ds/" >/dev/null
bytes=$(( files * (file_mib << 20) ))
mib=$(( bytes >> 20 ))

# --- the cluster's control plane ------------------------------------------------
meta_sock=unix://$work/meta.sock meta_pid= worker_pid= worker_port=
start_cluster() { # CACHE_DIR
  rm -rf "$work/meta-data" "$work/meta.sock"
  (umask 077
   for k in token csi worker; do echo "granary-readpath-$k-$(date +%s%N)" > "$work/$k.key"; done)
  "$bin/granary-meta" --listen "$meta_sock" --data_dir "$work/meta-data" \
    --heartbeat.interval 1s --heartbeat.expiry 5s "${storeflags[@]}" \
    --auth.csi_key_file "$work/csi.key" --auth.worker_key_file "$work/worker.key" \
    --auth.mount_key_file "$work/token.key" > "$work/logs/meta.log" 2>&1 &
  meta_pid=$!; pids+=("$meta_pid")
  wait_for 10 "$bin/granary-bench" register "$ds" --meta.address "$meta_sock" \
    --meta.key_file "$work/csi.key" --source "s3://$bucket/$ds/" 2>/dev/null ||
    die "register in granary-meta failed (log: $work/logs/meta.log)"
  worker_port=$(free_port)
  "$bin/granary-worker" --listen "127.0.0.1:$worker_port" --node_id readpath-node \
    --meta.address "$meta_sock" --cache.dir "$1" --cache.capacity 4GiB \
    --token_file "$work/token.key" --meta.key_file "$work/worker.key" "${storeflags[@]}" \
    > "$work/logs/worker.log" 2>&1 &
  worker_pid=$!; pids+=("$worker_pid")
  wait_for 30 sh -c "curl -sf http://127.0.0.1:$worker_port/metrics | grep -q '^granary_worker_datasets 1$'" ||
    die "granary-worker did not take the dataset (log: $work/logs/worker.log)"
}

mount_fuse() { # MODE CACHE_DIR
  rm -f "$work/allocs"
  local args=(--mountpoint "$work/mnt" --keep_cache false --cache.dir "$2" "${storeflags[@]}")
  if [ "$1" = standalone ]; then
    args+=(--source "s3://$bucket/$ds/" --cache.capacity 4GiB)
  else
    args+=(--dataset "$ds" --meta.address "$meta_sock" --token_file "$work/token.key"
           --meta.key_file "$work/token.key")
  fi
  GRANARY_ALLOC_COUNT=$work/allocs LD_PRELOAD=$counter_lib \
    "$bin/granary-fuse" "${args[@]}" > "$work/logs/fuse-$1.log" 2>&1 &
  fuse_pid=$!
  wait_for 30 mountpoint -q "$work/mnt" || { cat "$work/logs/fuse-$1.log" >&2; die "granary-fuse did not mount"; }
}
unmount_fuse() {
  kill -TERM "$fuse_pid"; wait "$fuse_pid" 2>/dev/null || true; fuse_pid=
  mountpoint -q "$work/mnt" && die "stale mount at $work/mnt"
  return 0
}
stat_of() { python3 -c "import os,sys; d=dict(w.split('=') for w in os.getxattr(sys.argv[1],'user.granary.stats').decode().split()); print(d.get(sys.argv[2], 0))" "$work/mnt" "$1"; }

echo "== readpath: $files files x $file_mib MiB ($mib MiB), dd bs=1M, $(nproc) CPUs, $rounds CPU rounds; $(git -C "$here" rev-parse --short HEAD 2>/dev/null)$(git -C "$here" diff --quiet HEAD -- fuse cache block common 2>/dev/null || echo '+changes')"
printf '%-14s %12s %12s %14s %12s %8s  %s\n' mode syscalls/MiB allocs/MiB cpu_s/GB fuse_cpu/GB MB/s "top syscalls (calls/MiB)"
for mode in $modes; do
  case "$mode" in standalone|cluster-local|cluster-peer) ;; *) die "unknown mode '$mode'" ;; esac
  cache=$work/cache-$mode
  rm -rf "$cache" "$work/cache-empty"; mkdir -p "$cache" "$work/cache-empty"
  procs=()
  if [ "$mode" != standalone ]; then
    start_cluster "$cache"
    procs=("$meta_pid" "$worker_pid")
  fi
  fuse_cache=$cache
  [ "$mode" = cluster-peer ] && fuse_cache=$work/cache-empty
  mount_fuse "$mode" "$fuse_cache"
  epoch   # cold: fills the block cache
  sleep 2 # read-ahead in flight lands
  reads0=$(stat_of reads)

  cpus=() fcpus=() rates=()
  for _ in $(seq 1 "$rounds"); do
    drop_caches
    a0=$(allocs); c0=$(cpu_s "$fuse_pid" "${procs[@]}"); f0=$(cpu_s "$fuse_pid"); t0=$(date +%s.%N)
    epoch
    t1=$(date +%s.%N); c1=$(cpu_s "$fuse_pid" "${procs[@]}"); f1=$(cpu_s "$fuse_pid"); a1=$(allocs)
    cpus+=("$(awk -v a="$c0" -v b="$c1" -v n="$bytes" 'BEGIN { printf("%.3f", (b - a) / (n / 1e9)) }')")
    fcpus+=("$(awk -v a="$f0" -v b="$f1" -v n="$bytes" 'BEGIN { printf("%.3f", (b - a) / (n / 1e9)) }')")
    rates+=("$(awk -v a="$t0" -v b="$t1" -v n="$bytes" 'BEGIN { printf("%.0f", n / 1e6 / (b - a)) }')")
  done
  alloc_mib=$(awk -v a="$a0" -v b="$a1" -v m="$mib" 'BEGIN { printf("%.1f", (b - a) / m) }')
  reads=$(( $(stat_of reads) - reads0 ))

  drop_caches
  strace -c -f -q -p "$fuse_pid" -o "$work/strace-$mode.txt" & st=$!
  sleep 1 # attached to every thread
  epoch
  sleep 0.5
  kill -INT "$st"; wait "$st" || true
  sys_mib=$(awk -v m="$mib" '$NF == "total" { printf("%.1f", $(NF-2) / m) }' "$work/strace-$mode.txt")
  top=$(awk -v m="$mib" '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" { printf("%s %.1f\n", $NF, $4 / m) }' "$work/strace-$mode.txt" |
        sort -k2 -g -r | head -5 | awk '{ printf("%s%s=%s", (NR > 1 ? " " : ""), $1, $2) }')
  unmount_fuse
  if [ "$mode" != standalone ]; then
    kill -TERM "$worker_pid" "$meta_pid"; wait "$worker_pid" "$meta_pid" 2>/dev/null || true
  fi
  printf '%-14s %12s %12s %14s %12s %8s  %s\n' "$mode" "$sys_mib" "$alloc_mib" \
    "$(printf '%s\n' "${cpus[@]}" | median)" "$(printf '%s\n' "${fcpus[@]}" | median)" \
    "$(printf '%s\n' "${rates[@]}" | median)" "$top"
  echo "  ($mode: $((reads / rounds)) FUSE reads per epoch of $mib MiB; strace table: $work/strace-$mode.txt)"
done
