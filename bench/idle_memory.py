#!/usr/bin/python3
"""Measures the resident memory one idle tunnel costs.

Starts the stand-in gateway (tests/gateway/gateway.py) with a public route to
a loopback echo service, starts the tunnel, opens N connections through it,
checks that each one carries a byte both ways (so every WebSocket is open),
and reads the tunnel's VmRSS from /proc before and after. Prints the cost per
tunnel. Usage: bench/idle_memory.py [--bin build/otoroshictl] [--count 1000]
"""
import argparse
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def read_line(proc_stream, pattern, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc_stream.readline()
        if not line:
            break
        m = re.search(pattern, line)
        if m:
            return m
    raise RuntimeError(f"no line matching {pattern}")


def echo_server():
    srv = socket.create_server(("127.0.0.1", 0), backlog=4096)

    def serve(c):
        with c:
            while data := c.recv(65536):
                c.sendall(data)

    def loop():
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return srv.getsockname()[1]


def measure(binary, count):
    echo_port = echo_server()
    route = ('{"host": "*", "access": "public", "target": "127.0.0.1:%d"}' % echo_port)
    gw = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests/gateway/gateway.py"),
                           "--listen", "127.0.0.1:0", "--route", route],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        gw_port = int(read_line(gw.stdout, r"LISTENING (\d+)").group(1))
        env = dict(os.environ, OTOROSHICTL="warn", NO_COLOR="1")
        tt = subprocess.Popen([binary, "tcp-tunnel", "--host", f"127.0.0.1:{gw_port}", "--access-type",
                               "public", "--local-port", "0"], stderr=subprocess.PIPE, text=True,
                              env=dict(env, OTOROSHICTL="info"))
        try:
            port = int(read_line(tt.stderr, r"listening on 127\.0\.0\.1:(\d+)").group(1))
            # Drain the tunnel's stderr so that it never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in tt.stderr], daemon=True).start()
            warm = socket.create_connection(("127.0.0.1", port))
            warm.sendall(b"x")
            warm.recv(1)
            time.sleep(0.2)
            before = rss_kib(tt.pid)
            socks = []
            for i in range(count):
                s = socket.create_connection(("127.0.0.1", port), timeout=30)
                s.sendall(b"y")
                if s.recv(1) != b"y":
                    raise RuntimeError("echo failed")
                socks.append(s)
            time.sleep(0.5)
            after = rss_kib(tt.pid)
            for s in socks:
                s.close()
            warm.close()
            return before, after
        finally:
            tt.terminate()
            tt.wait(10)
    finally:
        gw.terminate()
        gw.wait(10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build/otoroshictl"))
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    per = []
    for _ in range(args.runs):
        before, after = measure(args.bin, args.count)
        per.append((after - before) / args.count)
        print(f"RSS {before} KiB with 1 tunnel, {after} KiB with {args.count + 1}: "
              f"{per[-1]:.2f} KiB per idle ws tunnel")
    print(f"median over {args.runs} runs: {statistics.median(per):.2f} KiB per idle ws tunnel")


if __name__ == "__main__":
    main()
