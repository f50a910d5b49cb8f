"""--keepalive: pings on idle tunnels, and an idle gateway that stops answering (the
stand-in paused with SIGSTOP, resumed on teardown) ends the tunnels within two
intervals; a gateway with bytes on their way to it lives while they move."""

import os
import re
import signal
import socket
import time
from contextlib import contextmanager

import pytest

from helpers import Transfer, echo_once, expect_closed, public_route
from hops import stdio  # noqa: F401,F811  (a fixture)
from services import SinkServer, SourceServer, wait_until

PUBLIC = ["--access-type", "public"]
WARN_DEAD = r"^\[WARN  otoroshictl::tunnels::tcp\] Otoroshi stopped answering for "
PING_TRACE = r"^\[TRACE otoroshictl::tunnels::tcp\] tunnel \d+: Ping after \d+ ms of silence"


@contextmanager
def paused(g):
    """The gateway process stopped (SIGSTOP) for the block: its sockets stay open and
    the kernel still takes bytes, but nothing answers."""
    os.kill(g.proc.pid, signal.SIGSTOP)
    try:
        yield time.monotonic()
    finally:
        os.kill(g.proc.pid, signal.SIGCONT)


def count_lines(t, pattern, start=0):
    rx = re.compile(pattern)
    with t.cond:
        return sum(1 for line in t.lines[start:] if rx.search(line))


def test_paused_gateway_ends_the_tunnel_within_two_intervals(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC, "--keepalive", "1")
    s = t.connect()
    peer = f"127.0.0.1:{s.getsockname()[1]}"
    assert echo_once(s, b"before the pause") == b"before the pause"
    mark = t.mark()
    with paused(g) as t0:
        took = expect_closed(s, 8)  # the local client sees its connection end
        ended = time.monotonic() - t0
        # Silence from the last bytes received: two intervals (2 s), found by a check
        # that runs every quarter interval; a generous margin above, a floor below.
        assert 1.5 < ended < 3.5, f"tunnel ended {ended:.2f}s after the gateway paused"
        line = t.wait_for(WARN_DEAD, 2, start=mark).string
        assert peer in line and "--keepalive 1" in line, line
        s.close()
        summary = t.wait_for(r"Tunnel from " + re.escape(peer) + r" closed after", 5, start=mark).string
        assert "(gateway stopped answering" in summary, summary
    assert took < 3.5
    assert t.proc.poll() is None  # the listener goes on
    assert count_lines(t, r"^\[ERROR ", mark) == 0, t.text()


def test_paused_gateway_ends_every_tunnel(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC, "--keepalive", "1")
    socks = [t.connect() for _ in range(5)]
    for i, s in enumerate(socks):
        assert echo_once(s, b"t%d" % i) == b"t%d" % i
    mark = t.mark()
    with paused(g) as t0:
        for s in socks:
            expect_closed(s, 6)
            s.close()
        assert time.monotonic() - t0 < 4
        t.wait_for(WARN_DEAD, 2, start=mark)
        try:
            wait_until(lambda: count_lines(t, r"\(gateway stopped answering", mark) >= 5, 5)
        except TimeoutError:
            pass
        assert count_lines(t, WARN_DEAD, mark) == 5, t.text()
        assert count_lines(t, r"\(gateway stopped answering", mark) == 5, t.text()


def test_paused_gateway_during_an_upload_lives_while_its_kernel_answers(gateway, tunnel, service):
    # The tunnel keeps sending until the gateway's window is full; the paused
    # gateway's kernel still answers the window probes, which a gateway whose target
    # stopped reading would do too: alive, by the documented rule (see KEEPALIVE).
    # Once the gateway resumes, everything arrives.
    sink = service(SinkServer)
    g = gateway([public_route(sink.addr)])
    t = tunnel(g, *PUBLIC, "--keepalive", "1")
    s = t.connect()
    s.sendall(b"x" * 1000)
    g.wait_records("request", 1)
    data = b"y" * (24 << 20)
    with paused(g):
        s.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 4  # two intervals and then some
        while time.monotonic() < deadline:
            try:
                sent += s.send(data[sent:sent + 65536])
            except BlockingIOError:
                time.sleep(0.02)  # the buffers are full
        assert 0 < sent < len(data)  # the window did fill
        assert "stopped answering" not in t.text(), t.text()
    s.setblocking(True)
    s.sendall(data[sent:])
    s.shutdown(socket.SHUT_WR)
    expect_closed(s, 30)
    s.close()
    results = sink.wait_results(1, 30)
    assert results[0][1] == 1000 + len(data), results
    assert "stopped answering" not in t.text(), t.text()


