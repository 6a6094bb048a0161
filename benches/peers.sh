#!/usr/bin/env bash
# The appliance against nginx's mail proxy on the shared peers rig (../shared/peers), side by
# side in one run: for each row of the comparison (AUTH PLAIN in clear text, AUTH PLAIN over
# STARTTLS with a full handshake, a relayed message over TLS, a relayed message in clear text)
# both run the same load, one after the other, and the table gives each side's rate, p99 and
# own CPU per operation, and ours as a ratio to nginx's.
#
#   benches/peers.sh [CONCS]          (default "128 16")
#
# The rig: its Haraka upstream (127.0.0.1:2525) and nginx (2603 clear text, 2613 STARTTLS) are
# started with the rig's own start.sh if they are not running (a first start installs what the
# rig needs), and stopped again at the end if this script started them. Ours is the release
# build (built here), one process with a clear-text Listen and a STARTTLS Listen, forwarding
# AUTH to the same upstream; it is stopped at the end. The load driver is the rig's load.py.
#
# CPU per operation: utime + stime from /proc (nginx: master and worker; its auth_http helper,
# which only routes, is shown apart in brackets and not in the ratio; ours: the process),
# divided by the sessions (login rows) or messages (message rows: 10 per login, so a tenth of
# the login is included). Rates are operations per second; p99 is the whole session's.
#
# Environment:
#   ROUNDS=1          rounds; each figure is the median, the order of the two sides alternates
#   N=4000 MAILN=400  sessions per login run, per message run (10 messages each)
#   MAXS=30           bound on each run's wall time
#   THREADS=          SMTP_AUTH_PROXY_THREADS for ours (unset: the daemon's default)
#   MESSAGES=upstream how ours takes the client's message: `upstream` (deliver_through_upstream =
#                     true: the synchronous bridge through the AUTH upstream session, as nginx
#                     does), `spool` (the default: the spool answers, and the queue delivers to
#                     the same upstream; its CPU is counted until the queue is empty), or both
#   CERT= KEY=        our certificate and key (default: Debian's snakeoil RSA-2048, as nginx's)
#   RESUME=1          adds a row: AUTH PLAIN over STARTTLS with resumed handshakes
#   PEERS=../shared/peers   the rig;  OUT=file   raw load.py lines (default: a temp file)
set -uo pipefail
cd "$(dirname "$0")/.."
PEERS=${PEERS:-../shared/peers}
if [ ! -d "$PEERS" ] || [ ! -x "$PEERS/load.py" ]; then
  echo "benches/peers.sh: no peers rig at $PEERS (../shared/peers beside the clone): nothing to compare against"
  exit 0
