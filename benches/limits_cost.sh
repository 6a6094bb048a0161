#!/usr/bin/env bash
# What shared counters cost: two daemons from the same release build in front of the same
# upstream, both with every sending limit set (high enough never to refuse) and
# Auth_Failure_Limit, one counting in-process and one in a redis-server of its own (loopback,
# no persistence). benches/smtp_load.py drives them in turns, ROUNDS times, the order swapped
# every round: AUTH-only sessions (the AUTH failure check and the success's clear) and sessions
# of ten messages (session slots, a message window per MAIL, a recipient window per RCPT).
# Prints smtp_load.py's line for each run, prefixed with local/redis, then the mean appliance
# CPU and p50 session latency of each side and test, and redis-server's own CPU per operation.
#
#   benches/limits_cost.sh [SESSIONS] [CONC] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
sessions=${1:-1000}
conc=${2:-8}
rounds=${3:-2}
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

cargo build --release --quiet
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
python3 tests/fixtures/smtp_server.py "$work/spool" --generated-users 1000 > "$work/up" 2> /dev/null &
pids+=($!)
for _ in $(seq 50); do grep -q PORT "$work/up" && break; sleep 0.1; done
upstream="127.0.0.1:$(awk '/PORT/ {print $2}' "$work/up")"
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no > /dev/null &
redis_pid=$!
pids+=($redis_pid)
for _ in $(seq 50); do redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done

# start NAME PORT EXTRA: a daemon on PORT with EXTRA configuration; sets $pid.
start() {
  cat > "$work/$1.conf" <<CONF
smtp_auth_proxy { host = "$upstream" timeout = 30 }
User_Message_Limit = ( "100000/60" "1000000/3600" )
User_Recipient_Limit = "1000000/3600"
Address_Message_Limit = "1000000/3600"
Address_Recipient_Limit = "1000000/3600"
User_Session_Limit = 1000
Address_Session_Limit = 10000
ESMTP_Listener {
  SMTP_Extensions = ( "AUTH PLAIN" )
  AuthPlainParameters = [ uri = "smtp_auth_proxy://" ]
  Auth_Failure_Limit = 10
  Listener_Sessions = 10000
  Listen "127.0.0.1:$2" { }
}
$3
CONF
  target/release/smtp-auth-proxy -f -c "$work/$1.conf" 2> "$work/$1.log" &
  pid=$!
  pids+=($pid)
  for _ in $(seq 50); do grep -qs "listening on" "$work/$1.log" && break; sleep 0.1; done
}

local_port=$(free_port)
start local "$local_port" ""
local_pid=$pid
redis_daemon_port=$(free_port)
start redis "$redis_daemon_port" "Shared_Counters { uri = \"redis://127.0.0.1:$redis_port/0\" }"
redis_daemon_pid=$pid

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
echo "# $(date -u +%FT%TZ) upstream=$upstream sessions=$sessions c=$conc load=$(cut -d' ' -f1-3 /proc/loadavg)"
# drive SIDE PORT PID ARGS...: one run, with redis-server's CPU over it for the redis side.
drive() {
  local side=$1 port=$2 pid=$3
  shift 3
  local r0
  r0=$(ticks "$redis_pid")
  python3 benches/smtp_load.py "127.0.0.1:$port" --pid "$pid" -c "$conc" "$@" \
    | sed "s/^proxy  /$side /" > "$work/line"
  local ops
  ops=$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^sessions=/) s = substr($i, 10) } END { print s }' "$work/line")
  case "$*" in *msgs*) ops=$((ops * 10)) ;; esac
  awk -v t0="$r0" -v t1="$(ticks "$redis_pid")" -v ops="$ops" -v hz="$(getconf CLK_TCK)" \
    '{ printf "%s redis_cpu=%.0fus/op\n", $0, 1e6 * (t1 - t0) / hz / (ops > 0 ? ops : 1) }' "$work/line" \
    | tee -a "$work/runs"
}
for round in $(seq "$rounds"); do
  for test in "--mech plain -n $sessions" "--mech plain --msgs 10 -n $((sessions / 10))"; do
    # shellcheck disable=SC2086
    if [ $((round % 2)) = 1 ]; then
      drive local "$local_port" "$local_pid" $test; drive redis "$redis_daemon_port" "$redis_daemon_pid" $test
    else
      drive redis "$redis_daemon_port" "$redis_daemon_pid" $test; drive local "$local_port" "$local_pid" $test
    fi
  done
done
awk '{ side = $1; test = ""; cpu = ""; p50 = ""; rcpu = ""
       for (i = 1; i <= NF; i++) {
         if ($i ~ /^test=/) test = substr($i, 6)
         if ($i ~ /^cpu=/) cpu = substr($i, 5) + 0
         if ($i ~ /^p50=/) p50 = substr($i, 5) + 0
         if ($i ~ /^redis_cpu=/) rcpu = substr($i, 11) + 0
       }
       k = side " " test; c[k] += cpu; p[k] += p50; r[k] += rcpu; n[k]++ }
     END { for (k in c) printf "mean %s cpu=%.0fus/op p50=%.1fms/session redis-server=%.0fus/op over %d runs\n",
                                k, c[k] / n[k], p[k] / n[k], r[k] / n[k], n[k] }' "$work/runs" | sort
grep -c "Shared_Counters" "$work/redis.log" | sed 's/^/redis-side Shared_Counters log lines (outages): /'
