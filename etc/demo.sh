#!/usr/bin/env bash
# The main job end to end on the sample configuration, with throwaway parts:
#   - two upstream SMTP servers with AUTH (aiosmtpd, tests/fixtures/smtp_server.py):
#     127.0.0.1:2526, the sample's fixed `host`, knows bob; 127.0.0.1:2527 knows alice;
#   - the sample datasource etc/upstreams.sqlite (SQLite through ODBC) maps alice to 2527;
#   - the appliance on etc/ecelerity.conf (127.0.0.1:2525, STARTTLS, AUTH forwarded upstream),
#     with a spool of its own and the recipients' domain, example.net, routed to a next hop
#     on 127.0.0.1:2528 that is down at first;
#   - swaks sends authenticated mail through it: the upstreams' verdicts show, the accepted
#     messages wait in the queue, and once the next hop is up they are delivered.
# Everything is stopped at the end. Run from the repository, after `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/smtp-auth-proxy
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# The sample datasource: schema from etc/upstreams.sql, one row.
rm -f etc/upstreams.sqlite
sqlite3 etc/upstreams.sqlite < etc/upstreams.sql
sqlite3 etc/upstreams.sqlite "INSERT INTO auth_servers VALUES ('alice@example.com', '127.0.0.1:2527');"

# A Python that can import aiosmtpd: the first python3 on the PATH, else Debian's own (where
# python3-aiosmtpd lives), else the first one with aiosmtpd installed into a throwaway
# directory from PyPI (a pyenv or venv python3 does not see Debian's python3-* packages).
py=""
for cand in python3 /usr/bin/python3; do
  if command -v "$cand" >/dev/null && "$cand" -c 'import aiosmtpd' 2>/dev/null; then py=$cand; break; fi
done
if [ -z "$py" ]; then
  echo "aiosmtpd is not importable here; installing it from PyPI into $work/pylib" >&2
  python3 -m pip install --quiet --target "$work/pylib" aiosmtpd >&2
  export PYTHONPATH="$work/pylib${PYTHONPATH:+:$PYTHONPATH}"
  py=python3
fi

"$py" tests/fixtures/smtp_server.py "$work/spool-2526" --port 2526 --user bob:bob-password > "$work/up1" &
pids+=($!)
"$py" tests/fixtures/smtp_server.py "$work/spool-2527" --port 2527 --user alice@example.com:alice-password > "$work/up2" &
pids+=($!)
# The sample, plus what this demo needs: its own spool and mainlog, quick retries, and a
# route for example.net (the sample itself delivers by MX).
cat > "$work/demo.conf" <<EOF
include "$PWD/etc/ecelerity.conf"
Spoolbase = "$work/spool"
Retry_Interval = 2
Max_Retry_Interval = 2
Domain "example.net" { Gateway = "127.0.0.1:2528" }
ec_logger "ec_logger" { mainlog = "$work/mainlog.ec" }
EOF
"$bin" -f -c "$work/demo.conf" 2> "$work/daemon.log" &
pids+=($!)
for _ in $(seq 50); do
  grep -q "listening on" "$work/daemon.log" && grep -q PORT "$work/up1" && grep -q PORT "$work/up2" && break
  sleep 0.1
done
cat "$work/daemon.log"
grep -q "listening on" "$work/daemon.log" || { echo "the appliance did not start (is 127.0.0.1:2525 taken?)" >&2; exit 1; }
for f in up1 up2; do
  grep -q PORT "$work/$f" || { echo "an upstream did not start (are 2526/2527 taken? is aiosmtpd installed?)" >&2; exit 1; }
done

send() { # user password
  echo
  echo "=== $1 / $2"
  swaks --server 127.0.0.1:2525 --tls --auth LOGIN --auth-user "$1" --auth-password "$2" \
        --from demo@example.com --to someone@example.net --header "Subject: via smtp-auth-proxy" \
        --hide-informational 2>&1 | grep -E '^(<-|<~|<\*|\*\*\*)' | grep -vE '^<~  250-' || true
}
send alice@example.com alice-password   # upstream chosen by the datasource: 2527
send bob bob-password                   # no row: the sample's fixed host, 2526
send bob wrong-password                 # the upstream says no: 535

echo
echo "=== the queue: accepted, the next hop (127.0.0.1:2528) down"
sleep 0.5
"$bin" queue -c "$work/demo.conf" list

echo
echo "=== the next hop comes up; the queue delivers at the next retry"
"$py" tests/fixtures/smtp_server.py "$work/spool-2528" --port 2528 > "$work/hop" &
pids+=($!)
for _ in $(seq 100); do
  [ -s "$work/spool-2528" ] && [ "$(wc -l < "$work/spool-2528")" -ge 2 ] && break
  sleep 0.1
done
sleep 0.2
"$bin" queue -c "$work/demo.conf" list

echo
echo "=== delivered to the next hop"
for port in 2528; do
  [ -s "$work/spool-$port" ] && "$py" -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    print(sys.argv[2], "from", m["from"], "to", m["to"])' "$work/spool-$port" "127.0.0.1:$port"
done
echo
echo "=== mainlog (Momentum's R, T and D records)"
cat "$work/mainlog.ec"
echo
echo "=== appliance log"
cat "$work/daemon.log"
