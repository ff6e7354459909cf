#!/usr/bin/env bash
# bench/compare.sh several times over, each round with the systems in
# another order, and every figure summed up across the rounds: one run on
# a machine shared with the S3 server decides little (a small-file epoch's
# files per second moves by 10-20% from one run to the next, the store's
# own CPU per file with it), and a ratio between two systems is only as
# good as the two runs it was taken from.
#
#   bench/compare-rounds.sh [--rounds 5] COMPARE-ARGS...
#
# COMPARE-ARGS go to bench/compare.sh as they are, --systems among them
# (two systems at least; --docs is refused, since every round would write
# its own section). Round r runs the systems rotated by r places, so that
# none is always first (after the datasets' load) or always last.
#
# Prints, and writes to $build/bench-rounds/rounds.md:
#   - for each figure of each system (results.tsv's keys), the median over
#     the rounds and every round's value;
#   - for each throughput figure (files/s, MB/s) and each pair of systems,
#     the ratio within each round (both systems measured in the same
#     invocation) and their median.
# Each round's results.tsv and log are kept beside it (round-N.tsv,
# round-N.log).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=${GRANARY_BUILD:-$here/build}
out=$build/bench-rounds
rounds=5
args=()
systems=

die() { echo "compare-rounds: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=${2-}; shift $(($# > 1 ? 2 : 1)) ;;
    --systems) systems=${2-}; shift $(($# > 1 ? 2 : 1)) ;;
    --docs) die "--docs: each round would write its own section; run bench/compare.sh --docs once instead" ;;
    *) args+=("$1"); shift ;;
  esac
done
case "$rounds" in '' | *[!0-9]*) die "--rounds: a positive whole number, got '$rounds'" ;; esac
[ "$rounds" -ge 1 ] || die "--rounds: a positive whole number, got '$rounds'"
read -r -a sys <<< "$systems"
[ "${#sys[@]}" -ge 2 ] || die "--systems: name two systems or more, got '$systems'"

rm -rf "$out"
mkdir -p "$out"
tsvs=()
for ((r = 0; r < rounds; r++)); do
  order=()
  for ((i = 0; i < ${#sys[@]}; i++)); do order+=("${sys[(i + r) % ${#sys[@]}]}"); done
  echo "[$(date +%T)] round $((r + 1)) of $rounds: ${order[*]}" >&2
  if ! "$here/bench/compare.sh" "${args[@]}" --systems "${order[*]}" > "$out/round-$((r + 1)).log" 2>&1; then
    die "round $((r + 1)) failed: $out/round-$((r + 1)).log"
  fi
  cp "$build/bench-compare/results.tsv" "$out/round-$((r + 1)).tsv"
  tsvs+=("$out/round-$((r + 1)).tsv")
done

cmdline="bench/compare-rounds.sh --rounds $rounds ${args[*]} --systems \"$systems\""
python3 "$here/bench/rounds_report.py" --systems "$systems" --command "$cmdline" \
  "${tsvs[@]}" > "$out/rounds.md"
cat "$out/rounds.md"
