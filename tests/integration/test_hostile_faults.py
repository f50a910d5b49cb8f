"""Faults around a tunnel: the gateway killed mid-transfer or restarted on its port, a
local client resetting mid-transfer, the target refusing (Close 1011), the gateway's
name failing to resolve. Each time the local side ends promptly, one line says what
happened, no descriptor is left behind, and the same process serves the next tunnel.

The gateway paused with SIGSTOP (caught by --keepalive) is covered by
test_everyday_keepalive.py (every tunnel, an upload in flight, --stdio) and is not
repeated here.
"""

import os
import re
import socket
import struct
import threading
import time

import sanitizer  # noqa: F401  (installs the sanitizer-report check)
from helpers import echo_once, expect_closed, public_route, wait_until
from services import Service, SinkServer, free_port

PUBLIC = ["--access-type", "public"]
PROBLEM_RE = re.compile(r"^\[(ERROR|WARN )")


class EndlessSource(Service):
    """Sends the same 64 KiB block until the connection fails (never ends by itself)."""

    BLOCK = bytes(range(256)) * 256

    def serve(self, conn, index):
        while not self.closed:
            conn.sendall(self.BLOCK)


def problems(t, start=0):
    with t.cond:
        return [line for line in t.lines[start:] if PROBLEM_RE.match(line)]


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_list(pid):
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return sorted(out)


def back_to_idle(t, idle, timeout=10):
    try:
        wait_until(lambda: fds(t.pid) <= idle, timeout, message="descriptors back to idle")
    except TimeoutError:
        raise AssertionError(f"{fds(t.pid) - idle} descriptors still open: {fd_list(t.pid)}") from None


def summaries(t, start=0):
    with t.cond:
        return [line for line in t.lines[start:] if "] Tunnel from " in line]


class Flow:
    """A local connection that downloads (counting bytes) and, if asked, uploads
    without end, until the connection ends; records when and how."""

    def __init__(self, t, upload=False):
        self.sock = t.connect()
        self.received = 0
        self.sent = 0
        self.end = None
        self.ended_at = None
        self.stop = threading.Event()
        self.ended = threading.Event()
        self.threads = [threading.Thread(target=self._down, daemon=True)]
        if upload:
            self.threads.append(threading.Thread(target=self._up, daemon=True))
        for th in self.threads:
            th.start()

    def _down(self):
        # Short timeouts, so that reset() can stop this thread before closing: a
        # close() while another thread sits in recv() would not release the socket.
        self.sock.settimeout(0.1)
        try:
            while not self.stop.is_set():
                try:
                    chunk = self.sock.recv(262144)
                except socket.timeout:
                    continue
                if not chunk:
                    self.end = "eof"
                    break
                self.received += len(chunk)
        except ConnectionResetError:
            self.end = "reset"
        except OSError as exc:
            self.end = repr(exc)
        self.ended_at = time.monotonic()
        self.ended.set()

    def _up(self):
        block = b"u" * 65536
        try:
            while not self.stop.is_set() and not self.ended.is_set():
                try:
                    self.sent += self.sock.send(block)
                except socket.timeout:
                    continue
        except OSError:
            pass

    def reset(self):
        """Ends with a TCP reset: the threads stopped first, then SO_LINGER 0 and close()."""
        self.stop.set()
        for th in self.threads:
            th.join(5)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self):
        self.stop.set()
        for th in self.threads:
            th.join(5)
        try:
            self.sock.close()
        except OSError:
            pass


def test_gateway_killed_mid_transfer(gateway, tunnel, service):
    src = service(EndlessSource)
    g = gateway([public_route(src.addr)])
    t = tunnel(g, *PUBLIC)
    idle = fds(t.pid)
    flows = [Flow(t, upload=(i % 2 == 1)) for i in range(4)]
    try:
        wait_until(lambda: all(f.received > (1 << 20) for f in flows), 15,
                   message="every flow to receive 1 MiB")
        mark = t.mark()
        g.proc.kill()
        killed = time.monotonic()
        g.proc.wait(5)
        for f in flows:
            assert f.ended.wait(5), "a local connection is still open 5 s after the kill"
        took = max(f.ended_at for f in flows) - killed
        assert took < 2, f"local connections ended {took:.2f}s after the gateway was killed"
        assert all(f.end in ("eof", "reset") for f in flows), [f.end for f in flows]
    finally:
        for f in flows:
            f.close()
    wait_until(lambda: len(summaries(t, mark)) >= 4, 10, message="4 close summaries")
    lines = problems(t, mark)
    assert len(lines) == 4 and all(line.startswith("[WARN") for line in lines), "\n".join(lines)
    assert all(re.search(r"Otoroshi (ended the connection|for .* failed)", line) or
               "connection to Otoroshi" in line for line in lines), "\n".join(lines)
    assert all("(gateway connection lost" in s for s in summaries(t, mark)), summaries(t, mark)
    back_to_idle(t, idle)
    # With the gateway gone, a new tunnel tries again until the handshake's
    # 10 s are over, then fails with one ERROR, and the process goes on.
    mark = t.mark()
    with t.connect() as s:
        assert expect_closed(s, 12) < 11
    wait_until(lambda: summaries(t, mark), 5, message="the close summary")
    lines = problems(t, mark)
    assert len(lines) == 1 and lines[0].startswith("[ERROR") and "refused" in lines[0], lines
    assert re.search(r"after \d+ attempts\)$", summaries(t, mark)[0]), summaries(t, mark)
    assert t.proc.poll() is None


