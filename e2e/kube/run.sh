#!/usr/bin/env bash
# Runs one pytest file of e2e/kube/ inside the test cluster's network
# namespace, with the venv of scripts/setup.sh; pytest's status is ctest's.
# The slowest cases are listed at the end (where a suite spends its time).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
TOOLS=${GRANARY_TOOLS:-$HOME/.cache/granary-tools}
cd "$here"
exec "$here/../../scripts/kube.sh" exec "$TOOLS/venv/bin/python" -m pytest -q -s --durations=8 \
  -p no:cacheprovider --rootdir "$here" "$here/$1"
