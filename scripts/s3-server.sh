#!/usr/bin/env bash
# Starts or stops the local S3 server used by tests, benchmarks and the demo:
# versitygw (Apache-2.0) with its POSIX backend, on loopback, with
# credentials, so that every request is signed and checked.
#
#   scripts/s3-server.sh start DIR [PORT]   prints the settings as shell vars
#     (listens on 127.0.0.1, or on GRANARY_S3_BIND when set: the cluster
#     tests give the host's address on the test cluster's network)
#   scripts/s3-server.sh stop DIR
#   scripts/s3-server.sh mkbucket DIR NAME
#
# DIR holds the server's data, pid file, log and a credentials file
# (DIR/credentials, AWS shared-credentials format, mode 0600).
set -euo pipefail

TOOLS=${GRANARY_TOOLS:-$HOME/.cache/granary-tools}
ACCESS_KEY=granary-test
# A fixed test-only secret for a loopback server that holds generated data.
SECRET_KEY=granary-test-secret-0123456789

die() { echo "s3-server: $*" >&2; exit 1; }

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: $0 start|stop|mkbucket DIR [PORT|NAME]"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

bind=${GRANARY_S3_BIND:-127.0.0.1}
free_port() {
  python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$bind"
}

case "$cmd" in
start)
  port=${3:-$(free_port)}
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    cat "$dir/env"
    exit 0
  fi
  bin="$TOOLS/bin/versitygw"
  [ -x "$bin" ] || die "versitygw not found in $TOOLS/bin: run scripts/setup.sh"
  mkdir -p "$dir/root"
  umask 077
  printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' \
    "$ACCESS_KEY" "$SECRET_KEY" > "$dir/credentials"
  umask 022
  ROOT_ACCESS_KEY_ID=$ACCESS_KEY ROOT_SECRET_ACCESS_KEY=$SECRET_KEY \
    setsid "$bin" --port "$bind:$port" --keep-alive --quiet \
      --virtual-domain localhost posix "$dir/root" > "$dir/log" 2>&1 < /dev/null &
  echo $! > "$dir/pid"
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null "http://$bind:$port/"; then
      {
        echo "GRANARY_S3_ENDPOINT=http://$bind:$port"
        echo "GRANARY_S3_CREDENTIALS=$dir/credentials"
        echo "GRANARY_S3_ROOT=$dir/root"
      } > "$dir/env"
      cat "$dir/env"
      exit 0
    fi
    kill -0 "$(cat "$dir/pid")" 2>/dev/null || { cat "$dir/log" >&2; die "versitygw exited"; }
    sleep 0.1
  done
  die "versitygw did not answer on $bind:$port within 10s (log: $dir/log)"
  ;;
stop)
  if [ -f "$dir/pid" ]; then
    pid=$(cat "$dir/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/pid" "$dir/env"
  fi
  ;;
mkbucket)
  name=${3:?bucket name}
  # shellcheck disable=SC1091
  . "$dir/env"
  code=$(curl -s -o "$dir/mkbucket.out" -w '%{http_code}' -X PUT \
    --aws-sigv4 "aws:amz:us-east-1:s3" --user "$ACCESS_KEY:$SECRET_KEY" \
    -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
    "$GRANARY_S3_ENDPOINT/$name")
  case "$code" in
    200|409) ;;
    *) cat "$dir/mkbucket.out" >&2; die "create bucket '$name': HTTP $code" ;;
  esac
  ;;
*) die "unknown command '$cmd'" ;;
esac
