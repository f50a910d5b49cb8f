"""Exhaustion: far more incoming connections than descriptors, and --max-connections.

The descriptor limit is lowered on the running process (prlimit(2) on its pid, soft
and hard alike), after its start-up raise of the soft limit to the hard one, so that
nothing undoes it. The process must stay up, must not spin (its CPU time, utime +
stime from /proc/PID/stat, stays low while connections wait), must not log the
exhaustion more than about once a second, and must serve again once descriptors
are free.
"""

import collections
import os
import re
import resource
import socket
import time

import pytest

import sanitizer  # noqa: F401  (installs the sanitizer-report check)
from helpers import echo_once, public_route, wait_until

PUBLIC = ["--access-type", "public"]
NOFILE = 40
FLOOD = 200
FLOOD_SECONDS = 2.5
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def nofile_limit(pid):
    for line in open(f"/proc/{pid}/limits"):
        if line.startswith("Max open files"):
            return tuple(int(v) for v in line.split()[3:5])
    raise AssertionError("no 'Max open files' line")


def lines_matching(t, rx, start=0):
    rx = re.compile(rx)
    with t.cond:
        return [(i, line) for i, line in enumerate(t.lines[start:], start) if rx.search(line)]


class Stamped:
    """Arrival times of the process's stderr lines (the reader thread only appends,
    so a poller can time them)."""

    def __init__(self, t):
        self.t = t
        self.times = []

    def poll(self):
        with self.t.cond:
            n = len(self.t.lines)
        now = time.monotonic()
        while len(self.times) < n:
            self.times.append(now)


def max_per_window(times, window=1.0):
    times = sorted(times)
    best = 0
    j = 0
    for i in range(len(times)):
        while times[i] - times[j] > window:
            j += 1
        best = max(best, i - j + 1)
    return best


def try_echo(sock, payload=b"?", timeout=0.5):
    sock.settimeout(timeout)
    try:
        sock.sendall(payload)
        got = sock.recv(len(payload))
        return "echo" if got == payload else "eof" if not got else "other"
    except socket.timeout:
        return "waiting"
    except OSError:
        return "reset"


# Each kind of line the exhaustion may bring, each at most about once a second.
EXHAUSTION_RXS = {
    "running out of descriptors": r"(?i)too many open files|out of file descriptors|EMFILE|ENFILE",
    "accept failures": r"(?i)cannot accept",
    "refusals": r"(?i)refusing new connections",
    "unresolvable names": r"(?i)cannot resolve",
}


