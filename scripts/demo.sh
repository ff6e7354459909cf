#!/usr/bin/env bash
# The local demo on the embedded default: installs what is missing, builds,
# starts a local S3 server, loads a sample dataset into it and reads the
# dataset back through Granary's object-store client, checking every byte.
#
#   scripts/demo.sh [--shards 8] [--shard-mib 16]
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
shards=8 shard_mib=16
while [ $# -gt 0 ]; do
  case "$1" in
    --shards) shards=$2; shift 2 ;;
    --shard-mib) shard_mib=$2; shift 2 ;;
    *) echo "demo: unknown option '$1'" >&2; exit 2 ;;
  esac
done

"$here/scripts/setup.sh"
build=$here/build
cmake -S "$here" -B "$build" -G Ninja >/dev/null
ninja -C "$build" >/dev/null

work=$build/demo
s3dir=$work/s3
trap '"$here/scripts/s3-server.sh" stop "$s3dir"' EXIT
eval "$("$here/scripts/s3-server.sh" start "$s3dir")"
"$here/scripts/s3-server.sh" mkbucket "$s3dir" demo
store=("$build/bin/granary-store" --store.endpoint "$GRANARY_S3_ENDPOINT"
       --store.credentials_file "$GRANARY_S3_CREDENTIALS")

echo "== generating $shards shards of $shard_mib MiB"
rm -rf "$work/data" && mkdir -p "$work/data/train"
for i in $(seq -w 0 $((shards - 1))); do
  head -c $((shard_mib << 20)) /dev/urandom > "$work/data/train/shard-$i.bin"
done
(cd "$work/data" && sha256sum train/* > "$work/expected.sha256")

echo "== uploading to s3://demo/ at $GRANARY_S3_ENDPOINT"
"${store[@]}" sync "$work/data" s3://demo/
"${store[@]}" ls s3://demo/train/

echo "== reading every shard back through granary-store and checking it"
t0=$(date +%s.%N)
mkdir -p "$work/read/train"
for f in "$work"/data/train/*; do
  name=train/$(basename "$f")
  "${store[@]}" get "s3://demo/$name" > "$work/read/$name"
done
t1=$(date +%s.%N)
(cd "$work/read" && sha256sum -c --quiet "$work/expected.sha256")
awk -v n="$shards" -v m="$shard_mib" -v a="$t0" -v b="$t1" \
  'BEGIN { printf "all %d shards byte-exact; read %d MiB in %.2f s (%.0f MB/s)\n", n, n*m, b-a, n*m*1.048576/(b-a) }'
