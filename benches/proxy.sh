#!/usr/bin/env bash
# The proxy benchmark: the appliance (release build) in front of an upstream SMTP server with
# AUTH, driven by benches/smtp_load.py, each test run against the upstream directly and through
# the appliance in the same run. Prints one line per run: rate, p50/p99, the appliance's CPU
# per session (or per message) and its peak RSS.
#
#   benches/proxy.sh [UPSTREAM] [CONCS] [SESSIONS]
#
# UPSTREAM (host:port) must accept userN@example.test / pwN for N = 1..1000, as the Haraka
# upstream of ../shared/peers does (127.0.0.1:2525). Without one, an aiosmtpd upstream
# (tests/fixtures/smtp_server.py) is started; it is slower than the appliance, so then the
# upstream bounds every rate.
set -euo pipefail
cd "$(dirname "$0")/.."
upstream=${1:-}
concs=${2:-"1 16 128"}
sessions=${3:-3000}
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

cargo build --release --quiet
if [ -z "$upstream" ]; then
  python3 tests/fixtures/smtp_server.py "$work/spool" --generated-users 1000 > "$work/up" &
  pids+=($!)
  for _ in $(seq 50); do grep -q PORT "$work/up" && break; sleep 0.1; done
  upstream="127.0.0.1:$(awk '/PORT/ {print $2}' "$work/up")"
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/bench.conf" <<CONF
smtp_auth_proxy { host = "$upstream" timeout = 30 }
ESMTP_Listener {
  SMTP_Extensions = ( "AUTH PLAIN" "AUTH LOGIN" )
  AuthPlainParameters = [ uri = "smtp_auth_proxy://" ]
  AuthLoginParameters = [ uri = "smtp_auth_proxy://" ]
  Listener_Sessions = 10000
  Listen "127.0.0.1:$port" { }
}
CONF
target/release/smtp-auth-proxy -f -c "$work/bench.conf" 2> "$work/daemon.log" &
pid=$!
pids+=($pid)
for _ in $(seq 50); do grep -q "listening on" "$work/daemon.log" && break; sleep 0.1; done
echo "# $(date -u +%FT%TZ) upstream=$upstream appliance=127.0.0.1:$port pid=$pid load=$(cut -d' ' -f1-3 /proc/loadavg)"
for c in $concs; do
  for test in "--mech plain" "--mech login" "--mech plain --msgs 10"; do
    n=$sessions
    case "$test" in *msgs*) n=$((sessions / 10)) ;; esac
    python3 benches/smtp_load.py "127.0.0.1:$port" --direct "$upstream" --pid "$pid" -c "$c" -n "$n" $test
  done
done