def flood(port, seconds, keep, stamps):
    """Connects as fast as possible for `seconds`, keeping the newest `keep` open
    (older ones are closed): the process keeps hitting its descriptor limit."""
    socks = collections.deque()
    made = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=1))
            made += 1
        except OSError:
            pass
        while len(socks) > keep:
            socks.popleft().close()
        stamps.poll()
    for s in socks:
        s.close()
    return made


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"], ids=["ip-literal", "name"])
def test_descriptor_exhaustion(gateway, tunnel, echo, host):
    """Descriptor limit 40: 200 connections held, then 2.5 s of connections as fast as
    they come. With a host name to resolve, the resolver's threads open files too,
    which races with libuv's spare descriptor for EMFILE."""
    g = gateway([public_route(echo.addr, host="*")])
    t = tunnel(f"{host}:{g.port}", *PUBLIC)
    resource.prlimit(t.pid, resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
    assert nofile_limit(t.pid) == (NOFILE, NOFILE)
    idle = fds(t.pid)
    with t.connect() as s:
        assert echo_once(s, b"before the flood") == b"before the flood"
    wait_until(lambda: fds(t.pid) <= idle, 5, message="descriptors back to idle")
    mark = t.mark()
    stamps = Stamped(t)
    stamps.times = [0.0] * mark
    held = []
    try:
        for _ in range(FLOOD):
            held.append(socket.create_connection(("127.0.0.1", t.port), timeout=5))
            stamps.poll()
        made = flood(t.port, FLOOD_SECONDS, 150, stamps)
        settle = time.monotonic() + 0.3
        while time.monotonic() < settle:
            stamps.poll()
            time.sleep(0.02)
        # Watch the process while the held connections stay.
        cpu0, w0 = cpu_seconds(t.pid), time.monotonic()
        while time.monotonic() - w0 < 2.0:
            stamps.poll()
            time.sleep(0.02)
        cpu = cpu_seconds(t.pid) - cpu0
        assert t.proc.poll() is None, "the process died at the descriptor limit"
        assert cpu < 0.5, (
            f"{cpu:.2f}s of CPU in 2 s after the flood ({FLOOD} held, {made} more made), "
            f"{fds(t.pid)} descriptors open: a busy loop; last lines:\n" + "\n".join(t.lines[-4:]))
        assert fds(t.pid) <= NOFILE
        # Every held connection is either a working tunnel or was closed: none is left
        # unanswered in the backlog.
        states = [try_echo(s) for s in held]
        assert states.count("waiting") == 0, {k: states.count(k) for k in set(states)}
        stamps.poll()
    finally:
        for s in held:
            s.close()
    try:
        wait_until(lambda: fds(t.pid) <= idle, 10, message="descriptors back to idle")
    except TimeoutError:
        raise AssertionError(f"{fds(t.pid)} descriptors still open 10 s after the flood "
                             f"(idle: {idle})") from None
    # It serves again.
    for i in range(3):
        with t.connect() as s:
            assert echo_once(s, b"served again %d" % i) == b"served again %d" % i
    stamps.poll()
    for kind, rx in EXHAUSTION_RXS.items():
        found = lines_matching(t, rx, mark)
        per_second = max_per_window([stamps.times[i] for i, _ in found])
        assert per_second <= 2, (
            f"{len(found)} lines about {kind}, {per_second} within one second; a sample:\n"
            + "\n".join(sorted({re.sub(r"127\.0\.0\.1:\d+ ?", "ADDR ", line)
                                for _, line in found})[:6]))
    assert lines_matching(t, r"^\[(ERROR|WARN )", mark), "the exhaustion went unsaid"


def test_max_connections_refuses_beyond_n(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC, "--max-connections", "5")
    idle = fds(t.pid)
    kept = [t.connect() for _ in range(5)]
    for i, s in enumerate(kept):
        assert echo_once(s, b"kept %d" % i) == b"kept %d" % i
    mark = t.mark()
    stamps = Stamped(t)
    stamps.times = [0.0] * mark
    t0 = time.monotonic()
    refused = []
    for _ in range(50):
        s = t.connect()
        refused.append(s)
        stamps.poll()
    for s in refused:
        s.settimeout(2)
        try:
            assert s.recv(10) == b""
        except ConnectionResetError:
            pass
        s.close()
    assert time.monotonic() - t0 < 5
    # The line may reach the reader thread after the refused sockets' EOF.
    t.wait_for(r"refusing new connections: 5 tunnels are open", timeout=5, start=mark)
    stamps.poll()
    warns = lines_matching(t, r"^\[WARN .*refusing new connections: 5 tunnels are open "
                              r"\(--max-connections 5\)", mark)
    assert warns, t.text()[-2000:]
    assert max_per_window([stamps.times[i] for i, _ in warns]) <= 2, warns
    # Refusals are not tunnels: no gateway request, no ERROR.
    assert len(g.requests()) == 5
    assert lines_matching(t, r"^\[ERROR", mark) == []
    # The kept tunnels still work; once they close, new ones are served.
    for i, s in enumerate(kept):
        assert echo_once(s, b"still %d" % i) == b"still %d" % i
        s.close()
    wait_until(lambda: fds(t.pid) <= idle, 10, message="descriptors back to idle")
    more = [t.connect() for _ in range(5)]
    for i, s in enumerate(more):
        assert echo_once(s, b"again %d" % i) == b"again %d" % i
        s.close()
    assert t.proc.poll() is None


def test_max_connections_flood_logs_once_a_second(gateway, tunnel, echo):
    """Refusals for 2.5 s, as fast as they come: one WARN per second at most, each with
    the running count."""
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC, "--max-connections", "1")
    a = t.connect()
    assert echo_once(a, b"the one") == b"the one"
    mark = t.mark()
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < 2.5:
        with t.connect() as s:
            s.settimeout(2)
            try:
                s.recv(1)
            except ConnectionResetError:
                pass
        n += 1
    warns = lines_matching(t, r"refusing new connections", mark)
    assert 1 <= len(warns) <= 4, (n, warns)
    counts = [int(re.search(r"(\d+) refused so far", line).group(1)) for _, line in warns]
    assert counts == sorted(counts) and counts[0] >= 1, counts
    assert echo_once(a, b"still the one") == b"still the one"
    a.close()
