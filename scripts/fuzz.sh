#!/usr/bin/env bash
# Fuzzes the parsers of outside input (fuzz/fuzz_*.c) with libFuzzer, each
# for a bounded time, and prints what each run did (docs/fuzzing.md).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET [TARGET...]]    default 60 s, every target
#
# Builds what is missing in build-fuzz/ (clang, -DGRANARY_FUZZ=ON: ASan,
# UBSan and libFuzzer's coverage in every library). Each target starts from
# a copy of fuzz/corpus/NAME/ in build-fuzz/fuzz-run/NAME/, so the tree's
# corpus stays as committed. A crash, leak, timeout or out-of-memory keeps
# its input in build-fuzz/fuzz-run/NAME/ (printed) and makes the exit
# status 1 once every target has run; replay it with
#   build-fuzz/bin/fuzz_NAME FILE
# and keep it in fuzz/regressions/NAME/ with the fix.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
shift || true
build=$here/build-fuzz

if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
  echo "fuzz: seconds per target must be a positive number, not '$seconds'" >&2
  exit 2
fi
if ! command -v clang >/dev/null 2>&1; then
  echo "fuzz: clang is missing: run scripts/setup.sh" >&2
  exit 2
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in "$here"/fuzz/fuzz_*.c; do
    f=${f##*/fuzz_}
    targets+=("${f%.c}")
  done
fi

if [ ! -f "$build/build.ninja" ]; then
  CC=clang cmake -S "$here" -B "$build" -G Ninja -DGRANARY_FUZZ=ON -DGRANARY_E2E=OFF >/dev/null
fi
ninja -C "$build" fuzz_targets >/dev/null

failed=0
printf '%-14s %10s %10s %8s %8s  %s\n' target runs exec/s cov ft result
for t in "${targets[@]}"; do
  bin=$build/bin/fuzz_$t
  run=$build/fuzz-run/$t
  if [ ! -x "$bin" ]; then
    echo "fuzz: no target '$t' (fuzz/fuzz_$t.c)" >&2
    exit 2
  fi
  # Inputs kept by earlier runs stay; only this run's count.
  rm -rf "$run/corpus"
  mkdir -p "$run/corpus"
  touch "$run/start"
  cp "$here/fuzz/corpus/$t"/* "$run/corpus/"
  rc=0
  "$bin" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$run/" "$run/corpus" >"$run/log" 2>&1 || rc=$?

  # The last status line ("#N ... cov: C ft: F ...") and the final stats.
  status=$(grep -E '^#[0-9]+.*cov: [0-9]+ ft: [0-9]+' "$run/log" | tail -1 || true)
  cov=$(sed -nE 's/.* cov: ([0-9]+) .*/\1/p' <<<"$status")
  ft=$(sed -nE 's/.* ft: ([0-9]+) .*/\1/p' <<<"$status")
  runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$run/log" | tail -1)
  speed=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+)/\1/p' "$run/log" | tail -1)
  found=$(find "$run" -maxdepth 1 -type f -newer "$run/start" \( -name 'crash-*' \
    -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | sort)
  result=ok
  if [ "$rc" -ne 0 ] || [ -n "$found" ]; then
    result="FAILED (exit $rc)"
    failed=1
  fi
  printf '%-14s %10s %10s %8s %8s  %s\n' "$t" "${runs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "$result"
  if [ "$result" != ok ]; then
    grep -m1 -E 'ERROR: |runtime error: |==[0-9]+== ?ERROR' "$run/log" | sed 's/^/    /' || true
    for f in $found; do
      echo "    input kept: $f"
    done
    echo "    log: $run/log"
  fi
done
exit $failed
