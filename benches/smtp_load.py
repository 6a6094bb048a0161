#!/usr/bin/env python3
"""SMTP AUTH load for smtp-auth-proxy, measured against the upstream directly in the same run.

    smtp_load.py TARGET [--direct UPSTREAM] [--pid PID] [-c N] [-n SESSIONS] [--msgs K]
                 [--mech plain|login] [--users N] [--user-format FMT] [--password-format FMT]

Each session: connect, EHLO, AUTH (a random user of --users; none with --mech none), K
messages (MAIL, RCPT, DATA) and QUIT, waiting for every reply (no pipelining). With --direct, the same load runs against
the upstream first; the ratio is target rate / direct rate. With --pid, the appliance's CPU
time (utime + stime from /proc/PID/stat) over the run is divided by the operations (sessions,
or messages when K > 0), and its resident memory is sampled every 50 ms.
Prints one line per target.
"""
import argparse
import asyncio
import base64
import os
import random
import statistics
import time

TICK = os.sysconf("SC_CLK_TCK")
BODY = (b"From: load@example.test\r\nTo: sink@example.test\r\nSubject: load\r\n\r\n"
        + b"x" * 60 + b"\r\n") * 6


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def reply(reader):
    """One whole reply; returns its code."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return int(line[:3])


async def expect(reader, writer, line, codes):
    if line is not None:
        writer.write(line)
    code = await reply(reader)
    if code not in codes:
        raise RuntimeError(f"{line!r} -> {code}")


async def session(host, port, a):
    n = random.randint(1, a.users)
    user = a.user_format.format(n=n).encode()
    pw = a.password_format.format(n=n).encode()
    r, w = await asyncio.open_connection(host, port)
    try:
        await expect(r, w, None, (220,))
        await expect(r, w, b"EHLO load.example.test\r\n", (250,))
        if a.mech == "plain":
            ir = base64.b64encode(b"\0" + user + b"\0" + pw)
            await expect(r, w, b"AUTH PLAIN " + ir + b"\r\n", (235,))
        elif a.mech == "login":
            await expect(r, w, b"AUTH LOGIN\r\n", (334,))
            await expect(r, w, base64.b64encode(user) + b"\r\n", (334,))
            await expect(r, w, base64.b64encode(pw) + b"\r\n", (235,))
        for _ in range(a.msgs):
            await expect(r, w, b"MAIL FROM:<load@example.test>\r\n", (250,))
            await expect(r, w, b"RCPT TO:<sink@example.test>\r\n", (250, 251))
            await expect(r, w, b"DATA\r\n", (354,))
            await expect(r, w, BODY + b".\r\n", (250,))
        await expect(r, w, b"QUIT\r\n", (221,))
    finally:
        w.close()


async def run(target, a, pid):
    host, port = target.rsplit(":", 1)
    port = int(port)
    latencies, failures = [], []
    left = a.sessions
    rss_peak = 0
    stop = False

    async def sampler():
        nonlocal rss_peak
        while not stop:
            rss_peak = max(rss_peak, rss_kib(pid))
            await asyncio.sleep(0.05)

    async def client():
        nonlocal left
        while left > 0:
            left -= 1
            t0 = time.perf_counter()
            try:
                await asyncio.wait_for(session(host, port, a), 60)
                latencies.append(time.perf_counter() - t0)
            except Exception as e:  # noqa: BLE001 - every failure is counted and shown
                failures.append(repr(e)[:80])

    cpu0 = cpu_seconds(pid) if pid else 0
    sampling = asyncio.ensure_future(sampler()) if pid else None
    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(a.conc)))
    elapsed = time.perf_counter() - t0
    stop = True
    if sampling:
        await sampling
    ops = len(latencies) * (a.msgs or 1)
    latencies.sort()
    line = (f"target={target} test={'mail%d' % a.msgs if a.msgs else 'auth'}-{a.mech} c={a.conc} "
            f"sessions={len(latencies)} failed={len(failures)} "
            f"rate={ops / elapsed:.1f} {'msg' if a.msgs else 'sess'}/s "
            f"p50={1000 * statistics.median(latencies):.1f}ms "
            f"p99={1000 * latencies[int(len(latencies) * 0.99) - 1]:.1f}ms")
    if pid:
        cpu = cpu_seconds(pid) - cpu0
        line += f" cpu={1e6 * cpu / max(ops, 1):.0f}us/{'msg' if a.msgs else 'sess'} rss_peak={rss_peak / 1024:.1f}MB"
    if failures:
        line += f" first_failure={failures[0]}"
    return ops / elapsed, line


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target")
    ap.add_argument("--direct")
    ap.add_argument("--pid", type=int)
    ap.add_argument("-c", "--conc", type=int, default=16)
    ap.add_argument("-n", "--sessions", type=int, default=2000)
    ap.add_argument("--msgs", type=int, default=0)
    ap.add_argument("--mech", choices=("plain", "login", "none"), default="plain")
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--user-format", default="user{n}@example.test")
    ap.add_argument("--password-format", default="pw{n}")
    a = ap.parse_args()
    direct = None
    if a.direct:
        direct, line = await run(a.direct, a, None)
        print("direct " + line, flush=True)
    rate, line = await run(a.target, a, a.pid)
    ratio = f" ratio={rate / direct:.2f}" if direct else ""
    print("proxy  " + line + ratio, flush=True)


if __name__ == "__main__":
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
