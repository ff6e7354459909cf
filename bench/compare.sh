#!/usr/bin/env bash
# Granary side by side with s3fs-fuse, rclone mount and local disk, in one
# invocation (issue 7). Systems, each reading the same datasets from the same
# local S3 server with the same cache size and the same reader concurrency:
#
#   local            the dataset's local copy on this machine's disk (ceiling)
#   granary          granary-fuse standalone (--source s3://..., in-process cache)
#   granary-cluster  granary-meta + one granary-worker + granary-fuse --dataset
#                    on the worker's cache dir (the Kubernetes layout on one node)
#   s3fs             s3fs-fuse with its disk cache (use_cache, ensure_diskfree ...)
#   rclone           rclone mount --vfs-cache-mode full
#
# Measured for each (bench/datasets.sh makes the data):
#   cold epoch     TFRecord shards, every cache empty (the system's cache dir
#                  moved aside, echo 3 > /proc/sys/vm/drop_caches), --threads readers;
#                  beside it, raw parallel GETs of the same objects through the
#                  same proxy (s3_get_bench, --threads streams), measured just
#                  before it with the page cache dropped the same way, so that
#                  the store reads its disk in both
#   CPU per GB     user + system CPU seconds of every process of the system
#                  (granary-fuse; granary-meta and granary-worker; s3fs; rclone:
#                  /proc/PID/stat, reaped children included; not the readers,
#                  the S3 server or the proxy) over the cold epoch, the warm
#                  epochs and the epoch after drop_caches, per GB read; and
#                  s3_get_bench's own over the raw GETs. Beside them, for the
#                  cold epoch and the raw GETs, what the store (the S3 server
#                  and the proxy, which share this machine) and the readers
#                  used per GB: on a machine this small they compete with
#                  the system for the same CPUs
#   warm epoch     the same again with everything cached (median of epochs 3-5)
#   page cache     what the cold epoch left in the page cache, and what one
#                  epoch after echo 3 > drop_caches left (Granary: served from
#                  its block cache on disk; local: the disk again), each per
#                  byte read: the growth of Cached: in /proc/meminfo (the
#                  whole machine's, less the local S3 server's files), and
#                  the residency (mincore) of the mount's files and of the
#                  cache directory's files; plus that second epoch's
#                  throughput
#   accelerators   MLPerf Storage's emulation (granary-bench accel): emulated
#                  A100s, H100s and B200s training ResNet-50 (batch of 400,
#                  its compute time per accelerator type) from one record
#                  stream; for each type the largest count whose utilisation
#                  stays >= 0.9, found by doubling the count until it falls
#                  below, then bisecting (bound: --accel-max, reported when
#                  reached). Every process of the system under test runs in
#                  a memory cgroup limited to --accel-mem-mib, far below the
#                  dataset, so that the sweep measures the system and not
#                  the page cache (see "the memory cgroup" below); one epoch
#                  fills the system's disk cache first
#   dataset>cache  cache = --cache-ratio x the TFRecord set, three epochs, page
#                  cache dropped before each, so only the system's disk cache can
#                  hit; hit ratio = 1 - S3 bytes / bytes read
#   small files    one shuffled epoch over the small-file set, cold, then warm,
#                  then after drop_caches (from the disk cache), with the
#                  page-cache figures of the cold and the last epoch, and the
#                  CPU milliseconds per file of the cold epoch (the system's
#                  processes, the store, the readers, as for CPU per GB;
#                  in the log, each process of a Granary system and of the
#                  store on its own)
#   metadata       listing and stat(2) of the --meta-files entries (fresh mount)
#
# S3 traffic is counted the same way for every system: they all reach the
# server through granary-bench proxy, a splice(2) forwarder that counts the
# bytes the server sent and the requests (GET, HEAD, LIST) clients made.
#
#   bench/compare.sh [--shards 32] [--shard-mib 128] [--small-files 20000]
#       [--small-kib 110] [--meta-files 100000] [--threads 4] [--cache-ratio 0.66]
#       [--accel all|a100|h100|b200] [--accel-max 1024] [--accel-batches 20]
#       [--accel-mem-mib 1024] [--small-limit 300]
#       [--systems "local granary granary-cluster s3fs rclone"] [--cache-root DIR] [--docs]
#       [--cache-journal]
#       [--store-root DIR]
#       [--store-delay-ms 0] [--store-direct]
#       [--phases "epochs accel big small meta"]
#
# --phases runs a subset: epochs (cold, warm, page cache), accel
# (accelerators), big (dataset > cache), small (small files), meta (metadata).
#
# --store-delay-ms holds every request to the store (raw GETs included) for
# that long in the proxy, as a store across a network answers later: the
# local S3 server answers in about a millisecond, a far one in tens.
#
# --store-direct has every system (and the raw GETs) reach the S3 server
# without the proxy, for the small-file phase alone: the proxy's
# forwarding (two more loopback TCP legs per request) runs on the CPUs the
# systems use, 0.12-0.14 CPU ms per small GET in a bare GET loop
# (bench/proxy-cost.sh), which no real store puts on the node. Nothing
# counts the S3 requests then: the small-file S3 requests are left out.
#
# Every system's cache lives under --cache-root (default $work/cache, on the
# build tree's disk: the node's "NVMe"); a tmpfs there takes the disk's
# write speed out of the cold figures. A cache is not removed between
# phases and systems but moved aside, and all of them are removed at exit:
# an ext4 without a journal, as this machine's root is, will not hand out
# an inode freed a short while ago (minutes), and looks at each such free
# inode of the group, one after the other, before every file it creates.
# After one system's cache was removed, the next one's every file creation
# walked the thousands of inodes just freed, a third of granary-fuse's CPU
# in a small-file epoch (docs/benchmarks.md, "The cache's filesystem").
# A run that starts minutes after another one's exit still meets the
# inodes that one freed: --cache-journal puts the caches on a fresh ext4
# with a journal instead (no such check), made in a sparse file under
# $work, attached to a loop device with direct I/O (its own pages never
# enter the page cache) and removed at exit; the loop device costs CPU of
# its own on every cache I/O. The S3 server keeps its objects under
# --store-root (in DIR/granary-compare-s3, removed after; default $work/s3,
# the same disk as the caches): a tmpfs there stands for a
# store whose disk is not the node's, so that a cold epoch's cache writes
# and the store's reads no longer share one disk.
#
# Prints a markdown table (absolute figures and ratios to local disk) and the
# issue's goals; writes $work/results.md, $work/results.tsv and
# $work/compare.png. --docs also puts the section into docs/benchmarks.md
# (between its markers) and the chart into docs/img/compare.png.
# Needs root (drop_caches), s3fs, rclone and python3-matplotlib (scripts/setup.sh).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=${GRANARY_BUILD:-$here/build}
bin=$build/bin
tools=${GRANARY_TOOLS:-$HOME/.cache/granary-tools}
gb=${GRANARY_BUILD:-}
cmdline="${gb:+GRANARY_BUILD=${gb#"$here"/} }bench/compare.sh${*:+ $*}"
shards=32 shard_mib=128 small_files=20000 small_kib=110 meta_files=100000 threads=4
cache_ratio=0.66 accel=all accel_max=1024 accel_batches=20 accel_mem_mib=1024 small_limit=300 docs=0 cache_root= store_root=
cache_journal=0
store_delay=0
store_direct=0
systems="local granary granary-cluster s3fs rclone"
phases="epochs accel big small meta"
while [ $# -gt 0 ]; do
  case "$1" in
    --shards) shards=$2; shift 2 ;;
    --shard-mib) shard_mib=$2; shift 2 ;;
    --small-files) small_files=$2; shift 2 ;;
    --small-kib) small_kib=$2; shift 2 ;;
    --meta-files) meta_files=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --cache-ratio) cache_ratio=$2; shift 2 ;;
    --accel) accel=$2; shift 2 ;;
    --accel-max) accel_max=$2; shift 2 ;;
    --accel-mem-mib) accel_mem_mib=$2; shift 2 ;;
    --accel-batches) accel_batches=$2; shift 2 ;;
    --small-limit) small_limit=$2; shift 2 ;;
    --systems) systems=$2; shift 2 ;;
    --cache-root) cache_root=$2; shift 2 ;;
    --cache-journal) cache_journal=1; shift ;;
    --store-root) store_root=$2; shift 2 ;;
    --store-delay-ms) store_delay=$2; shift 2 ;;
    --store-direct) store_direct=1; shift ;;
    --phases) phases=$2; shift 2 ;;
    --docs) docs=1; shift ;;
    *) echo "compare.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done

