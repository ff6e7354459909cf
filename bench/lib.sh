# Shell helpers the benchmark scripts share (sourced, not run).

# free_port: a TCP port free on loopback now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# wait_for SECONDS CMD...: polls CMD every 0.1 s.
wait_for() {
  local n=$(( $1 * 10 )); shift
  for _ in $(seq 1 "$n"); do "$@" && return 0; sleep 0.1; done
  return 1
}
# drop_caches: clean pages written back, then every clean page dropped.
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
# cpu_ticks PID...: user + system time of the processes, their reaped
# children included (utime, stime, cutime, cstime: fields 14-17 of
# /proc/PID/stat, counted after the command name's closing parenthesis,
# which may hold spaces), in clock ticks. A process gone counts 0.
cpu_ticks() {
  local p t=0 n
  for p in "$@"; do
    n=$(awk '{ sub(/.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$p/stat" 2>/dev/null) || n=0
    t=$(( t + ${n:-0} ))
  done
  echo "$t"
}
