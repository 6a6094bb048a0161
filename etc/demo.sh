#!/usr/bin/env bash
# The main job end to end on the sample configuration, with throwaway parts:
#   - two upstream SMTP servers with AUTH (aiosmtpd, tests/fixtures/smtp_server.py):
#     127.0.0.1:2526, the sample's fixed `host`, knows bob; 127.0.0.1:2527 knows alice;
#   - the sample datasource etc/upstreams.sqlite (SQLite through ODBC) maps alice to 2527;
#   - the appliance on etc/ecelerity.conf (127.0.0.1:2525, STARTTLS, AUTH forwarded upstream);
#   - swaks sends authenticated mail through it, and the upstreams' verdicts show.
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
"$bin" -f -c etc/ecelerity.conf 2> "$work/daemon.log" &
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

sleep 0.3
echo
echo "=== accepted by the upstreams"
for port in 2526 2527; do
  [ -s "$work/spool-$port" ] && "$py" -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    print(sys.argv[2], "login", m["login"], "from", m["from"], "to", m["to"])' "$work/spool-$port" "127.0.0.1:$port"
done
echo
echo "=== appliance log"
cat "$work/daemon.log"