die() { echo "compare.sh: $*" >&2; exit 1; }
for p in $phases; do
  case "$p" in epochs|accel|big|small|meta) ;; *) die "unknown phase '$p'" ;; esac
done
case "$accel" in all) accel_models="a100 h100 b200" ;; a100|h100|b200) accel_models=$accel ;;
  *) die "unknown accelerator '$accel' (a100, h100, b200 or all)" ;; esac
if [ "$store_direct" = 1 ]; then
  [ "$phases" = small ] || die "--store-direct: only with --phases small (the other phases count S3 traffic through the proxy)"
  [ "$store_delay" = 0 ] || die "--store-direct: --store-delay-ms needs the proxy"
fi
phase() { case " $phases " in *" $1 "*) return 0 ;; esac; return 1; }
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
[ "$(id -u)" -eq 0 ] || die "run as root: cold epochs need echo 3 > /proc/sys/vm/drop_caches"
for b in granary-fuse granary-meta granary-worker granary-store granary-tfrecord granary-bench s3_get_bench; do
  [ -x "$bin/$b" ] || die "$bin/$b missing: build first (cmake -S . -B build -G Ninja && ninja -C build), or set GRANARY_BUILD"
done
case " $systems " in *" s3fs "*) command -v s3fs >/dev/null || die "s3fs missing: scripts/setup.sh installs it" ;; esac
case " $systems " in *" rclone "*) command -v rclone >/dev/null || die "rclone missing: scripts/setup.sh installs it" ;; esac
# The chart: Debian's python3-matplotlib (scripts/setup.sh), else any python
# that has matplotlib (the tools venv, the python3 on PATH).
py=
for p in /usr/bin/python3 "$tools/venv/bin/python" python3; do
  if "$p" -c 'import matplotlib' 2>/dev/null; then py=$p; break; fi
done
[ -n "$py" ] || die "matplotlib missing: scripts/setup.sh installs python3-matplotlib"

work=$build/bench-compare
s3dir=${store_root:+$store_root/granary-compare-s3}
s3dir=${s3dir:-$work/s3}
data=$work/data
bucket=bench
cache_fs=          # the loop device of --cache-journal's ext4
cache_root_given=$cache_root
if [ -z "$cache_root" ]; then
  cache_root=$work/cache
  if mountpoint -q "$cache_root"; then umount "$cache_root"; fi # left by a killed run
  rm -rf "$cache_root" "$work/cache.img"
fi
[ "$cache_journal" = 0 ] || [ -z "$(ls -A "$cache_root" 2>/dev/null)" ] ||
  die "--cache-journal mounts its filesystem on the cache root: $cache_root must be empty"
retired=$cache_root/.retired # caches moved aside, removed at exit (see the top)
mkdir -p "$work/mnt" "$cache_root" "$work/logs"
results=$work/results.tsv
: > "$results"
: > "$work/logs/errors.log"

# --- processes and mounts: everything started here is stopped at exit -------

