#!/usr/bin/env bash
# GET throughput of Granary's S3 backend against N parallel curl processes
# fetching the same objects from the same local S3 server, in one run.
# Prints each run's MB/s, the medians, and the ratio granary/curl.
#
#   bench/s3-get.sh [--objects 16] [--size-mib 64] [--parallel 4] [--runs 5]
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=${GRANARY_BUILD:-$here/build}
objects=16 size_mib=64 parallel=4 runs=5
while [ $# -gt 0 ]; do
  case "$1" in
    --objects) objects=$2; shift 2 ;;
    --size-mib) size_mib=$2; shift 2 ;;
    --parallel) parallel=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    *) echo "s3-get.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done

s3dir=$build/bench-s3
trap '"$here/scripts/s3-server.sh" stop "$s3dir"' EXIT
eval "$("$here/scripts/s3-server.sh" start "$s3dir")"
"$here/scripts/s3-server.sh" mkbucket "$s3dir" bench
store=("$build/bin/granary-store" --store.endpoint "$GRANARY_S3_ENDPOINT"
       --store.credentials_file "$GRANARY_S3_CREDENTIALS")

data=$build/bench-data/get
if [ ! -f "$data/.done-$objects-$size_mib" ]; then
  rm -rf "$data"; mkdir -p "$data"
  for i in $(seq -w 0 $((objects - 1))); do
    head -c $((size_mib << 20)) /dev/urandom > "$data/obj-$i.bin"
  done
  "${store[@]}" sync "$data" s3://bench/get/
  touch "$data/.done-$objects-$size_mib"
fi

# The credentials file is ours, written by s3-server.sh.
access=$(awk -F' = ' '/aws_access_key_id/{print $2}' "$GRANARY_S3_CREDENTIALS")
secret=$(awk -F' = ' '/aws_secret_access_key/{print $2}' "$GRANARY_S3_CREDENTIALS")
total_bytes=$((objects * size_mib * 1048576))

now() { date +%s.%N; }

curl_run() {
  local t0 t1 p
  t0=$(now)
  for p in $(seq 0 $((parallel - 1))); do
    local args=()
    for i in $(seq "$p" "$parallel" $((objects - 1))); do
      args+=(-o /dev/null "$GRANARY_S3_ENDPOINT/bench/get/obj-$(printf "%0${#objects}d" "$i").bin")
    done
    curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user "$access:$secret" \
      -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
      "${args[@]}" &
  done
  wait
  t1=$(now)
  awk -v b="$total_bytes" -v a="$t0" -v z="$t1" 'BEGIN { printf "%.1f\n", b / 1e6 / (z - a) }'
}

granary_run() {
  "$build/bin/s3_get_bench" --store.endpoint "$GRANARY_S3_ENDPOINT" \
    --store.credentials_file "$GRANARY_S3_CREDENTIALS" --uri s3://bench/get/ \
    --threads "$parallel" | sed -n 's/.*mb_per_s=\([0-9.]*\).*/\1/p'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo "objects=$objects size_mib=$size_mib parallel=$parallel runs=$runs"
curl_run >/dev/null; granary_run >/dev/null # warm the server's page cache
c_all=() g_all=()
for r in $(seq 1 "$runs"); do
  c=$(curl_run); g=$(granary_run)
  echo "run $r: curl_mb_per_s=$c granary_mb_per_s=$g"
  c_all+=("$c"); g_all+=("$g")
done
c_med=$(printf '%s\n' "${c_all[@]}" | median)
g_med=$(printf '%s\n' "${g_all[@]}" | median)
ratio=$(awk -v g="$g_med" -v c="$c_med" 'BEGIN { printf "%.3f", g / c }')
echo "median: curl_mb_per_s=$c_med granary_mb_per_s=$g_med"
echo "ratio granary/curl: $ratio (target >= 0.95)"
