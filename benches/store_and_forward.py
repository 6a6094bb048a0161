#!/usr/bin/env python3
"""Store and forward, measured: the appliance's spool against its synchronous bridge and
against Postfix relaying to the same next hop, side by side in one run.

    benches/store_and_forward.py [--next-hop HOST:PORT] [-c 128] [-n 300] [--msgs 10]
                                 [--rounds 1] [--warmup 1] [--modes spool-auth,sync-auth,spool,postfix]

The next hop must take mail for example.test and, for the AUTH modes, accept AUTH PLAIN for
userN@example.test / pwN (the Haraka upstream of ../shared/peers on 127.0.0.1:2525 does).
Without --next-hop an aiosmtpd next hop (tests/fixtures/smtp_server.py) is started; it is
slower than everything measured here, so it then bounds every rate.

Modes, each loaded by benches/smtp_load.py (c clients, n sessions of `msgs` messages each):
  spool-auth  the appliance: AUTH PLAIN checked by the next hop, mail spooled, delivered by the
              queue to the next hop (a Domain scope routes example.test there)
  sync-auth   the same with deliver_through_upstream = true: mail through the AUTH session
  spool       the appliance as a relay (relay_hosts, no AUTH), spooled and delivered
  postfix     Debian's Postfix as a relay (mynetworks, no AUTH), relayhost the next hop,
              its queue on the same disk as the appliance's spool

Each mode's server first takes one unmeasured pass of the same load (--warmup 0: none), as a
daemon that has run a while has: spool files to reuse, next-hop connections open.

For each mode it prints: accepted messages/s, session latency, CPU per message from the start
of the load until the queue is empty again (the appliance: total, and split by thread into
acceptance = serving threads, queue = the queue manager's deliveries, spool = group commit
and its syncs; Postfix: master and every process it ran), syncs per message (the appliance's
own counts), the largest queue seen and how long it took to drain after the load ended.
"""
import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import smtp_load  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
BIN = os.path.join(ROOT, "target", "release", "smtp-auth-proxy")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def stat_fields(path):
    with open(path) as f:
        text = f.read()
    comm = text[text.index("(") + 1:text.rindex(")")]
    return comm, text.rsplit(")", 1)[1].split()


def thread_cpu(pid):
    """CPU seconds by thread name group: acceptance, queue, spool, other."""
    groups = {"acceptance": 0.0, "queue": 0.0, "spool": 0.0, "other": 0.0}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            comm, f = stat_fields(f"/proc/{pid}/task/{tid}/stat")
        except (FileNotFoundError, ProcessLookupError):
            continue
        cpu = (int(f[11]) + int(f[12])) / TICK
        if comm.startswith("serve-") or comm == "smtp-auth-proxy":
            groups["acceptance"] += cpu
        elif comm == "queue":
            groups["queue"] += cpu
        elif comm.startswith("spool-"):
            groups["spool"] += cpu
        else:
            groups["other"] += cpu
    return groups


