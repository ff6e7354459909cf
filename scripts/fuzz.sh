#!/usr/bin/env bash
# Fuzzes the parsers of outside input (fuzz/fuzz_*.c) with libFuzzer, each
# for a bounded time, as many at once as there are CPUs, and prints what each
# run did (docs/fuzzing.md).
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

. "$here/scripts/compiler-cache.sh"
if [ ! -f "$build/build.ninja" ]; then
  CC=clang cmake -S "$here" -B "$build" -G Ninja -DGRANARY_FUZZ=ON -DGRANARY_E2E=OFF \
    "${cache_flags[@]}" >/dev/null
fi
ninja -C "$build" fuzz_targets >/dev/null

# fuzz_one TARGET: fuzzes TARGET for $seconds and writes its report line (and,
# when it failed, the cause and the kept inputs) to $build/fuzz-run/TARGET/report.
fuzz_one() {
  local t=$1
  local bin=$build/bin/fuzz_$t run=$build/fuzz-run/$t
  # Inputs kept by earlier runs stay; only this run's count.
  rm -rf "$run/corpus"
  mkdir -p "$run/corpus"
  touch "$run/start"
  cp "$here/fuzz/corpus/$t"/* "$run/corpus/"
  local rc=0
  "$bin" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$run/" "$run/corpus" >"$run/log" 2>&1 || rc=$?

  # The last status line ("#N ... cov: C ft: F ...") and the final stats.
  local status cov ft runs speed found result=ok
  status=$(grep -E '^#[0-9]+.*cov: [0-9]+ ft: [0-9]+' "$run/log" | tail -1 || true)
  cov=$(sed -nE 's/.* cov: ([0-9]+) .*/\1/p' <<<"$status")
  ft=$(sed -nE 's/.* ft: ([0-9]+) .*/\1/p' <<<"$status")
  runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$run/log" | tail -1)
  speed=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+)/\1/p' "$run/log" | tail -1)
  found=$(find "$run" -maxdepth 1 -type f -newer "$run/start" \( -name 'crash-*' \
    -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | sort)
  if [ "$rc" -ne 0 ] || [ -n "$found" ]; then
    result="FAILED (exit $rc)"
  fi
  {
    printf '%-14s %10s %10s %8s %8s  %s\n' "$t" "${runs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "$result"
    if [ "$result" != ok ]; then
      grep -m1 -E 'ERROR: |runtime error: |==[0-9]+== ?ERROR' "$run/log" | sed 's/^/    /' || true
      for f in $found; do
        echo "    input kept: $f"
      done
      echo "    log: $run/log"
    fi
  } >"$run/report"
}

for t in "${targets[@]}"; do
  if [ ! -x "$build/bin/fuzz_$t" ]; then
    echo "fuzz: no target '$t' (fuzz/fuzz_$t.c)" >&2
    exit 2
  fi
done

# As many targets at once as there are CPUs (GRANARY_FUZZ_JOBS to change).
jobs=${GRANARY_FUZZ_JOBS:-$(nproc)}
running=0
for t in "${targets[@]}"; do
  rm -f "$build/fuzz-run/$t/report"
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  fuzz_one "$t" &
  running=$((running + 1))
done
wait

failed=0
printf '%-14s %10s %10s %8s %8s  %s\n' target runs exec/s cov ft result
for t in "${targets[@]}"; do
  report=$build/fuzz-run/$t/report
  if [ -f "$report" ]; then
    cat "$report"
    grep -q '^    log: ' "$report" && failed=1
  else
    printf '%-14s did not report\n' "$t"
    failed=1
  fi
done
exit $failed