fi
PEERS=$(cd "$PEERS" && pwd)
RUN=${RUN:-/tmp/smtp-rig}
export RUN
CONCS=${1:-"128 16"}
ROUNDS=${ROUNDS:-1}; N=${N:-4000}; MAILN=${MAILN:-400}; MAXS=${MAXS:-30}
MESSAGES=${MESSAGES:-upstream}
CERT=${CERT:-/etc/ssl/certs/ssl-cert-snakeoil.pem}; KEY=${KEY:-/etc/ssl/private/ssl-cert-snakeoil.key}
work=$(mktemp -d)
OUT=${OUT:-$work/raw.txt}
started_rig=()
ours=()
cleanup() {
  for p in "${ours[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  [ ${#started_rig[@]} -gt 0 ] && "$PEERS/stop.sh" "${started_rig[@]}" >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
open 2525 || started_rig+=(upstream)
open 2603 && open 2613 || started_rig+=(nginx)
if [ ${#started_rig[@]} -gt 0 ]; then
  "$PEERS/start.sh" "${started_rig[@]}" >/dev/null || { echo "the rig did not start" >&2; exit 1; }
fi
nginx_pid=$(cat "$RUN/nginx.pid") authhttp_pid=$(cat "$RUN/authhttp.pid")
upstream_pid=$(cat "$RUN/haraka-upstream.pid")

cargo build --release --quiet || exit 1
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_ours NAME [deliver_through_upstream line]: one daemon, clear text and STARTTLS Listens.
# The spool's queue delivers to the rig's upstream too (a Domain scope routes example.test
# there); its metrics endpoint (counting costs a little, so only there) tells when the queue
# is empty.
declare -A clear_port tls_port pid_of metrics_of
start_ours() {
  local name=$1 option=$2 p1 p2 pm
  p1=$(free_port); p2=$(free_port); pm=$(free_port)
  mkdir -p "$work/$name/spool"
  cat > "$work/$name.conf" <<CONF
# As the rig's ours/ecelerity-tls.conf: warnings only (nginx logs at warn), AUTH to the upstream.
smtp_auth_proxy {
  host = 127.0.0.1
  port = 2525
  timeout = 10
  debug_level = WARNING
  $option
}
Spoolbase = "$work/$name/spool"
Domain "example.test" { Gateway = "127.0.0.1:2525" }
$([ "$name" = spool ] && echo "Prometheus_Listener { Listen \"127.0.0.1:$pm\" { } }")
ESMTP_Listener {
  AuthLoginParameters = [ uri = "smtp_auth_proxy://" ]
  AuthPlainParameters = [ uri = "smtp_auth_proxy://" ]
  TLS_Certificate = "$CERT"
  TLS_Key = "$KEY"
  TLS_Protocols = "+ALL:-SSLv3:-TLSv1:-TLSv1.1"
  Listener_Sessions = 10000
  Listen "127.0.0.1:$p1" { SMTP_Extensions = ( "AUTH LOGIN" "AUTH PLAIN" ) }
  Listen "127.0.0.1:$p2" { SMTP_Extensions = ( "AUTH LOGIN" "AUTH PLAIN" "STARTTLS" ) }
}
CONF
  ${THREADS:+env SMTP_AUTH_PROXY_THREADS=$THREADS} target/release/smtp-auth-proxy -f -c "$work/$name.conf" \
    2> "$work/$name.log" &
  local pid=$!
  ours+=("$pid")
  for _ in $(seq 50); do open "$p2" && break; sleep 0.1; done
  open "$p2" || { echo "ours ($name) did not start:" >&2; cat "$work/$name.log" >&2; exit 1; }
  clear_port[$name]=$p1 tls_port[$name]=$p2 pid_of[$name]=$pid metrics_of[$name]=$pm
}
for m in $MESSAGES; do
  case $m in
    upstream) start_ours upstream "deliver_through_upstream = true" ;;
    spool) start_ours spool "" ;;
    *) echo "MESSAGES: upstream and/or spool, not $m" >&2; exit 2 ;;
  esac
done
first=${MESSAGES%% *}

