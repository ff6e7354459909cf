#!/usr/bin/env bash
# Runs e2e/csi/test_registration.py from ctest: the built granary-csi's
# kubelet registration socket (GetInfo, NotifyRegistrationStatus from a
# grpcio client) and its /healthz and /readyz (curl). The tests start the
# plugin themselves, in node and controller mode, with every socket under a
# temporary directory; no meta, S3 server or root is needed. The exit status
# is pytest's, so ctest fails with it.
#
# Needs GRANARY_BIN_DIR (built binaries) and the venv of scripts/setup.sh.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
: "${GRANARY_BIN_DIR:?set by ctest}"
TOOLS=${GRANARY_TOOLS:-$HOME/.cache/granary-tools}
py=$TOOLS/venv/bin/python
if ! [ -x "$py" ]; then
  echo "run_registration_test: no python venv in $TOOLS/venv: run scripts/setup.sh" >&2
  exit 1
fi

work=$(mktemp -d /tmp/granary-csi-reg-XXXXXX)
trap 'rm -rf "$work"' EXIT

# protoc's output, the plugins' directories and logs all go under $work.
export TMPDIR="$work"
export GRANARY_PROTO_DIR="$src/api"
export PYTHONPATH="$src/e2e${PYTHONPATH:+:$PYTHONPATH}"
export GRANARY_BIN_DIR

rc=0
(cd "$work" && "$py" -m pytest -q -p no:cacheprovider --rootdir "$here" "$here/test_registration.py") || rc=$?
if [ "$rc" -ne 0 ]; then
  for log in "$work"/granary-csi-reg-*/csi.log; do
    [ -f "$log" ] || continue
    echo "--- $log (last 20 lines) ---" >&2
    tail -n 20 "$log" >&2
  done
fi
exit "$rc"
