"""Data integrity both ways, half-close, target-first close, frame shapes, backpressure."""

import random
import socket
import time

import pytest

from helpers import RssSampler, Transfer, public_route, wait_until
from services import (
    ReplyAfterEOFServer, SinkServer, SourceServer, random_bytes, reply_after_eof, sha256,
)

SIZES = [0, 1, 100 * 1024, 1 << 20, 16 << 20]
SIZE_IDS = ["0B", "1B", "100KiB", "1MiB", "16MiB"]
MAX_FRAME = 65536


def open_tunnel(gateway, tunnel, target, *gw_flags, **knobs):
    g = gateway([public_route(target, **knobs)], *gw_flags)
    return g, tunnel(g, "--access-type", "public")


def check_pongs(closed):
    """Every ping answered with its own payload, those between a message's fragments
    too; only the last few may go unanswered, when the Close overtook them (a peer
    that has received a Close need not answer pings, RFC 6455 5.5.2)."""
    assert closed["pongs_unmatched"] == 0, "pong payloads must echo the ping's"
    assert closed["pongs_matched"] >= 3, closed
    late = [s for s in closed["pings_unanswered"] if s <= closed["last_pong_seq"]]
    assert not late, f"pings {late} were skipped although later ones were answered"


def check_client_frames(closed):
    assert closed["max_frame_from_client"] <= MAX_FRAME, closed
    assert closed["protocol_error"] is None, closed


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_echo_both_ways(gateway, tunnel, echo, size):
    g, t = open_tunnel(gateway, tunnel, echo.addr)
    data = random_bytes(size, seed=size)
    with t.connect() as s:
        tr = Transfer(s, data, half_close=True, keep=False).wait(120)
    assert tr.nreceived == size
    assert tr.digest == sha256(data)
    closed = g.wait_records("closed", 1)[0]
    assert closed["client_close_code"] == 1000
    assert closed["bytes_from_client"] == size
    check_client_frames(closed)


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_local_to_sink(gateway, tunnel, service, size):
    sink = service(SinkServer)
    g, t = open_tunnel(gateway, tunnel, sink.addr)
    data = random_bytes(size, seed=size + 1)
    with t.connect() as s:
        tr = Transfer(s, data, half_close=True).wait(120)
    assert tr.nreceived == 0
    (_, n, digest), = sink.wait_results(1, 10)
    assert (n, digest) == (size, sha256(data))
    closed = g.wait_records("closed", 1)[0]
    assert closed["client_close_code"] == 1000
    check_client_frames(closed)


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_source_to_local_target_closes_first(gateway, tunnel, service, size):
    src = service(SourceServer, size, seed=size + 2)
    g, t = open_tunnel(gateway, tunnel, src.addr)
    with t.connect() as s:
        # No local half-close: the end of the stream must come from the target's side.
        tr = Transfer(s, b"", half_close=False, keep=False).wait(120)
    assert tr.nreceived == size
    assert tr.digest == src.sha256
    closed = g.wait_records("closed", 1)[0]
    assert closed["outcome"].startswith("target_eof"), closed
    assert closed["server_close_code"] == 1000
    assert closed["client_close_code"] == 1000, "the tunnel must answer the gateway's Close"


@pytest.mark.parametrize("size", [13, 4 << 20], ids=["13B", "4MiB"])
def test_local_half_close_reaches_a_target_that_waits_for_eof(gateway, tunnel, service, size):
    # Through Otoroshi a target learns of the end of input only from the Close, and
    # its answer to it is dropped (PROTOCOL.md section 5): the target gets the whole
    # request and its EOF, once the gateway has been silent for the linger.
    svc = service(ReplyAfterEOFServer)
    g = gateway([public_route(svc.addr)])
    t = tunnel(g, "--access-type", "public", "--linger", "0.3")
    request = random_bytes(size, seed=42)
    with t.connect() as s:
        tr = Transfer(s, request, half_close=True).wait(60)
    assert tr.nreceived == 0
    wait_until(lambda: svc.inputs, 10, message="the target's EOF")
    assert sha256(svc.inputs[0]) == sha256(request)
    close = g.wait_records("client_close", 1)[0]
    assert close["code"] == 1000
    assert close["after_server_close"] is False, "the Close came from the local half-close"
    closed = g.wait_records("closed", 1)[0]
    assert closed["outcome"].startswith("client_close+target_"), closed
    assert closed["dropped_after_client_close"] == len(reply_after_eof(request)), closed


def test_fifty_simultaneous_connections(gateway, tunnel, echo):
    g, t = open_tunnel(gateway, tunnel, echo.addr)
    rng = random.Random(50)
    sizes = [rng.choice([0, 1, rng.randrange(1, 600_000)]) for _ in range(50)]
    payloads = [random_bytes(n, seed=1000 + i) for i, n in enumerate(sizes)]
    socks = [t.connect() for _ in sizes]
    transfers = [Transfer(s, p, half_close=True, keep=False) for s, p in zip(socks, payloads)]
    for tr in transfers:
        tr.wait(120)
    for s in socks:
        s.close()
    for i, (tr, p) in enumerate(zip(transfers, payloads)):
        assert (tr.nreceived, tr.digest) == (len(p), sha256(p)), f"connection {i}"
    closed = g.wait_records("closed", 50, timeout=20)
    assert sorted(c["sha256_from_client"] for c in closed) == sorted(sha256(p) for p in payloads)
    assert all(c["client_close_code"] == 1000 for c in closed)