pids=()      # daemons started by this script (proxy, meta, worker, mounts)
cleanup() {
  set +e
  local m p
  for m in "$work"/mnt/*; do
    mountpoint -q "$m" 2>/dev/null || continue
    fusermount3 -u "$m" 2>/dev/null || { sleep 1; fusermount3 -u "$m" 2>/dev/null; } ||
      umount -l "$m" 2>/dev/null
  done
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$p" 2>/dev/null
  done
  for m in "$work"/mnt/*; do
    mountpoint -q "$m" 2>/dev/null && { umount -l "$m" 2>/dev/null; echo "compare.sh: detached a stale mount at $m" >&2; }
  done
  "$here/scripts/s3-server.sh" stop "$s3dir"
  # The objects under a store root of the caller's (a tmpfs: memory) go.
  [ -z "$store_root" ] || rm -rf "$s3dir"
  rm -rf "$retired"
  if [ -n "$cache_fs" ]; then
    umount "$cache_root" 2>/dev/null || umount -l "$cache_root"
    losetup -d "$cache_fs"
    rm -f "$work/cache.img"
  fi
  if [ -n "$cg" ]; then
    for _ in $(seq 1 50); do rmdir "$cg" 2>/dev/null && break; sleep 0.1; done
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

. "$here/bench/lib.sh" # free_port, wait_for, drop_caches, cpu_ticks
# retire DIR: moves a cache aside rather than removing it (see the top).
retire() {
  [ -e "$1" ] || return 0
  mkdir -p "$retired"
  mv "$1" "$retired/${1##*/}.$(date +%s%N)"
}
# record SYSTEM KEY VALUE: an empty value (the reader failed) is recorded as "failed".
record() { printf '%s\t%s\t%s\n' "$1" "$2" "${3:-failed}" >> "$results"; }
# A reader that fails (EIO, ENOSPC ...) is a result, not the end of the run:
# its message goes to logs/errors.log and its figure reads "failed".
errlog=$work/logs/errors.log
try() { "$@" 2>> "$errlog" || { echo "compare.sh: failed: $*" >> "$errlog"; log "FAILED: $* (see $errlog)"; }; }
kv() { sed -n "s/.*\b$1=\([0-9.]*\).*/\1/p" | tail -1; } # key < line -> value

# --- CPU time of the systems under test -----------------------------------------
#
# cpu_ticks (bench/lib.sh) counts clock ticks; these turn them into seconds
# per GB and milliseconds per file.
clk_tck=$(getconf CLK_TCK)
# cpu_per_gb TICKS BYTES: CPU seconds per GB (1e9 bytes) read, empty when
# either is missing.
cpu_per_gb() {
  [ -n "$1" ] && [ -n "$2" ] && [ "$2" != 0 ] &&
    awk -v t="$1" -v h="$clk_tck" -v b="$2" 'BEGIN { printf "%.3f", t / h / (b / 1e9) }'
}

# cpu_ms_per_file TICKS FILES: CPU milliseconds per file, empty when either
# is missing.
cpu_ms_per_file() {
  [ -n "$1" ] && [ -n "$2" ] && [ "$2" != 0 ] &&
    awk -v t="$1" -v h="$clk_tck" -v n="$2" 'BEGIN { printf "%.3f", t / h * 1000 / n }'
}