def test_gateway_restarted_on_the_same_port(gateway, tunnel, echo):
    g1 = gateway([public_route(echo.addr)])
    port = g1.port
    t = tunnel(g1, *PUBLIC)
    a = t.connect()
    assert echo_once(a, b"before the restart") == b"before the restart"
    mark = t.mark()
    g1.proc.kill()
    g1.proc.wait(5)
    assert expect_closed(a, 5) < 2
    a.close()
    # A client that connects while it is down waits: its tunnel tries again
    # until the gateway is back, and its bytes go through.
    waiting = t.connect()
    waiting.sendall(b"while it was down")
    g2 = None
    deadline = time.monotonic() + 10
    while g2 is None:
        try:
            g2 = gateway([public_route(echo.addr)], listen=f"127.0.0.1:{port}")
        except (RuntimeError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert g2.port == port
    waiting.settimeout(15)
    got = b""
    while len(got) < 17:
        chunk = waiting.recv(64)
        assert chunk, "the waiting client was let go"
        got += chunk
    assert got == b"while it was down"
    waiting.close()
    # New tunnels work, without restarting the client.
    for i in range(3):
        with t.connect() as s:
            assert echo_once(s, b"after the restart %d" % i) == b"after the restart %d" % i
    assert len(g2.wait_records("request", 4)) == 4
    lines = problems(t, mark)
    # One WARN for the tunnel the kill ended; the waiting one was no error.
    assert [line[:6] for line in lines] == ["[WARN "], "\n".join(lines)
    assert t.proc.poll() is None


def test_local_client_resets_mid_transfer(gateway, tunnel, service, echo):
    src = service(EndlessSource)
    sink = service(SinkServer)
    g = gateway([public_route(src.addr, host="127.0.0.1")])
    down = tunnel(g, *PUBLIC)
    g_up = gateway([public_route(sink.addr)])
    up = tunnel(g_up, *PUBLIC)
    idle_down, idle_up = fds(down.pid), fds(up.pid)
    mark_down, mark_up = down.mark(), up.mark()
    # A download and an upload in full flow, each reset by the local client.
    d = Flow(down)
    u = Flow(up, upload=True)
    wait_until(lambda: d.received > (2 << 20) and u.sent > (2 << 20), 15,
               message="2 MiB each way")
    t0 = time.monotonic()
    d.reset()
    u.reset()
    # The gateway hears the client's Close 1000 at once, for both.
    for gw in (g, g_up):
        closed = gw.wait_records("closed", 1, timeout=5)[0]
        assert closed["client_close_code"] == 1000, closed
    assert time.monotonic() - t0 < 3
    back_to_idle(down, idle_down)
    back_to_idle(up, idle_up)
    # A local reset is the client's business: no ERROR or WARN.
    assert problems(down, mark_down) == [] and problems(up, mark_up) == [], (
        problems(down, mark_down) + problems(up, mark_up))
    assert "(local reset" in summaries(down, mark_down)[0]
    assert "(local reset" in summaries(up, mark_up)[0]
    # Both processes serve the next tunnel.
    g.set_routes([public_route(echo.addr)])
    g_up.set_routes([public_route(echo.addr)])
    for t in (down, up):
        with t.connect() as s:
            assert echo_once(s, b"after the reset") == b"after the reset"


def test_target_refusing_close_1011(gateway, tunnel, echo):
    dead = f"127.0.0.1:{free_port()}"
    g = gateway([public_route(dead)])
    t = tunnel(g, *PUBLIC)
    for _ in range(3):
        mark = t.mark()
        with t.connect() as s:
            peer = f"127.0.0.1:{s.getsockname()[1]}"
            s.sendall(b"for a target that refuses")
            assert expect_closed(s, 5) < 2
        wait_until(lambda: summaries(t, mark), 5, message="the close summary")
        lines = problems(t, mark)
        assert len(lines) == 1 and lines[0].startswith("[ERROR"), lines
        assert "could not reach the remote service" in lines[0] and peer in lines[0], lines[0]
        assert "Close 1011" in summaries(t, mark)[0]
    g.set_routes([public_route(echo.addr)])
    with t.connect() as s:
        assert echo_once(s, b"target up") == b"target up"


def test_gateway_name_does_not_resolve(tunnel):
    name = "gateway.hostile-test.invalid"
    t = tunnel(f"{name}:8443", *PUBLIC)
    idle = fds(t.pid)
    for _ in range(3):
        mark = t.mark()
        t0 = time.monotonic()
        with t.connect() as s:
            s.sendall(b"for a gateway with no address")
            expect_closed(s, 15)
        took = time.monotonic() - t0
        wait_until(lambda: summaries(t, mark), 5, message="the close summary")
        lines = problems(t, mark)
        assert len(lines) == 1 and lines[0].startswith("[ERROR"), lines
        assert f"cannot resolve Otoroshi's host name '{name}'" in lines[0], lines[0]
        assert "--host" in lines[0]
        # The resolver answers .invalid at once here (no network); allow for a slow one.
        assert took < 12, f"closed after {took:.1f}s"
    back_to_idle(t, idle)
    assert t.proc.poll() is None
