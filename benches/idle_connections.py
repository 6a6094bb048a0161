#!/usr/bin/env python3
"""Idle connections: memory per connection, and whether new clients are still greeted at once.

    idle_connections.py HOST:PORT --pid PID [-n 10000]

Opens N connections to the appliance, reads each greeting, and holds them open without a
word. Prints the appliance's resident memory before and after, the memory per idle
connection, and how long a new client then waits for its greeting (median of 20).
"""
import argparse
import resource
import socket
import statistics
import time

from smtp_load import rss_kib


def greeting_ms(host, port):
    t0 = time.perf_counter()
    s = socket.create_connection((host, port), timeout=10)
    data = s.recv(512)
    s.close()
    assert data.startswith(b"220"), data
    return 1000 * (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("target")
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("-n", type=int, default=10000)
    a = ap.parse_args()
    host, port = a.target.rsplit(":", 1)
    port = int(port)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    before = rss_kib(a.pid)
    idle = []
    t0 = time.perf_counter()
    for _ in range(a.n):
        s = socket.create_connection((host, port), timeout=30)
        idle.append(s)
    for s in idle:
        assert s.recv(512).startswith(b"220")
    opened = time.perf_counter() - t0
    time.sleep(1)
    after = rss_kib(a.pid)
    waits = sorted(greeting_ms(host, port) for _ in range(20))
    print(f"idle={len(idle)} opened_in={opened:.1f}s rss_before={before / 1024:.1f}MB "
          f"rss_after={after / 1024:.1f}MB per_connection={(after - before) * 1024 / len(idle):.0f}B "
          f"new_client_greeting_p50={statistics.median(waits):.2f}ms max={waits[-1]:.2f}ms")
    for s in idle:
        s.close()


main()
