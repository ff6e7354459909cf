#!/usr/bin/env bash
# What bench/compare.sh's counting proxy (granary-bench proxy) costs the
# machine per GET of a small object: s3_get_bench fetches the same objects
# from the same local S3 server directly and through the proxy, alternated,
# and each run prints objects per second and CPU milliseconds per GET of
# the S3 server, the proxy, the client (s3_get_bench) and the whole machine
# (/proc/stat: user, nice, system, irq, softirq), with the ratio of the
# proxied run to the direct one just before it.
#
#   bench/proxy-cost.sh [--objects 3000] [--kib 110] [--threads 4] [--runs 3]
#
# The objects are bench/datasets.sh's small files (~KiB, sizes +-50%); the
# server's files stay in the page cache (no drop_caches), so that what is
# measured is the request's path and not the disk.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=${GRANARY_BUILD:-$here/build}
bin=$build/bin
objects=3000 kib=110 threads=4 runs=3
while [ $# -gt 0 ]; do
  case "$1" in
    --objects) objects=$2; shift 2 ;;
    --kib) kib=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    *) echo "proxy-cost.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
for b in granary-bench s3_get_bench; do
  [ -x "$bin/$b" ] || { echo "proxy-cost.sh: $bin/$b missing: build first" >&2; exit 1; }
done

work=$build/bench-proxy-cost
s3dir=$work/s3
proxy=
cleanup() {
  [ -z "$proxy" ] || kill "$proxy" 2>/dev/null || true
  "$here/scripts/s3-server.sh" stop "$s3dir" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
rm -rf "$work"; mkdir -p "$work"
eval "$("$here/scripts/s3-server.sh" start "$s3dir")"
"$here/scripts/s3-server.sh" mkbucket "$s3dir" bench
export GRANARY_S3_ENDPOINT GRANARY_S3_CREDENTIALS GRANARY_S3_ROOT
GRANARY_BUILD=$build "$here/bench/datasets.sh" "$work/data" bench --shards 1 --shard-mib 1 \
  --small-files "$objects" --small-kib "$kib" --meta-files 1 > "$work/datasets.log"

. "$here/bench/lib.sh" # free_port, wait_for, cpu_ticks
listen=127.0.0.1:$(free_port) stats=127.0.0.1:$(free_port)
"$bin/granary-bench" proxy --listen "$listen" --upstream "${GRANARY_S3_ENDPOINT#http://}" \
  --stats_listen "$stats" > "$work/proxy.log" 2>&1 &
proxy=$!
proxy_up() { (exec 8<>"/dev/tcp/${listen%:*}/${listen#*:}") 2>/dev/null; }
wait_for 5 proxy_up || { cat "$work/proxy.log" >&2; echo "proxy-cost.sh: the proxy did not start" >&2; exit 1; }
server=$(cat "$s3dir/pid")

busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
hz=$(getconf CLK_TCK)

# one MODE ENDPOINT: one s3_get_bench run; prints its line and sets $machine_ms.
one() {
  local s0 p0 b0 c0 s1 p1 b1 c1 line me=$BASHPID # this shell reaps s3_get_bench
  s0=$(cpu_ticks "$server") p0=$(cpu_ticks "$proxy") b0=$(busy) c0=$(awk '{ print $16 + $17 }' /proc/$me/stat)
  line=$("$bin/s3_get_bench" --store.endpoint "$2" --store.credentials_file "$GRANARY_S3_CREDENTIALS" \
    --uri s3://bench/small/ --threads "$threads" --rounds 2)
  s1=$(cpu_ticks "$server") p1=$(cpu_ticks "$proxy") b1=$(busy) c1=$(awk '{ print $16 + $17 }' /proc/$me/stat)
  awk -v m="$1" -v line="$line" -v s=$((s1 - s0)) -v p=$((p1 - p0)) -v b=$((b1 - b0)) \
      -v c=$((c1 - c0)) -v hz="$hz" 'BEGIN {
    n = split(line, f, " "); for (i = 1; i <= n; i++) { split(f[i], kv, "="); v[kv[1]] = kv[2] }
    q = v["requests"]; ms = 1000 / hz / q
    printf "mode=%s objects_per_s=%.0f server_ms=%.3f proxy_ms=%.3f client_ms=%.3f machine_ms=%.3f\n",
      m, q / v["seconds"], s * ms, p * ms, c * ms, b * ms }'
}

for r in $(seq "$runs"); do
  d=$(one direct "$GRANARY_S3_ENDPOINT")
  p=$(one proxy "http://$listen")
  echo "run=$r $d"
  echo "run=$r $p"
  awk -v d="$d" -v p="$p" -v r="$r" 'function get(line, k,   n, i, f, kv) {
      n = split(line, f, " "); for (i = 1; i <= n; i++) { split(f[i], kv, "="); if (kv[1] == k) return kv[2] } }
    BEGIN { printf "run=%d proxy/direct: objects_per_s=%.2f machine_ms=%.2f (+%.3f ms per GET)\n", r,
      get(p, "objects_per_s") / get(d, "objects_per_s"), get(p, "machine_ms") / get(d, "machine_ms"),
      get(p, "machine_ms") - get(d, "machine_ms") }'
done
