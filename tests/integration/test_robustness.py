"""Awkward but legal gateway behaviour, abrupt local clients, and resource leaks."""

import os
import socket
import struct
import time

import pytest

from helpers import Transfer, echo_once, expect_closed, public_route, wait_until
from services import EchoServer, SourceServer, free_port


def read_exactly(sock, n, timeout=10):
    sock.settimeout(timeout)
    got = b""
    while len(got) < n:
        chunk = sock.recv(n - len(got))
        assert chunk, f"EOF after {len(got)} of {n} bytes: {got!r}"
        got += chunk
    return got


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_response_head_one_byte_per_segment(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr, dribble=True)])
    t = tunnel(g, "--access-type", "public")
    with t.connect() as s:
        assert echo_once(s, b"after a dribbled 101") == b"after a dribbled 101"
    # A refusal whose head and JSON body come in pieces is still read in full.
    g.set_routes([dict(host="127.0.0.1", access="apikey", target=echo.addr, dribble=True)])
    mark = t.mark()
    with t.connect() as s:
        assert expect_closed(s, 10) < 8
    line = t.wait_for(r"^\[ERROR .*\b400\b", 5, start=mark).string
    assert "no apikey" in line, line


def test_101_and_first_frame_in_one_segment(gateway, tunnel, service):
    svc = service(EchoServer, greeting=b"greeting in the 101's segment\n")
    g = gateway([public_route(svc.addr, coalesce=True)])
    t = tunnel(g, "--access-type", "public")
    with t.connect() as s:
        assert read_exactly(s, 30) == b"greeting in the 101's segment\n"
        assert echo_once(s, b"and then echo") == b"and then echo"


def test_101_and_close_1011_in_one_segment(gateway, tunnel):
    g = gateway([public_route(f"127.0.0.1:{free_port()}", coalesce=True)])
    t = tunnel(g, "--access-type", "public")
    mark = t.mark()
    with t.connect() as s:
        assert expect_closed(s, 5) < 2.5
    t.wait_for(r"^\[ERROR .*Otoroshi could not reach the remote service", 5, start=mark)


def test_gateway_ends_tcp_without_close_frame(gateway, tunnel, service):
    src = service(SourceServer, 1 << 20, seed=4)
    g = gateway([public_route(src.addr, abort_after_bytes=100_000)])
    t = tunnel(g, "--access-type", "public")
    with t.connect() as s:
        tr = Transfer(s, b"", half_close=False).wait(10)
    # What arrived before the abnormal end is delivered, then the local side ends.
    assert bytes(tr.received) == src.data[:100_000]
    assert g.wait_records("closed", 1)[0]["outcome"] == "aborted"


def test_target_idle_close_1011_mid_stream(gateway, tunnel, service):
    svc = service(EchoServer, greeting=b"then silence\n")
    g = gateway([public_route(svc.addr, idle_timeout=0.5)])
    t = tunnel(g, "--access-type", "public")
    with t.connect() as s:
        assert read_exactly(s, 13) == b"then silence\n"
        assert expect_closed(s, 5) < 4
    closed = g.wait_records("closed", 1)[0]
    assert closed["server_close_code"] == 1011, closed


def test_local_reset_leaves_other_tunnels_alone(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, "--access-type", "public")
    a = t.connect()
    echo_once(a, b"A")
    for i in range(5):
        b = t.connect()
        echo_once(b, b"B%d" % i)
        b.sendall(b"x" * 100_000)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        b.close()  # RST
    g.wait_records("closed", 5, timeout=10)
    assert t.proc.poll() is None, "the tunnel process died after a local reset"
    assert echo_once(a, b"A still works") == b"A still works"
    with t.connect() as c:
        assert echo_once(c, b"C works") == b"C works"
    a.close()


@pytest.mark.long
def test_no_descriptor_leak_after_many_short_connections(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr, handshake_delay=0.05)])
    t = tunnel(g, "--access-type", "public", "--linger", "0.2")  # 30 half-closes in a row
    idle = fd_count(t.pid)
    for i in range(30):
        # Closed before the handshake completes.
        socket.create_connection(("127.0.0.1", t.port), timeout=5).close()
        # A full exchange with a local half-close.
        with t.connect() as s:
            Transfer(s, b"y" * 1000, half_close=True, keep=False).wait(10)
        # Reset in the middle of a flow.
        s = t.connect()
        echo_once(s, b"z")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    try:
        wait_until(lambda: fd_count(t.pid) <= idle, 10, message="descriptors back to idle")
    except TimeoutError:
        raise AssertionError(
            f"{fd_count(t.pid) - idle} descriptors still open after the connections ended: "
            f"{sorted(os.readlink(f'/proc/{t.pid}/fd/{fd}') for fd in os.listdir(f'/proc/{t.pid}/fd'))}"
        ) from None
    assert t.proc.poll() is None
    with t.connect() as s:
        assert echo_once(s, b"still fine") == b"still fine"


def test_refused_connections_do_not_leak(gateway, tunnel, echo):
    g = gateway([dict(host="127.0.0.1", access="apikey", target=echo.addr)],
                "--refusal-linger", "30")
    t = tunnel(g, "--access-type", "apikey", "--apikey-client-id", "a", "--apikey-client-secret", "b")
    idle = fd_count(t.pid)
    t0 = time.monotonic()
    for _ in range(20):
        with t.connect() as s:
            expect_closed(s, 5)
    assert time.monotonic() - t0 < 20
    wait_until(lambda: fd_count(t.pid) <= idle, 10, message="descriptors back to idle")


def test_101_header_tokens_match_case_insensitively(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr, response_headers={
        "Upgrade": "WebSocket", "Connection": "keep-alive, UPGRADE"})])
    t = tunnel(g, "--access-type", "public")
    with t.connect() as s:
        assert echo_once(s, b"tokens") == b"tokens"


def test_101_without_upgrade_header_is_refused(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr, response_headers={"Upgrade": None})])
    t = tunnel(g, "--access-type", "public")
    mark = t.mark()
    with t.connect() as s:
        s.sendall(b"must not be relayed")
        assert expect_closed(s, 5) < 2.5
    t.wait_for(r"^\[ERROR ", 5, start=mark)
    assert echo.bytes_echoed == 0


def test_non_otoroshi_refusals(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr, refuse={"status": 502, "body": "<h1>bad gateway</h1>"})])
    t = tunnel(g, "--access-type", "public")
    mark = t.mark()
    # 502, 503 and 504 are what stands in front of a restarting gateway
    # answers: tried again, for the handshake's 10 s.
    with t.connect() as s:
        assert expect_closed(s, 12) < 11
    line = t.wait_for(r"^\[ERROR .*\b502\b", 5, start=mark).string
    assert "Bad Gateway" in line, line
    t.wait_for(r"HTTP 502, after \d+ attempts\)$", 5, start=mark)
    # A body delimited by the end of the connection rather than Content-Length.
    g.set_routes([public_route(echo.addr, refuse={"status": 503, "body": "{\"Otoroshi-Error\": \"busy\"}",
                                                  "content_type": "application/json",
                                                  "no_length": True})])
    mark = t.mark()
    with t.connect() as s:
        assert expect_closed(s, 12) < 11
    t.wait_for(r"^\[ERROR .*\b503\b", 5, start=mark)
    assert t.proc.poll() is None