# --- the memory cgroup of the systems under test ------------------------------
#
# Every process of a system under test starts in one memory cgroup: its
# daemons (granary-fuse, granary-worker, granary-meta, s3fs, rclone) in every
# phase, and the readers of the accel phase. Page cache is charged to the
# cgroup of the process that faults the page in: a FUSE file's pages to the
# reader, the block or cache files' pages to the daemon that writes and
# reads them, the local copy's pages to the reader. The accel phase limits
# the cgroup to --accel-mem-mib (after dropping the page cache, so that no
# page charged elsewhere serves it); the other phases leave it unlimited.
# The S3 server and the counting proxy stay outside: they stand for the
# remote store.
cg= cg_v=
cg_run=()
cg_setup() {
  local own
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    grep -qw memory /sys/fs/cgroup/cgroup.subtree_control ||
      die "cgroup v2 without the memory controller enabled at /sys/fs/cgroup"
    cg=/sys/fs/cgroup/granary-bench-$$ cg_v=2
  else
    own=$(sed -n 's/^[0-9]*:memory://p' /proc/self/cgroup)
    [ -d "/sys/fs/cgroup/memory$own" ] || die "no memory cgroup (v1 /sys/fs/cgroup/memory, or v2)"
    cg=/sys/fs/cgroup/memory${own%/}/granary-bench-$$ cg_v=1
  fi
  mkdir "$cg" || die "cannot create the memory cgroup '$cg'"
  # sh joins the cgroup, then execs the command: same pid, every thread in.
  cg_run=(sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg")
}
cg_limit() { # BYTES, or max
  if [ "$cg_v" = 1 ]; then
    echo "${1/#max/-1}" > "$cg/memory.limit_in_bytes"
    echo 0 > "$cg/memory.max_usage_in_bytes"
    echo 0 > "$cg/memory.failcnt"
  else
    echo "$1" > "$cg/memory.max"
  fi
}
cg_peak() { # most memory the cgroup held since cg_limit (empty if unknown)
  if [ "$cg_v" = 1 ]; then cat "$cg/memory.max_usage_in_bytes"; else cat "$cg/memory.peak" 2>/dev/null || true; fi
}
cg_file_bytes() { # page cache charged to the cgroup now
  if [ "$cg_v" = 1 ]; then awk '$1 == "total_cache" { print $2 }' "$cg/memory.stat"
  else awk '$1 == "file" { print $2 }' "$cg/memory.stat"; fi
}
if phase accel; then cg_setup; fi

# --- the S3 server, the data, the counting proxy -----------------------------

eval "$("$here/scripts/s3-server.sh" start "$s3dir")"
"$here/scripts/s3-server.sh" mkbucket "$s3dir" "$bucket"
export GRANARY_S3_ENDPOINT GRANARY_S3_CREDENTIALS GRANARY_S3_ROOT
log "datasets: $shards x $shard_mib MiB TFRecord, $small_files small files of ~$small_kib KiB, $meta_files metadata entries"
GRANARY_BUILD=$build "$here/bench/datasets.sh" "$data" "$bucket" --shards "$shards" --shard-mib "$shard_mib" \
  --small-files "$small_files" --small-kib "$small_kib" --meta-files "$meta_files" > "$work/logs/datasets.log"
tfr_bytes=$(du -sb "$data/tfr" | cut -f1)
small_bytes=$(du -sb --apparent-size "$data/small" | cut -f1)
# Holds every dataset of a phase: the larger of the TFRecord and the small-file
# sets (a run of the small phase alone may have few shards).
cache_full=$(( (tfr_bytes > small_bytes ? tfr_bytes : small_bytes) * 5 / 4 ))
cache_small=$(awk -v b="$tfr_bytes" -v r="$cache_ratio" 'BEGIN { printf "%.0f", b * r }') # %d would wrap at 2^31 in mawk
# --cache-journal's ext4 (see the top): room for every cache of the run
# (moved aside, not removed), inode tables written now rather than by the
# kernel's lazy init during the epochs.
cache_fs_note="$(df --output=fstype "$cache_root" | tail -1)"
if [ -n "$cache_root_given" ]; then cache_fs_note+=" (--cache-root)"; else cache_fs_note+=" on the build tree's disk"; fi
if [ "$cache_journal" = 1 ]; then
  truncate -s $(( cache_full * 12 + (1 << 30) )) "$work/cache.img"
  cache_fs=$(losetup --direct-io=on --show -f "$work/cache.img") ||
    die "--cache-journal: no loop device for the caches' filesystem"
  mkfs.ext4 -q -F -O has_journal -E lazy_itable_init=0,lazy_journal_init=0 "$cache_fs" &&
    mount "$cache_fs" "$cache_root" || die "--cache-journal: cannot make or mount the ext4 on $cache_fs"
  cache_fs_note="ext4 with a journal, on a loop device (direct I/O) over a file on the build tree's disk (--cache-journal)"
fi
log "cache: $((cache_full >> 20)) MiB (cold/warm/small files), $((cache_small >> 20)) MiB = $cache_ratio x dataset (dataset > cache)"

proxy_port=$(free_port) stats_port=$(free_port)
"$bin/granary-bench" proxy --listen "127.0.0.1:$proxy_port" --upstream "${GRANARY_S3_ENDPOINT#http://}" \
  --stats_listen "127.0.0.1:$stats_port" --delay "${store_delay}ms" > "$work/logs/proxy.log" 2>&1 &
pids+=($!)
store_pids="$(cat "$s3dir/pid") $!" # the S3 server and the proxy, for cpu_ticks
endpoint=http://127.0.0.1:$proxy_port
via="through the proxy"
[ "$store_direct" = 0 ] || { endpoint=$GRANARY_S3_ENDPOINT; via="directly (--store-direct)"; }
proxy_stats() { exec 9<>"/dev/tcp/127.0.0.1/$stats_port"; cat <&9; exec 9<&-; }
proxy_up() { proxy_stats >/dev/null && (exec 8<>"/dev/tcp/127.0.0.1/$proxy_port"); }
wait_for 5 proxy_up 2>/dev/null || die "the counting proxy did not start (log: $work/logs/proxy.log)"
s3_sample() { sleep 1; proxy_stats; } # let fetches in flight land first

# The same credentials for the peers, in their own formats.
access_key=$(sed -n 's/^aws_access_key_id *= *//p' "$GRANARY_S3_CREDENTIALS")
secret_key=$(sed -n 's/^aws_secret_access_key *= *//p' "$GRANARY_S3_CREDENTIALS")
(umask 077; echo "$access_key:$secret_key" > "$work/s3fs.passwd")
export RCLONE_CONFIG_BENCHS3_TYPE=s3 RCLONE_CONFIG_BENCHS3_PROVIDER=Other
export RCLONE_CONFIG_BENCHS3_ENDPOINT=$endpoint RCLONE_CONFIG_BENCHS3_REGION=us-east-1
export RCLONE_CONFIG_BENCHS3_ACCESS_KEY_ID=$access_key RCLONE_CONFIG_BENCHS3_SECRET_ACCESS_KEY=$secret_key
export RCLONE_CONFIG_BENCHS3_FORCE_PATH_STYLE=true
storeflags=(--store.endpoint "$endpoint" --store.credentials_file "$GRANARY_S3_CREDENTIALS")

# raw_get SYSTEM: parallel GETs of the TFRecord objects through the proxy
# with the page cache dropped first (the store reads its disk, as in a cold
# epoch), recorded for SYSTEM with s3_get_bench's CPU per GB; the shell's
# reaped children's time grows by s3_get_bench's alone.
raw_get() {
  local line t0 t1
  local s0 s1
  drop_caches
  t0=$(cpu_ticks $$) s0=$(cpu_ticks $store_pids)
  line=$("$bin/s3_get_bench" "${storeflags[@]}" --uri "s3://$bucket/tfr/" --threads "$threads")
  t1=$(cpu_ticks $$) s1=$(cpu_ticks $store_pids)
  record "$1" raw_get_mbps "$(echo "$line" | kv mb_per_s)"
  record "$1" raw_get_cpu_per_gb "$(cpu_per_gb $(( t1 - t0 )) "$(echo "$line" | kv bytes)")"
  record "$1" raw_get_store_cpu_per_gb "$(cpu_per_gb $(( s1 - s0 )) "$(echo "$line" | kv bytes)")"
  log "$1 raw S3 GETs $via, $threads streams, after drop_caches: $line"
}
# raw_small_get SYSTEM: the small files' objects with --threads parallel
# whole-object GETs through the proxy, after drop_caches: the store's own
# pace for small objects (objects/s), beside SYSTEM's cold small-file epoch.
raw_small_get() {
  local line
  drop_caches
  line=$("$bin/s3_get_bench" "${storeflags[@]}" --uri "s3://$bucket/small/" --threads "$threads")
  record "$1" small_raw_get_fps "$(awk -v r="$(echo "$line" | kv requests)" \
    -v s="$(echo "$line" | kv seconds)" 'BEGIN { if (s > 0) printf "%.1f", r / s }')"
  log "$1 raw S3 GETs of the small files $via, $threads streams: $line"
}
raw=$("$bin/s3_get_bench" "${storeflags[@]}" --uri "s3://$bucket/tfr/" --threads "$threads" | kv mb_per_s)
log "raw S3 GET $via, $threads streams: $raw MB/s"
record s3 raw_get_mbps "$raw"

# --- granary-cluster's control plane -------------------------------------------

meta_sock=unix://$work/meta.sock
worker_port=
worker_pid=
meta_pid=
cluster_start_meta() {
  rm -rf "$work/meta-data" "$work/meta.sock"
  (umask 077; echo "granary-bench-cluster-token-$(date +%s%N)" > "$work/token")
  # meta's role keys; the mount role's is the cluster token, as in the chart.
  for role in csi worker; do
    (umask 077; echo "granary-bench-$role-key-$(date +%s%N)" > "$work/$role.key")
  done
  "${cg_run[@]}" "$bin/granary-meta" --listen "$meta_sock" --data_dir "$work/meta-data" \
    --heartbeat.interval 1s --heartbeat.expiry 5s "${storeflags[@]}" \
    --auth.csi_key_file "$work/csi.key" --auth.worker_key_file "$work/worker.key" \
    --auth.mount_key_file "$work/token" > "$work/logs/meta.log" 2>&1 &
  meta_pid=$!
  pids+=($meta_pid)
  for ds in tfr small meta; do
    "$bin/granary-bench" register "$ds" --meta.address "$meta_sock" \
      --meta.key_file "$work/csi.key" --source "s3://$bucket/$ds/" >&2 ||
      die "register $ds in granary-meta failed (log: $work/logs/meta.log)"
  done
}
worker_ready() { curl -sf "http://127.0.0.1:$worker_port/metrics" | grep -q '^granary_worker_datasets 3$'; }
cluster_start_worker() { # cache_dir capacity
  worker_port=$(free_port)
  "${cg_run[@]}" "$bin/granary-worker" --listen "127.0.0.1:$worker_port" --node_id bench-node \
    --meta.address "$meta_sock" --cache.dir "$1" --cache.capacity "$2" --token_file "$work/token" \
    --meta.key_file "$work/worker.key" $worker_args \
    "${storeflags[@]}" >> "$work/logs/worker.log" 2>&1 &
  worker_pid=$!
  pids+=($worker_pid)
  wait_for 30 worker_ready || die "granary-worker did not take the datasets from meta (log: $work/logs/worker.log)"
}
cluster_stop_worker() {
  [ -n "$worker_pid" ] || return 0
  kill -TERM "$worker_pid" 2>/dev/null || true
  wait "$worker_pid" 2>/dev/null || true
  worker_pid=
}
worker_metric() { curl -sf "http://127.0.0.1:$worker_port/metrics" | sed -n "s/^$1 //p"; }

# --- mounting each system --------------------------------------------------------

mnt_pid= mount_secs=0
# mount_sys SYSTEM DATASET CAPACITY MOUNTPOINT CACHEDIR; mount_secs: from
# starting the daemon to the mount's appearance (for granary-cluster: the
# mount, not the worker's start).
# GRANARY_FUSE_ARGS, GRANARY_WORKER_ARGS: more settings for granary-fuse
# (both Granary systems) and granary-worker, e.g. "--cache.write_behind 0"
# to measure a setting against its default.
fuse_args=${GRANARY_FUSE_ARGS:-}
worker_args=${GRANARY_WORKER_ARGS:-}
mount_sys() {
  local sys=$1 ds=$2 cap=$3 m=$4 c=$5 avail log=$work/logs/$1-$2.log t0
  retire "$c"; mkdir -p "$c" "$m"
  if [ "$sys" = granary-cluster ]; then cluster_start_worker "$c" "$cap"; fi
  t0=$(date +%s.%N)
  case "$sys" in
    granary)
      "${cg_run[@]}" "$bin/granary-fuse" --mountpoint "$m" --source "s3://$bucket/$ds/" "${storeflags[@]}" \
        --cache.dir "$c" --cache.capacity "$cap" $fuse_args > "$log" 2>&1 &
      ;;
    granary-cluster)
      "${cg_run[@]}" "$bin/granary-fuse" --mountpoint "$m" --dataset "$ds" --meta.address "$meta_sock" \
        --token_file "$work/token" --meta.key_file "$work/token" --cache.dir "$c" "${storeflags[@]}" $fuse_args > "$log" 2>&1 &
      ;;
    s3fs)
      # s3fs has no cache size: ensure_diskfree keeps the cache disk's free
      # space above (free now - capacity), which caps the cache at capacity.
      avail=$(df -B1M --output=avail "$c" | tail -1)
      avail=$(( avail - (cap >> 20) > 1 ? avail - (cap >> 20) : 1 ))
      "${cg_run[@]}" s3fs "$bucket:/$ds" "$m" -f -o "url=$endpoint,use_path_request_style,passwd_file=$work/s3fs.passwd" \
        -o "use_cache=$c,ensure_diskfree=$avail,parallel_count=8,multipart_size=8" \
        -o "max_stat_cache_size=200000,stat_cache_expire=3600,kernel_cache,ro" > "$log" 2>&1 &
      ;;
    rclone)
      # Debian's rclone 1.60 cannot load AWS_CA_BUNDLE over plain HTTP: unset it.
      "${cg_run[@]}" env -u AWS_CA_BUNDLE rclone mount "benchs3:$bucket/$ds" "$m" --read-only \
        --cache-dir "$c" --vfs-cache-mode full --vfs-cache-max-size "$((cap >> 20))M" --vfs-cache-poll-interval 5s \
        --vfs-read-chunk-size 4M --buffer-size 16M --dir-cache-time 1h --attr-timeout 1h \
        --use-server-modtime > "$log" 2>&1 &
      ;;
  esac
  mnt_pid=$!
  pids+=($mnt_pid)
  if ! wait_for 300 mountpoint -q "$m"; then cat "$log" >&2; die "$sys did not mount $ds"; fi
  mount_secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
}
# The processes of the system mounted now, for cpu_ticks (cg_run and env
# exec, so each started pid is the daemon's).
sys_pids() { # SYSTEM
  case "$1" in
    granary-cluster) echo "$mnt_pid $worker_pid $meta_pid" ;;
    local) ;;
    *) echo "$mnt_pid" ;;
  esac
}
umount_sys() { # SYSTEM MOUNTPOINT
  case "$1" in
    granary|granary-cluster) kill -TERM "$mnt_pid" ;;
    *) fusermount3 -u "$2" || { sleep 2; fusermount3 -u "$2"; } ;;
  esac
  wait "$mnt_pid" 2>/dev/null || true
  if mountpoint -q "$2"; then die "stale mount at $2 after stopping $1"; fi
  if [ "$1" = granary-cluster ]; then cluster_stop_worker; fi
  mnt_pid=
}
# A Granary mount's counters (its user.granary.stats), for the logs: how
# many reads waited for the store or a worker and how many found the block.
mount_counters() { # MOUNTPOINT
  python3 -c "import os,sys; print(os.getxattr(sys.argv[1],'user.granary.stats').decode())" "$1"
}
# What the system itself says it fetched from S3 (Granary only; cross-check).
self_s3_bytes() { # SYSTEM MOUNTPOINT
  case "$1" in
    granary) python3 -c "import os,sys; d=dict(w.split('=') for w in os.getxattr(sys.argv[1],'user.granary.stats').decode().split()); print(d['store_bytes'])" "$2" ;;
    granary-cluster) worker_metric granary_worker_store_bytes_total ;;
    *) echo "" ;;
  esac
}

