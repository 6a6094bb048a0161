#!/usr/bin/env bash
# What relaying costs on this machine before any SMTP work: HAProxy in TCP mode (one thread, a
# plain byte pump that parses nothing) in front of the same upstream, under the same load as
# benches/proxy.sh. Its CPU per AUTH session and per relayed message is a floor for any proxy
# that passes each command and reply through, this appliance included.
#
#   benches/relay_floor.sh [UPSTREAM] [CONCS] [SESSIONS]
#
# UPSTREAM (host:port) must accept userN@example.test / pwN, as ../shared/peers' Haraka
# upstream (127.0.0.1:2525) does. Needs Debian's haproxy.
set -euo pipefail
cd "$(dirname "$0")/.."
upstream=${1:-127.0.0.1:2525}
concs=${2:-"128"}
sessions=${3:-3000}
work=$(mktemp -d)
cleanup() { [ -f "$work/pid" ] && kill "$(cat "$work/pid")" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen smtp
  bind 127.0.0.1:$port
  server upstream $upstream
CFG
haproxy -f "$work/haproxy.cfg" -D -p "$work/pid"
pid=$(cat "$work/pid")
echo "# $(date -u +%FT%TZ) $(haproxy -v | head -1) tcp mode, 1 thread, 127.0.0.1:$port -> $upstream pid=$pid"
for c in $concs; do
  for test in "--mech plain" "--mech plain --msgs 10"; do
    n=$sessions
    case "$test" in *msgs*) n=$((sessions / 10)) ;; esac
    python3 benches/smtp_load.py "127.0.0.1:$port" --direct "$upstream" --pid "$pid" -c "$c" -n "$n" $test
  done
done
