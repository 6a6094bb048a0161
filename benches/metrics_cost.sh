#!/usr/bin/env bash
# What metrics cost: CPU per AUTH session of two daemons from the same release build in front
# of the same upstream, one without a Prometheus_Listener (nothing counted) and one with it
# (everything counted, and scraped every second meanwhile, more often than Prometheus would).
# benches/smtp_load.py drives them in turns, ROUNDS times, the order swapped every round, so
# drift in the machine's load falls on both alike. Prints smtp_load.py's line for each run,
# prefixed with off/on, the mean CPU per session of each side, and the "on" daemon's own
# count of the AUTHs it saw.
#
#   benches/metrics_cost.sh [UPSTREAM] [SESSIONS] [CONC] [ROUNDS]
#
# UPSTREAM (host:port) must accept userN@example.test / pwN for N = 1..1000; without one an
# aiosmtpd upstream (tests/fixtures/smtp_server.py) is started.
set -euo pipefail
cd "$(dirname "$0")/.."
upstream=${1:-}
sessions=${2:-2000}
conc=${3:-16}
rounds=${4:-2}
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

cargo build --release --quiet
if [ -z "$upstream" ]; then
  python3 tests/fixtures/smtp_server.py "$work/spool" --generated-users 1000 > "$work/up" 2> /dev/null &
  pids+=($!)
  for _ in $(seq 50); do grep -q PORT "$work/up" && break; sleep 0.1; done
  upstream="127.0.0.1:$(awk '/PORT/ {print $2}' "$work/up")"
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start NAME PORT EXTRA: a daemon on PORT with EXTRA configuration; sets $pid.
start() {
  cat > "$work/$1.conf" <<CONF
smtp_auth_proxy { host = "$upstream" timeout = 30 }
ESMTP_Listener {
  SMTP_Extensions = ( "AUTH PLAIN" "AUTH LOGIN" )
  AuthPlainParameters = [ uri = "smtp_auth_proxy://" ]
  AuthLoginParameters = [ uri = "smtp_auth_proxy://" ]
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

off_port=$(free_port)
start off "$off_port" ""
off_pid=$pid
on_port=$(free_port)
metrics_port=$(free_port)
start on "$on_port" "Prometheus_Listener { Listen \"127.0.0.1:$metrics_port\" { } }"
on_pid=$pid
for _ in $(seq 50); do grep -q "serving metrics on" "$work/on.log" && break; sleep 0.1; done
(while true; do curl -s -o /dev/null "http://127.0.0.1:$metrics_port/metrics"; sleep 1; done) &
pids+=($!)

echo "# $(date -u +%FT%TZ) upstream=$upstream sessions=$sessions c=$conc load=$(cut -d' ' -f1-3 /proc/loadavg)"
drive() { python3 benches/smtp_load.py "127.0.0.1:$2" --pid "$3" -c "$conc" -n "$sessions" --mech plain | sed "s/^proxy  /$1 /" | tee -a "$work/runs"; }
for round in $(seq "$rounds"); do
  if [ $((round % 2)) = 1 ]; then
    drive off "$off_port" "$off_pid"; drive on "$on_port" "$on_pid"
  else
    drive on "$on_port" "$on_pid"; drive off "$off_port" "$off_pid"
  fi
done
awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^cpu=/) { v = substr($i, 5) + 0; sum[$1] += v; n[$1]++ } }
     END { for (k in sum) printf "mean %s cpu=%.0fus/sess over %d runs\n", k, sum[k] / n[k], n[k] }' "$work/runs"
curl -s "http://127.0.0.1:$metrics_port/metrics" | grep '^smtp_auth_proxy_auth_attempts_total{mechanism="PLAIN"'