def tree_cpu(root):
    """CPU seconds of a process and everything it ran: its own, its reaped children's, and
    those of its live descendants."""
    parents = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                _, f = stat_fields(f"/proc/{p}/stat")
                parents[int(p)] = (int(f[1]), f)
            except (FileNotFoundError, ProcessLookupError):
                pass
    total = 0.0
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid not in parents:
            continue
        f = parents[pid][1]
        total += (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / TICK
        todo.extend(c for c, (pp, _) in parents.items() if pp == pid)
    return total


def scrape(port, name):
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        series = line.rsplit(" ", 1)[0]
        if series == name or ("{" not in name and series.startswith(name + "{")):
            return float(line.rsplit(" ", 1)[1])
    return None


class Ours:
    def __init__(self, work, mode, next_hop):
        self.port, self.metrics = free_port(), free_port()
        auth = mode != "spool"
        conf = os.path.join(work, f"{mode}.conf")
        with open(conf, "w") as f:
            f.write(f'Spoolbase = "{work}/{mode}-spool"\n')
            f.write(f'Domain "example.test" {{ Gateway = "{next_hop}" }}\n')
            f.write('relay_hosts = ( "127.0.0.0/8" )\n' if not auth else "")
            if auth:
                bridge = "deliver_through_upstream = true" if mode == "sync-auth" else ""
                f.write(f'smtp_auth_proxy {{ host = "{next_hop}" timeout = 30 {bridge} }}\n')
            f.write("ESMTP_Listener {\n")
            if auth:
                f.write('  SMTP_Extensions = ( "AUTH PLAIN" )\n')
                f.write('  AuthPlainParameters = [ uri = "smtp_auth_proxy://" ]\n')
            f.write(f'  Listener_Sessions = 10000\n  Listen "127.0.0.1:{self.port}" {{ }}\n}}\n')
            f.write(f'Prometheus_Listener {{ Listen "127.0.0.1:{self.metrics}" {{ }} }}\n')
        self.log = open(os.path.join(work, f"{mode}.log"), "w")
        self.proc = subprocess.Popen([BIN, "-f", "-c", conf], stderr=self.log)
        self.pid = self.proc.pid
        wait_port(self.port)

    def cpu(self):
        return thread_cpu(self.pid)

    def queue(self):
        # Counters, not the queue gauge: the gauge is refreshed once a second, so right after
        # the load it can still read the empty queue of before.
        stored = scrape(self.metrics, "smtp_auth_proxy_spool_messages_stored_total") or 0
        done = sum(scrape(self.metrics, f'smtp_auth_proxy_deliveries_total{{outcome="{o}"}}') or 0
                   for o in ("delivered", "failed"))
        return stored - done

    def syncs(self):
        return [scrape(self.metrics, f"smtp_auth_proxy_spool_{n}_total") or 0
                for n in ("messages_stored", "file_syncs", "directory_syncs")]

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Postfix:
    def __init__(self, work, next_hop):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="postfix-", dir=work)
        os.chmod(self.dir, 0o755)
        os.makedirs(os.path.join(self.dir, "queue"))
        os.makedirs(os.path.join(self.dir, "data"))
        shutil.chown(os.path.join(self.dir, "data"), "postfix")
        host, port = next_hop.rsplit(":", 1)
        with open(os.path.join(self.dir, "main.cf"), "w") as f:
            f.write(f"""compatibility_level = 3.6
queue_directory = {self.dir}/queue
data_directory = {self.dir}/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.bench
mydestination =
mynetworks = 127.0.0.0/8
relayhost = [{host}]:{port}
maillog_file_prefixes = {self.dir}
maillog_file = {self.dir}/maillog
alias_maps =
alias_database =
smtp_tls_security_level = none
smtpd_tls_security_level = none
default_process_limit = 200
smtpd_client_connection_count_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_connection_rate_limit = 0
""")
        services = [("pickup", "n", "1"), ("cleanup", "n", "0"), ("qmgr", "n", "1"),
                    ("rewrite", "-", "-"), ("bounce", "-", "0"), ("defer", "-", "0"),
                    ("trace", "-", "0"), ("verify", "-", "1"), ("proxymap", "-", "-"),
                    ("smtp", "-", "-"), ("relay", "-", "-"), ("showq", "n", "-"),
                    ("error", "-", "-"), ("retry", "-", "-"), ("discard", "-", "-"),
                    ("anvil", "-", "1"), ("scache", "-", "1")]
        programs = {"rewrite": "trivial-rewrite", "defer": "bounce", "trace": "bounce",
                    "relay": "smtp", "retry": "error"}
        with open(os.path.join(self.dir, "master.cf"), "w") as f:
            f.write(f"127.0.0.1:{self.port} inet n - n - - smtpd\n")
            for name, private, limit in services:
                f.write(f"{name} unix {private} - n - {limit} {programs.get(name, name)}\n")
            f.write("postlog unix-dgram n - n - 1 postlogd\n")
        subprocess.run(["postfix", "-c", self.dir, "start"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        with open(os.path.join(self.dir, "queue", "pid", "master.pid")) as f:
            self.pid = int(f.read().strip())

    def cpu(self):
        return {"total": tree_cpu(self.pid)}

    def queue(self):
        out = subprocess.run(["postqueue", "-c", self.dir, "-j"], capture_output=True, text=True)
        return len(out.stdout.splitlines())

    def syncs(self):
        return None

    def stop(self):
        subprocess.run(["postfix", "-c", self.dir, "stop"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def total(cpu):
    return sum(cpu.values())


async def measure(server, mode, a):
    load = argparse.Namespace(conc=a.conc, sessions=a.sessions, msgs=a.msgs,
                              mech="none" if mode in ("spool", "postfix") else "plain",
                              users=1000, user_format="user{n}@example.test",
                              password_format="pw{n}")
    cpu0, syncs0 = server.cpu(), server.syncs()
    peak = 0
    done = False

    async def watch():
        nonlocal peak
        while not done:
            peak = max(peak, server.queue())
            await asyncio.sleep(0.5)

    watcher = asyncio.ensure_future(watch())
    rate, line = await smtp_load.run(f"127.0.0.1:{server.port}", load, None)
    end = time.perf_counter()
    cpu_load = server.cpu()
    done = True
    await watcher
    # Then the queue empties (the synchronous bridge has none).
    drained = None
    for _ in range(1200):
        if server.queue() == 0:
            drained = time.perf_counter() - end
            break
        await asyncio.sleep(0.25)
    cpu1, syncs1 = server.cpu(), server.syncs()
    msgs = a.sessions * a.msgs
    us = lambda s: 1e6 * s / msgs  # noqa: E731
    parts = " ".join(f"{k}={us(cpu1[k] - cpu0[k]):.0f}" for k in cpu1 if k != "total")
    out = (f"{mode:10} {line.split(' rate=')[1].split(' first_failure')[0]} "
           f"cpu={us(total(cpu1) - total(cpu0)):.0f}us/msg ({parts or 'all processes'}) "
           f"cpu_during_load={us(total(cpu_load) - total(cpu0)):.0f}us/msg "
           f"queue_peak={peak:.0f} drained_after={'%.1fs' % drained if drained is not None else 'no'}")
    if syncs1 and syncs0:
        stored = syncs1[0] - syncs0[0]
        if stored:
            out += (f" syncs/msg: file={(syncs1[1] - syncs0[1]) / stored:.2f}"
                    f" dir={(syncs1[2] - syncs0[2]) / stored:.3f}")
    if "first_failure" in line:
        out += " " + line[line.index("first_failure"):]
    return out


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--next-hop")
    ap.add_argument("-c", "--conc", type=int, default=128)
    ap.add_argument("-n", "--sessions", type=int, default=300)
    ap.add_argument("--msgs", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1, help="an unmeasured pass first (0: none)")
    ap.add_argument("--modes", default="spool-auth,sync-auth,spool,postfix")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="saf-bench-")
    os.chmod(work, 0o755)
    helper = None
    next_hop = a.next_hop
    if not next_hop:
        port = free_port()
        helper = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests/fixtures/smtp_server.py"),
                                   os.path.join(work, "hop.jsonl"), "--port", str(port),
                                   "--generated-users", "1000"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        wait_port(port)
        next_hop = f"127.0.0.1:{port}"
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} next_hop={next_hop} "
          f"c={a.conc} sessions={a.sessions} msgs/session={a.msgs} "
          f"load={open('/proc/loadavg').read().split()[:3]}", flush=True)
    try:
        for _ in range(a.rounds):
            for mode in a.modes.split(","):
                server = Postfix(work, next_hop) if mode == "postfix" else Ours(work, mode, next_hop)
                try:
                    if a.warmup:
                        # A server that has run a while: spool files to reuse, connections
                        # open, caches filled.
                        await measure(server, mode, a)
                    print(await measure(server, mode, a), flush=True)
                finally:
                    server.stop()
    finally:
        if helper:
            helper.terminate()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