epoch_line() { try "$bin/granary-tfrecord" read "$1" --threads "$threads" --epochs "${2:-1}" | tail -1; }

# --- page cache ----------------------------------------------------------------

cached_bytes() { awk '/^Cached:/ { printf "%.0f\n", $2 * 1024 }' /proc/meminfo; } # %d wraps in mawk
# Empty when it cannot tell (a direct_io mount's files cannot be mapped).
resident_bytes() { { "$bin/granary-bench" resident "$1" 2>> "$errlog" || true; } | kv resident_bytes; }
# ratio A B: A / B with three decimals, empty when either is missing.
ratio() { [ -n "$1" ] && [ -n "$2" ] && [ "$2" != 0 ] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
# The page cache of one epoch on this node: page_cache_mark before it,
# page_cache SYSTEM PHASE READ_BYTES MOUNT CACHEDIR after it records, per
# byte read, the growth of Cached: (less what the local S3 server's own
# files gained: the store is not on a training node) and what the mount's
# files and the cache directory's files hold in the page cache now.
pc_cached0= pc_store0=
page_cache_mark() { pc_cached0=$(cached_bytes); pc_store0=$(resident_bytes "$GRANARY_S3_ROOT"); }
page_cache() {
  local sys=$1 ph=$2 read_bytes=$3 m=$4 c=$5 grown store mnt= blk=
  store=$(resident_bytes "$GRANARY_S3_ROOT")
  store=$(( ${store:-0} - ${pc_store0:-0} ))
  grown=$(( $(cached_bytes) - pc_cached0 - store ))
  record "$sys" "${ph}_cache_growth" "$(ratio "$grown" "$read_bytes")"
  if [ "$sys" != local ]; then
    mnt=$(resident_bytes "$m"); blk=$(resident_bytes "$c")
    record "$sys" "${ph}_mount_resident" "$(ratio "$mnt" "$read_bytes")"
    record "$sys" "${ph}_cachedir_resident" "$(ratio "$blk" "$read_bytes")"
  fi
  log "$sys page cache after the $ph epoch: Cached: +$((grown >> 20)) MiB (the S3 server's files: +$((store >> 20)) MiB more) for $((${read_bytes:-0} >> 20)) MiB read${mnt:+, mount files $((mnt >> 20)) MiB, cache dir files $((${blk:-0} >> 20)) MiB resident}"
}

# --- one system ------------------------------------------------------------------

run_system() {
  local sys=$1 m=$work/mnt/$1 c=$cache_root/$1 dir line s0 s1 e c0 c1 bytes r0 r1 t0 t1
  log "== $sys"
  if [ "$sys" = granary-cluster ]; then cluster_start_meta; fi

  # 1. cold, warm, page cache (cache holds the whole set)
  if phase epochs; then
  [ "$sys" = local ] || raw_get "$sys"
  drop_caches
  if [ "$sys" = local ]; then dir=$data/tfr; else mount_sys "$sys" tfr "$cache_full" "$m" "$c"; dir=$m; fi
  s0=$(proxy_stats); page_cache_mark
  c0=$(cpu_ticks $(sys_pids "$sys")) r0=$(cpu_ticks $$) t0=$(cpu_ticks $store_pids)
  line=$(epoch_line "$dir"); s1=$(s3_sample)
  c1=$(cpu_ticks $(sys_pids "$sys")) r1=$(cpu_ticks $$) t1=$(cpu_ticks $store_pids)
  record "$sys" cold_mbps "$(echo "$line" | kv mb_per_s)"
  [ "$sys" = local ] || record "$sys" cold_cpu_per_gb "$(cpu_per_gb $(( c1 - c0 )) "$(echo "$line" | kv bytes)")"
  # The readers (the shell's reaped children) and the store, for scale.
  record "$sys" cold_reader_cpu_per_gb "$(cpu_per_gb $(( r1 - r0 )) "$(echo "$line" | kv bytes)")"
  record "$sys" cold_store_cpu_per_gb "$(cpu_per_gb $(( t1 - t0 )) "$(echo "$line" | kv bytes)")"
  record "$sys" cold_s3_bytes $(( $(echo "$s1" | kv bytes_down) - $(echo "$s0" | kv bytes_down) ))
  record "$sys" cold_s3_gets $(( $(echo "$s1" | kv gets) - $(echo "$s0" | kv gets) ))
  log "$sys cold: $line (CPU $(( c1 - c0 )) ticks of 1/$clk_tck s)"
  page_cache "$sys" cold "$(echo "$line" | kv bytes)" "$dir" "$c"
  # Warm: one epoch to settle, then the median of three (page-cache speeds
  # are the noisiest figures on a shared machine).
  c0=$(cpu_ticks $(sys_pids "$sys"))
  line=$(try "$bin/granary-tfrecord" read "$dir" --threads "$threads" --epochs 4 | tail -4)
  c1=$(cpu_ticks $(sys_pids "$sys"))
  bytes=$(echo "$line" | sed -n 's/.*\bbytes=\([0-9]*\).*/\1/p' | awk '{ t += $1 } END { if (NR) print t }')
  [ "$sys" = local ] || record "$sys" warm_cpu_per_gb "$(cpu_per_gb $(( c1 - c0 )) "$bytes")"
  line=$(echo "$line" | tail -3)
  record "$sys" warm_mbps "$(echo "$line" | sed -n 's/.*mb_per_s=\([0-9.]*\).*/\1/p' | sort -n | sed -n 2p)"
  log "$sys warm (median of 3): $(echo "$line" | sed -n 's/.*mb_per_s=\([0-9.]*\).*/\1/p' | tr '\n' ' ')MB/s"
  # Warm from the system's own cache on disk: the page cache dropped, so
  # only the block files (Granary) or the disk (local) hold the bytes.
  drop_caches
  page_cache_mark
  c0=$(cpu_ticks $(sys_pids "$sys"))
  line=$(epoch_line "$dir")
  c1=$(cpu_ticks $(sys_pids "$sys"))
  record "$sys" disk_warm_mbps "$(echo "$line" | kv mb_per_s)"
  [ "$sys" = local ] || record "$sys" disk_warm_cpu_per_gb "$(cpu_per_gb $(( c1 - c0 )) "$(echo "$line" | kv bytes)")"
  log "$sys warm from its disk cache: $line"
  page_cache "$sys" disk_warm "$(echo "$line" | kv bytes)" "$dir" "$c"
  fi
  if phase epochs; then [ "$sys" = local ] || umount_sys "$sys" "$m"; fi

  # 2. accelerators, every process of the system in the limited memory cgroup
  if phase accel; then
  local model
  drop_caches
  cg_limit $(( accel_mem_mib << 20 ))
  if [ "$sys" = local ]; then dir=$data/tfr; else mount_sys "$sys" tfr "$cache_full" "$m" "$c"; dir=$m; fi
  # One epoch first: Granary, s3fs and rclone then hold the set in their disk
  # caches, and the sweep measures them warm, as epochs after the first are.
  line=$(try "${cg_run[@]}" "$bin/granary-tfrecord" read "$dir" --threads "$threads" | tail -1)
  record "$sys" accel_fill_mbps "$(echo "$line" | kv mb_per_s)"
  log "$sys accelerators: the filling epoch in $accel_mem_mib MiB: $line"
  try "${cg_run[@]}" "$bin/granary-bench" accel "$dir" --accel "$accel" --readers "$threads" \
    --batches "$accel_batches" --max_accelerators "$accel_max" > "$work/logs/$sys-accel.log"
  for model in $accel_models; do
    line=$(grep "^accel=$model sustained" "$work/logs/$sys-accel.log" || true)
    record "$sys" "accel_${model}_sustained" "$(echo "$line" | kv sustained_at_stop_below)"
    record "$sys" "accel_${model}_bound" "$(echo "$line" | kv bound_reached)"
    line=$(grep "^accel=$model batch=" "$work/logs/$sys-accel.log" || true)
    record "$sys" "accel_${model}_per_accel" "$(echo "$line" | kv records_per_s_per_accelerator)"
    { grep "^accel=$model accelerators=" "$work/logs/$sys-accel.log" || true; } | while read -r line; do
      record "$sys" "accel_${model}_util_$(echo "$line" | kv accelerators)" "$(echo "$line" | kv utilisation)"
    done
    log "$sys $model (accelerators:utilisation): $(awk -v m="accel=$model" '$1 == m && $2 ~ /^accelerators=/ {
      sub(/.*=/, "", $2); sub(/.*=/, "", $3); printf "%s:%s ", $2, $3 }' "$work/logs/$sys-accel.log")-> $(
      grep "^accel=$model sustained" "$work/logs/$sys-accel.log" | kv sustained_at_stop_below)"
  done
  record "$sys" accel_mem_peak_mib $(( $(cg_peak || echo 0) >> 20 ))
  record "$sys" accel_mem_file_mib $(( $(cg_file_bytes || echo 0) >> 20 ))
  log "$sys accelerators: the cgroup held at most $(( $(cg_peak || echo 0) >> 20 )) MiB of its $accel_mem_mib MiB, $(( $(cg_file_bytes || echo 0) >> 20 )) MiB of page cache at the end"
  [ "$sys" = local ] || umount_sys "$sys" "$m"
  cg_limit max
  fi

  # 3. dataset larger than the cache: three epochs, page cache dropped before each
  if phase big; then
  if [ "$sys" = local ]; then dir=$data/tfr; else mount_sys "$sys" tfr "$cache_small" "$m" "$c"; dir=$m; fi
  for e in 1 2 3; do
    local self0 self1 read_bytes fetched
    drop_caches
    s0=$(proxy_stats); self0=$(self_s3_bytes "$sys" "$dir")
    line=$(epoch_line "$dir"); s1=$(s3_sample); self1=$(self_s3_bytes "$sys" "$dir")
    read_bytes=$(echo "$line" | kv bytes)
    fetched=$(( $(echo "$s1" | kv bytes_down) - $(echo "$s0" | kv bytes_down) ))
    record "$sys" "big_e${e}_mbps" "$(echo "$line" | kv mb_per_s)"
    if [ "$sys" != local ] && [ -z "$read_bytes" ]; then
      record "$sys" "big_e${e}_hit" ""
    elif [ "$sys" != local ]; then
      record "$sys" "big_e${e}_hit" "$(awk -v f="$fetched" -v b="$read_bytes" 'BEGIN { printf "%.3f", 1 - f / b }')"
      record "$sys" "big_e${e}_s3_bytes" "$fetched"
      if [ -n "$self1" ]; then
        record "$sys" "big_e${e}_self_hit" \
          "$(awk -v f="$((self1 - self0))" -v b="$read_bytes" 'BEGIN { printf "%.3f", 1 - f / b }')"
      fi
    fi
    if [ "$sys" != local ]; then record "$sys" "big_e${e}_cache_mib" $(( $(du -sb "$c" | cut -f1) >> 20 )); fi
    log "$sys dataset>cache epoch $e: $(echo "$line" | kv mb_per_s) MB/s, S3 bytes $fetched of $read_bytes read${self1:+, self-reported $((self1 - self0))}"
  done
  [ "$sys" = local ] || umount_sys "$sys" "$m"
  fi

  # 4. small files: one shuffled epoch cold, one warm, one after drop_caches
  if phase small; then
  [ "$sys" = local ] || raw_small_get "$sys"
  drop_caches
  if [ "$sys" = local ]; then dir=$data/small; else mount_sys "$sys" small "$cache_full" "$m" "$c"; dir=$m; fi
  s0=$(proxy_stats); page_cache_mark
  c0=$(cpu_ticks $(sys_pids "$sys")) r0=$(cpu_ticks $$) t0=$(cpu_ticks $store_pids)
  declare -A split0=()
  for p in $(sys_pids "$sys") $store_pids; do split0[$p]=$(cpu_ticks "$p"); done
  line=$(try "$bin/granary-bench" smallread "$dir" --list "$data/small.list" --threads "$threads" --limit "${small_limit}s")
  c1=$(cpu_ticks $(sys_pids "$sys")) r1=$(cpu_ticks $$) t1=$(cpu_ticks $store_pids)
  s1=$(s3_sample)
  nfiles=$(echo "$line" | kv files)
  if [ "$sys" != local ]; then
    split=
    for p in $(sys_pids "$sys") $store_pids; do
      split+="${split:+, }$(cat "/proc/$p/comm") $(cpu_ms_per_file $(( $(cpu_ticks "$p") - split0[$p] )) "$nfiles")"
    done
    log "$sys CPU ms per file of each process (the system's, then the store's), small files cold: $split"
  fi
  [ "$sys" = local ] || record "$sys" small_cold_cpu_ms_per_file "$(cpu_ms_per_file $(( c1 - c0 )) "$nfiles")"
  record "$sys" small_cold_store_cpu_ms_per_file "$(cpu_ms_per_file $(( t1 - t0 )) "$nfiles")"
  record "$sys" small_cold_reader_cpu_ms_per_file "$(cpu_ms_per_file $(( r1 - r0 )) "$nfiles")"
  page_cache "$sys" small_cold "$(echo "$line" | kv bytes)" "$dir" "$c"
  record "$sys" small_cold_fps "$(echo "$line" | kv files_per_s)"
  record "$sys" small_cold_mbps "$(echo "$line" | kv mb_per_s)"
  record "$sys" small_cold_partial "$(echo "$line" | kv partial)"
  if [ "$store_direct" = 1 ]; then small_s3="S3 requests not counted: --store-direct"
  else
    small_requests=$(( $(echo "$s1" | kv requests) - $(echo "$s0" | kv requests) ))
    record "$sys" small_s3_requests "$small_requests"
    small_s3="S3 requests: $small_requests, connections: $(( $(echo "$s1" | kv connections) - $(echo "$s0" | kv connections) ))"
  fi
  log "$sys small files cold: $line ($small_s3)"
  case "$sys" in granary*) log "$sys mount counters after the small-file cold epoch: $(mount_counters "$dir")" ;; esac
  line=$(try "$bin/granary-bench" smallread "$dir" --list "$data/small.list" --threads "$threads" --limit "${small_limit}s")
  record "$sys" small_warm_fps "$(echo "$line" | kv files_per_s)"
  log "$sys small files warm: $line"
  drop_caches
  page_cache_mark
  line=$(try "$bin/granary-bench" smallread "$dir" --list "$data/small.list" --threads "$threads" --limit "${small_limit}s")
  record "$sys" small_disk_warm_fps "$(echo "$line" | kv files_per_s)"
  log "$sys small files after drop_caches, from its disk cache: $line"
  page_cache "$sys" small_disk_warm "$(echo "$line" | kv bytes)" "$dir" "$c"
  [ "$sys" = local ] || umount_sys "$sys" "$m"
  fi

  # 5. metadata: listing and stat on a fresh mount
  if phase meta; then
  drop_caches
  mount_secs=0
  if [ "$sys" = local ]; then dir=$data/meta; else mount_sys "$sys" meta "$cache_full" "$m" "$c"; dir=$m; fi
  s0=$(proxy_stats)
  line=$(try "$bin/granary-bench" metawalk "$dir" --passes 3)
  s1=$(s3_sample)
  record "$sys" mount_seconds "$mount_secs"
  record "$sys" list_per_s "$(echo "$line" | kv list_per_s)"
  record "$sys" stat_first_per_s "$(echo "$line" | kv stat_first_per_s)"
  record "$sys" stat_per_s "$(echo "$line" | kv stat_per_s)"
  record "$sys" meta_s3_requests $(( $(echo "$s1" | kv requests) - $(echo "$s0" | kv requests) ))
  log "$sys metadata: $line (mount $mount_secs s, S3 requests after mount: $(( $(echo "$s1" | kv requests) - $(echo "$s0" | kv requests) )))"
  [ "$sys" = local ] || umount_sys "$sys" "$m"
  fi
  retire "$c"
}