FRAME_SHAPES = [
    pytest.param(["--fragment"], id="fragment"),
    pytest.param(["--text-frames"], id="text-frames"),
    pytest.param(["--ping-every", "0.02"], id="pings"),
    pytest.param(["--fragment", "--text-frames", "--ping-every", "0.02", "--frame-size", "3000"],
                 id="all-small-frames"),
]


@pytest.mark.parametrize("flags", FRAME_SHAPES)
def test_gateway_frame_shapes_are_transparent(gateway, tunnel, echo, flags):
    g, t = open_tunnel(gateway, tunnel, echo.addr, *flags)
    data = random_bytes(1 << 20, seed=9)
    with t.connect() as s:
        tr = Transfer(s, data[: 1 << 19], half_close=False, keep=False)
        if "--ping-every" in flags:
            # Let pings go out and come back while the tunnel is open.
            g.wait_records("pong", 3, timeout=10)
        tr.sender.join(30)
        s.sendall(data[1 << 19:])
        s.shutdown(socket.SHUT_WR)
        tr.wait(60)
    assert tr.nreceived == len(data) and tr.digest == sha256(data)
    closed = g.wait_records("closed", 1)[0]
    assert closed["client_close_code"] == 1000
    check_client_frames(closed)
    if "--ping-every" in flags:
        assert closed["pings_sent"] >= 3
        check_pongs(closed)


def test_source_through_fragmented_frames_with_pings_inside(gateway, tunnel, service):
    src = service(SourceServer, 3 << 20, seed=77)
    g, t = open_tunnel(gateway, tunnel, src.addr, "--fragment", "--text-frames",
                       "--frame-size", "1000", "--ping-every", "0.05")
    with t.connect() as s:
        tr = Transfer(s, b"", half_close=False, keep=False).wait(60)
    assert (tr.nreceived, tr.digest) == (3 << 20, src.sha256)
    closed = g.wait_records("closed", 1)[0]
    assert closed["pings_mid_message"] > 0, closed
    check_pongs(closed)


# --- backpressure -------------------------------------------------------------------

RSS_BOUND_KB = 24 * 1024  # above the idle level


def settle(read_value, still_for=0.5, timeout=20):
    """Wait until read_value() stops changing for `still_for` seconds; return it."""
    last = read_value()
    since = time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline:
        time.sleep(0.05)
        v = read_value()
        if v != last:
            last, since = v, time.monotonic()
        elif time.monotonic() - since >= still_for:
            return v
    raise AssertionError(f"value never settled (last {last})")


def test_slow_local_reader_bounds_memory(gateway, tunnel, service):
    size = 64 << 20
    src = service(SourceServer, size, seed=64)
    g, t = open_tunnel(gateway, tunnel, src.addr)
    idle = t.rss_kb()
    sampler = RssSampler(t)
    s = t.connect()
    # Read nothing: the chain must fill and then stall well short of 64 MiB.
    wait_until(lambda: src.sent > 0, 10, message="the source to start")
    stalled_at = settle(lambda: src.sent)
    assert stalled_at < size, "the source sent everything although nobody read"
    peak_stalled = sampler.max_kb
    tr = Transfer(s, b"", half_close=False, keep=False).wait(120)
    peak = sampler.stop()
    s.close()
    assert (tr.nreceived, tr.digest) == (size, src.sha256)
    assert peak_stalled - idle < RSS_BOUND_KB, (
        f"RSS grew by {(peak_stalled - idle) // 1024} MiB while the local reader stalled "
        f"(source had sent {stalled_at >> 20} MiB)")
    assert peak - idle < RSS_BOUND_KB, f"RSS grew by {(peak - idle) // 1024} MiB"


def test_slow_gateway_bounds_memory(gateway, tunnel, service):
    size = 48 << 20
    sink = service(SinkServer)
    g, t = open_tunnel(gateway, tunnel, sink.addr, "--slow-read", str(16 << 20))
    idle = t.rss_kb()
    sampler = RssSampler(t)
    data = random_bytes(size, seed=48)
    with t.connect() as s:
        Transfer(s, data, half_close=True, keep=False).wait(120)
    peak = sampler.stop()
    (_, n, digest), = sink.wait_results(1, 30)
    assert (n, digest) == (size, sha256(data))
    assert peak - idle < RSS_BOUND_KB, (
        f"RSS grew by {(peak - idle) // 1024} MiB pushing {size >> 20} MiB into a slow gateway")
    closed = g.wait_records("closed", 1)[0]
    check_client_frames(closed)