def test_live_idle_gateway_keeps_the_tunnel(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC, "--keepalive", "1", level="trace")
    s = t.connect()
    assert echo_once(s, b"first") == b"first"
    mark = t.mark()
    t0 = time.monotonic()
    # Idle for several intervals: a ping after each second of silence, each answered.
    deadline = t0 + 8
    while count_lines(t, PING_TRACE, mark) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    idle = time.monotonic() - t0
    assert count_lines(t, PING_TRACE, mark) >= 3, t.text()[-3000:]
    assert idle > 2.5  # longer than two intervals: the pongs kept it alive
    assert echo_once(s, b"still here") == b"still here"
    s.shutdown(socket.SHUT_WR)
    expect_closed(s, 5)
    s.close()
    closed = g.wait_records("closed", 1)[0]
    assert closed["client_pings"] >= 3, closed
    assert count_lines(t, r"^\[WARN ", mark) == 0, t.text()


def test_keepalive_0_sends_no_pings(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC, "--keepalive", "0", level="trace")
    s = t.connect()
    assert echo_once(s, b"a") == b"a"
    # Nothing to wait for but time: 2.5 s is more than two of the shortest interval.
    time.sleep(2.5)
    assert echo_once(s, b"b") == b"b"
    s.shutdown(socket.SHUT_WR)
    expect_closed(s, 5)
    s.close()
    closed = g.wait_records("closed", 1)[0]
    assert closed["client_pings"] == 0, closed
    assert count_lines(t, PING_TRACE) == 0


def test_keepalive_0_survives_a_paused_gateway(gateway, tunnel, echo):
    # With keepalive off, a silent gateway is not the tunnel's business: after the
    # pause the tunnel is still there and works.
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC, "--keepalive", "0")
    s = t.connect()
    assert echo_once(s, b"a") == b"a"
    with paused(g):
        s.settimeout(3)
        with pytest.raises(socket.timeout):
            s.recv(1)
    assert echo_once(s, b"after") == b"after"
    s.close()
    assert "stopped answering" not in t.text()


def test_stdio_with_keepalive_exits_when_the_gateway_stops_answering(gateway, stdio, echo):
    g = gateway([public_route(echo.addr)])
    r = stdio(["--host", g.addr, *PUBLIC, "--keepalive", "1"], data=b"hello", keep_stdin=True)
    wait_until(lambda: r.nout >= 5, 10, message="the echo")
    with paused(g) as t0:
        rc = r.wait(6)
        took = time.monotonic() - t0
    assert rc != 0
    assert took < 3.5, f"took {took:.2f}s"
    assert re.search(WARN_DEAD + "stdio", r.err_text(), re.M), r.err_text()
    r.close_stdin()


def test_slow_local_reader_is_not_a_dead_gateway(gateway, tunnel, service):
    # The local client reads nothing for three intervals while the gateway has a lot
    # to send: the tunnel stops reading the gateway (backpressure), which is its own
    # silence, not the gateway's. Everything arrives once the client reads.
    src = service(SourceServer, 24 << 20, seed=71)
    g = gateway([public_route(src.addr)])
    t = tunnel(g, *PUBLIC, "--keepalive", "1")
    s = t.connect()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    g.wait_records("request", 1)
    wait_until(lambda: src.sent > (4 << 20), 10, message="the source to fill the buffers")
    time.sleep(3.2)  # three intervals without reading
    assert "stopped answering" not in t.text(), t.text()
    tr = Transfer(s, b"", half_close=False, keep=False).wait(60)
    s.close()
    assert tr.nreceived == len(src.data) and tr.digest == src.sha256
    assert "stopped answering" not in t.text(), t.text()
