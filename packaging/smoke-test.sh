#!/usr/bin/env bash
# Builds the packages, installs the .deb, and runs the installed daemon as a site would:
# --check-config on the installed conffile, start, an authenticated message with swaks,
# SIGHUP with a valid and an invalid configuration, stop; then lists the .rpm.
# Needs root (dpkg), cargo-deb and cargo-generate-rpm, rpm, swaks, python3 with aiosmtpd.
# The runtime part uses a copy of the conffile on free ports (other services may hold 2525).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

cargo build --release --quiet
cargo deb --no-build --quiet
cargo generate-rpm
deb=$(ls -t target/debian/smtp-auth-proxy_*.deb | head -1)
rpm=$(ls -t target/generate-rpm/smtp-auth-proxy-*.rpm | head -1)
# dpkg -i, as the packaged thing is installed; apt-get then pulls what it depends on.
$SUDO dpkg -i "$deb" || $SUDO apt-get install -f -y -q
dpkg -s smtp-auth-proxy | grep -q "Status: install ok installed"
bin=/usr/sbin/smtp-auth-proxy
$bin --version
$bin --check-config -c /etc/smtp-auth-proxy/ecelerity.conf
id smtp-auth-proxy
test -s /var/lib/smtp-auth-proxy/upstreams.sqlite

work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() { $SUDO kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
listen=$(free_port)
upstream=$(free_port)

# A throwaway upstream with AUTH, and a syslog socket to read the daemon's log from.
python3 tests/fixtures/smtp_server.py "$work/spool" --port "$upstream" --user carol:secret \
    > "$work/up" 2> "$work/up.err" &
pids+=($!)
python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1])
import os; os.chmod(sys.argv[1], 0o666)
with open(sys.argv[2], "a", buffering=1) as f:
    while True: f.write(s.recv(8192).decode(errors="replace") + "\n")
' "$work/log.sock" "$work/syslog" &
pids+=($!)

conf="$work/ecelerity.conf"
sed -e "s/127.0.0.1:2525/127.0.0.1:$listen/" -e "s/127.0.0.1:2526/127.0.0.1:$upstream/" \
    /etc/smtp-auth-proxy/ecelerity.conf > "$conf"
printf 'Security { user = smtp-auth-proxy group = smtp-auth-proxy }\n' >> "$conf"
# The recipients' domain goes to the throwaway server (the sample delivers by MX).
printf 'Domain "example.net" { Gateway = "127.0.0.1:%s" }\n' "$upstream" >> "$conf"
for _ in $(seq 50); do grep -q PORT "$work/up" 2>/dev/null && break; sleep 0.1; done

$SUDO env SMTP_AUTH_PROXY_SYSLOG="$work/log.sock" $bin -c "$conf" --pid-file "$work/pid"
pid=$(cat "$work/pid")
pids+=("$pid")
# Log lines reach syslog from the daemon's log thread, a moment after it is ready.
for _ in $(seq 50); do grep -q "listening on 127.0.0.1:$listen" "$work/syslog" && break; sleep 0.1; done
grep -q "listening on 127.0.0.1:$listen" "$work/syslog"
grep -q "^Uid:.*$(id -u smtp-auth-proxy)" "/proc/$pid/status"

send() {
  swaks --server "127.0.0.1:$listen" --tls --auth LOGIN --auth-user carol --auth-password secret \
        --from carol@example.com --to someone@example.net --hide-all --timeout 20
}
# The queue delivers after the client's 250: wait for the message count to reach $1.
delivered() {
  for _ in $(seq 100); do
    [ "$(wc -l < "$work/spool" 2>/dev/null || echo 0)" -ge "$1" ] && return 0
    sleep 0.1
  done
  echo "the queue did not deliver $1 message(s):"; $bin queue -c "$conf" list; return 1
}
send
delivered 1
# Spooled and delivered by the service user; the mainlog has the reception and delivery.
test "$(stat -c %U /var/spool/smtp-auth-proxy/queue)" = smtp-auth-proxy
grep -q "@R@someone@example.net@" /var/log/smtp-auth-proxy/mainlog.ec
for _ in $(seq 50); do grep -q "@D@example.net@" /var/log/smtp-auth-proxy/mainlog.ec && break; sleep 0.1; done
grep -q "@D@example.net@" /var/log/smtp-auth-proxy/mainlog.ec
for _ in $(seq 50); do $bin queue -c "$conf" list | grep -q "Mail queue is empty" && break; sleep 0.1; done
$bin queue -c "$conf" list | grep -q "Mail queue is empty"

# SIGHUP with an invalid file: logged, and the old configuration serves on.
cp "$conf" "$work/good.conf"
printf 'ESMTP_Listener { Open_Relay = perhaps }\n' >> "$conf"
$SUDO kill -HUP "$pid"
for _ in $(seq 50); do grep -q "Reconfigure failed" "$work/syslog" && break; sleep 0.1; done
grep "Reconfigure failed" "$work/syslog"
send
# SIGHUP with a valid one.
cp "$work/good.conf" "$conf"
$SUDO kill -HUP "$pid"
for _ in $(seq 50); do grep -q "reconfigured" "$work/syslog" && break; sleep 0.1; done
grep "reconfigured" "$work/syslog"
send
delivered 3

# SIGTERM: drains and exits.
$SUDO kill -TERM "$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
! kill -0 "$pid" 2>/dev/null
for _ in $(seq 50); do grep -q "stopped" "$work/syslog" && break; sleep 0.1; done
grep -q "stopped" "$work/syslog"

rpm -qpl "$rpm"
echo "package smoke test: ok"
