#!/usr/bin/env bash
# Generates the benchmark datasets and loads them into the local S3 server
# (scripts/s3-server.sh; run this with its variables GRANARY_S3_ENDPOINT,
# GRANARY_S3_CREDENTIALS and GRANARY_S3_ROOT in the environment):
#
#   tfr/    TFRecord shards like ImageNet's: --shards shards of --shard-mib
#           MiB (ImageNet's are ~130 MB), records of ~110 KiB with the
#           framing and CRC32C TensorFlow writes (granary-tfrecord gen).
#           Default 32 x 128 MiB = 4 GiB.
#   small/  small files like ImageNet's JPEGs: --small-files files of about
#           --small-kib KiB (sizes +-50%) in 100 class directories, each
#           ending in its CRC32C (granary-bench smallgen), and a file list.
#           ImageNet-like is 100,000 x 110 KiB (11 GB); the default is
#           20,000 files (2.2 GB) to spare disk and time: pass
#           --small-files 100000 for the full set.
#   meta/   --meta-files empty files in 100 directories (default 100,000),
#           for listing and stat rates.
#
# The local copies stay in DATA/{tfr,small,meta} (the local-disk baseline
# reads them; DATA/small.list lists the small files). A second run with the
# same sizes skips what is loaded already.
#
#   bench/datasets.sh DATA BUCKET [--shards 32] [--shard-mib 128]
#       [--small-files 20000] [--small-kib 110] [--meta-files 100000]
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=${GRANARY_BUILD:-$here/build}
bin=$build/bin
[ $# -ge 2 ] || { echo "usage: $0 DATA BUCKET [options]" >&2; exit 2; }
data=$1 bucket=$2; shift 2
shards=32 shard_mib=128 small_files=20000 small_kib=110 meta_files=100000
while [ $# -gt 0 ]; do
  case "$1" in
    --shards) shards=$2; shift 2 ;;
    --shard-mib) shard_mib=$2; shift 2 ;;
    --small-files) small_files=$2; shift 2 ;;
    --small-kib) small_kib=$2; shift 2 ;;
    --meta-files) meta_files=$2; shift 2 ;;
    *) echo "datasets.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done
: "${GRANARY_S3_ENDPOINT:?start the S3 server first (scripts/s3-server.sh start)}"
: "${GRANARY_S3_CREDENTIALS:?}" "${GRANARY_S3_ROOT:?}"
store=("$bin/granary-store" --store.endpoint "$GRANARY_S3_ENDPOINT"
       --store.credentials_file "$GRANARY_S3_CREDENTIALS")
mkdir -p "$data"
log() { printf 'datasets: %s\n' "$*" >&2; }

# load NAME TAG GEN-COMMAND...: (re)generates DATA/NAME and syncs it to
# s3://BUCKET/NAME/ unless both carry TAG already. The marker of the S3 copy
# lives in the server's root, so a wiped server reloads.
load() {
  local name=$1 tag=$2; shift 2
  local local_mark=$data/.$name-done s3_mark=$GRANARY_S3_ROOT/.bench-$bucket-$name-done
  if [ "$(cat "$local_mark" 2>/dev/null)" != "$tag" ]; then
    log "generating $name ($tag)"
    rm -rf "${data:?}/$name" "$s3_mark"
    "$@"
    echo "$tag" > "$local_mark"
  fi
  if [ "$(cat "$s3_mark" 2>/dev/null)" != "$tag" ]; then
    log "loading $name into s3://$bucket/$name/"
    # versitygw's posix backend keeps objects as files: drop an older set.
    rm -rf "${GRANARY_S3_ROOT:?}/$bucket/$name"
    "${store[@]}" sync "$data/$name" "s3://$bucket/$name/" >/dev/null
    echo "$tag" > "$s3_mark"
  fi
}

load tfr "$shards x ${shard_mib}MiB" \
  "$bin/granary-tfrecord" gen "$data/tfr" --shards "$shards" --shard_size "${shard_mib}MiB"
load small "$small_files x ${small_kib}KiB" \
  "$bin/granary-bench" smallgen "$data/small" --files "$small_files" \
    --file_size "${small_kib}KiB" --dirs 100 --list "$data/small.list"
load meta "$meta_files empty" \
  "$bin/granary-bench" smallgen "$data/meta" --files "$meta_files" --file_size 0 --dirs 100
log "tfr: $shards x $shard_mib MiB, small: $small_files x ~$small_kib KiB, meta: $meta_files entries"