for sys in $systems; do
  case "$sys" in local|granary|granary-cluster|s3fs|rclone) ;; *) die "unknown system '$sys'" ;; esac
  run_system "$sys"
done

# --- the report ------------------------------------------------------------------

versions=$(
  echo "$("$bin/granary-fuse" --version 2>&1 | head -1) (commit $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$here" diff --quiet HEAD -- cache fuse meta store common 2>/dev/null || echo ', with uncommitted changes'))"
  command -v s3fs >/dev/null && echo "$(s3fs --version 2>&1 | head -1)"
  command -v rclone >/dev/null && echo "$(rclone version 2>&1 | head -1)"
  echo "versitygw $(readlink "$tools/bin/versitygw" | sed 's/.*versitygw-//') (POSIX backend)"
  echo "libfuse $(pkg-config --modversion fuse3 2>/dev/null)"
)
machine="$(nproc) CPUs ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)), $(free -g | awk '/^Mem:/ { print $2 }') GiB memory, kernel $(uname -r), $(. /etc/os-release; echo "$PRETTY_NAME")"
settings="$shards TFRecord shards x $shard_mib MiB ($((tfr_bytes >> 20)) MiB), $small_files small files of ~$small_kib KiB ($((small_bytes >> 20)) MiB), $meta_files metadata entries; $threads readers; accelerators: every process of a system in a memory cgroup of $accel_mem_mib MiB, $accel_batches batches per measurement; cache $((cache_full >> 20)) MiB, dataset>cache runs $((cache_small >> 20)) MiB ($cache_ratio x), caches on $cache_fs_note"
[ "$store_delay" = 0 ] || settings="$settings; every store request held $store_delay ms in the proxy"
[ "$store_direct" = 0 ] || settings="$settings; every system and the raw GETs reach the S3 server directly, without the counting proxy (--store-direct)"
"$py" "$here/bench/compare_report.py" --results "$results" --out-md "$work/results.md" \
  --out-png "$work/compare.png" --cache-ratio "$cache_ratio" --machine "$machine" --versions "$versions" \
  --command "$cmdline" --settings "$settings" --date "$(date -u +%Y-%m-%d)"
cat "$work/results.md"
if [ "$docs" = 1 ]; then
  mkdir -p "$here/docs/img"
  cp "$work/compare.png" "$here/docs/img/compare.png"
  "$py" "$here/bench/compare_report.py" --insert "$here/docs/benchmarks.md" --out-md "$work/results.md"
  log "wrote docs/benchmarks.md (between the compare.sh markers) and docs/img/compare.png"
fi
log "done: $work/results.md, $work/compare.png, logs in $work/logs"