# CPU ticks of a process and its children (nginx's worker is its master's child).
ticks() {
  local p sum=0 kids
  kids=$(cat /proc/"$1"/task/*/children 2>/dev/null)
  for p in "$1" $kids; do
    [ -r "/proc/$p/stat" ] || continue
    sum=$((sum + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
  done
  echo "$sum"
}
hz=$(getconf CLK_TCK)

# Messages the spool holds for the queue (0 without a spool).
queued() {
  curl -s --max-time 5 "http://127.0.0.1:$1/metrics" |
    awk '/^smtp_auth_proxy_queue_messages[ {]/ {n += $NF} END {print n + 0}'
}

# run ROW SIDE PORT PID ARGS...: one load.py run; appends
# "ROW SIDE c rate p99 us/op helper_us/op fail upstream_us/op".
run() {
  local row=$1 side=$2 port=$3 pid=$4; shift 4
  local c0 h0 u0 c1 h1 u1 line ok msgs=0 a
  for a in "$@"; do [ "${prev:-}" = --msgs ] && msgs=$a; prev=$a; done; prev=
  c0=$(ticks "$pid"); h0=$(ticks "$authhttp_pid"); u0=$(ticks "$upstream_pid")
  line=$(python3 "$PEERS/load.py" "127.0.0.1:$port" "$@" --max-seconds "$MAXS" --label "$side-$row")
  # Through the spool, a message's cost includes its delivery by the queue: wait until it is
  # empty (at most a minute) before reading the CPU.
  if [ "$side" = ours-spool ]; then
    for _ in $(seq 600); do [ "$(queued "${metrics_of[spool]}")" = 0 ] && break; sleep 0.1; done
  fi
  c1=$(ticks "$pid"); h1=$(ticks "$authhttp_pid"); u1=$(ticks "$upstream_pid")
  echo "$line" >> "$OUT"
  ok=$(grep -o ' ok=[0-9]*' <<<"$line" | head -1 | cut -d= -f2)
  local ops=$((ok * (msgs > 0 ? msgs : 1)))
  [ "$ops" -gt 0 ] || { echo "no operation finished: $line" >&2; return; }
  local helper=-
  [ "$side" = nginx ] && helper=$(((h1 - h0) * 1000000 / hz / ops))
  echo "$row $side $c $(grep -o 'rate=[0-9.]*' <<<"$line" | cut -d= -f2) \
$(grep -o 'p99=[0-9.]*' <<<"$line" | cut -d= -f2) $(((c1 - c0) * 1000000 / hz / ops)) $helper \
$(grep -o ' fail=[0-9]*' <<<"$line" | cut -d= -f2) $(((u1 - u0) * 1000000 / hz / ops))" >> "$work/rows"
}

# The rows: name, nginx port, our port kind, load.py arguments.
rows=("login-clear 2603 clear --mech plain -n $N"
      "login-tls 2613 tls --mech plain --starttls -n $N")
[ "${RESUME:-0}" = 1 ] && rows+=("login-tls-resumed 2613 tls --mech plain --starttls --resume -n $N")
rows+=("message-tls 2613 tls --mech plain --starttls --msgs 10 -n $MAILN"
       "message-clear 2603 clear --mech plain --msgs 10 -n $MAILN")

echo "# peers.sh $(date -u +%FT%TZ) CONCS=[$CONCS] ROUNDS=$ROUNDS N=$N MAILN=$MAILN THREADS=${THREADS:-default} \
MESSAGES=[$MESSAGES] cert=$(basename "$CERT") nproc=$(nproc) load=$(cut -d' ' -f1-3 /proc/loadavg)"
# Warm-up (pools, caches, the upstream's JIT), not counted.
for name in $MESSAGES; do
  python3 "$PEERS/load.py" "127.0.0.1:${tls_port[$name]}" -c 16 -n 200 --starttls --msgs 1 >/dev/null
done
python3 "$PEERS/load.py" 127.0.0.1:2613 -c 16 -n 200 --starttls --msgs 1 >/dev/null
: > "$work/rows"
for round in $(seq "$ROUNDS"); do
  for c in $CONCS; do
    for r in "${rows[@]}"; do
      read -r row nport kind args <<<"$r"
      sides=(nginx ours)
      [ $((round % 2)) = 0 ] && sides=(ours nginx)
      for side in "${sides[@]}"; do
        if [ "$side" = nginx ]; then
          run "$row" nginx "$nport" "$nginx_pid" -c "$c" $args
        else
          names=$first
          case $row in message-*) names=$MESSAGES ;; esac
          for name in $names; do
            label=ours; [ "$row" = "${row#message}" ] || label=ours-$name
            port=${clear_port[$name]}; [ "$kind" = tls ] && port=${tls_port[$name]}
            run "$row" "$label" "$port" "${pid_of[$name]}" -c "$c" $args
          done
        fi
        sleep 1
      done
    done
  done
done
echo "# end $(date -u +%FT%TZ) load=$(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$work/rows" "$CONCS" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
med = lambda xs: statistics.median(xs) if xs else float("nan")
titles = {"login-clear": "AUTH PLAIN login, clear text",
          "login-tls": "AUTH PLAIN login over STARTTLS, full handshake",
          "login-tls-resumed": "AUTH PLAIN login over STARTTLS, resumed",
          "message-tls": "relayed message over TLS (1/10 login)",
          "message-clear": "relayed message, clear text (1/10 login)"}
for c in sys.argv[2].split():
    print(f"\nc={c}: CPU us per operation (nginx: master + worker, [its auth_http helper]), rate per s, p99 ms;")
    print("the upstream's CPU per operation through each (it bounds the rates on this rig)")
    print("| row | ours us/op | nginx us/op | ours/nginx CPU | ours rate | nginx rate | ours p99 | nginx p99 | upstream us/op ours, nginx | failed |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key, title in titles.items():
        got = [r for r in rows if r[0] == key and r[2] == c]
        ng = [r for r in got if r[1] == "nginx"]
        if not ng:
            continue
        for side in sorted({r[1] for r in got if r[1] != "nginx"}):
            us = [r for r in got if r[1] == side]
            f = lambda rs, i: med([float(r[i]) for r in rs])
            label = title if side == "ours" else f"{title}, {side[5:]}"
            fails = sum(int(r[7]) for r in us + ng)
            print(f"| {label} | {f(us, 5):.0f} | {f(ng, 5):.0f} [+{f(ng, 6):.0f}] | {f(us, 5) / f(ng, 5):.2f} "
                  f"| {f(us, 3):.0f} | {f(ng, 3):.0f} | {f(us, 4):.1f} | {f(ng, 4):.1f} "
                  f"| {f(us, 8):.0f}, {f(ng, 8):.0f} | {fails} |")
PY
