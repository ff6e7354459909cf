#!/usr/bin/env bash
# Runs every test on a fresh or warm machine: installs what is missing
# (scripts/setup.sh), builds, then runs the unit and integration tests
# through ctest (integration tests start their own S3 server).
#
#   scripts/test.sh            everything
#   scripts/test.sh -L unit    only the unit tests (ctest arguments pass through)
# GRANARY_SANITIZE=1 builds with AddressSanitizer and UBSan into build-asan/.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/setup.sh"

. "$here/scripts/compiler-cache.sh"

build=$here/build
flags=("${cache_flags[@]}")
if [ "${GRANARY_SANITIZE:-0}" = 1 ]; then
  build=$here/build-asan
  flags+=(-DGRANARY_ASAN=ON -DGRANARY_UBSAN=ON -DCMAKE_BUILD_TYPE=Debug)
fi
cmake -S "$here" -B "$build" -G Ninja "${flags[@]}" >/dev/null
ninja -C "$build"
cd "$build"
# Unit tests and fuzz corpora run side by side; e2e tests are RUN_SERIAL.
ctest --output-on-failure --timeout 900 -j "$(nproc)" "$@"
