"""A hostile gateway: raw bytes in answer to the upgrade and after it.

Each case answers one tunnel with chosen bytes (hostile.py, no WebSocket library)
and checks that the local connection ends within a couple of seconds, that exactly
one ERROR line (WARN where the gateway merely went away) says what went wrong, that
the process's resident memory does not follow the sizes a frame announces, and that
the next tunnel, through the same process, works.

Importing `sanitizer` makes every tunnel process of the run (these and the other
modules' alike) fail its test when it printed an AddressSanitizer, UBSan or
LeakSanitizer report.
"""

import random
import re
import socket
import struct
import time

import pytest

import sanitizer  # (also installs the sanitizer-report check)
from helpers import RssSampler, TunnelProcess, clean_env, echo_once, expect_closed, wait_until
from hostile import (
    OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, HostileServer, accept_for, binary,
    close_frame, echo_frames, frame, response_101, serve_echo,
)

PUBLIC = ["--access-type", "public"]
PROBLEM_RE = re.compile(r"^\[(ERROR|WARN )")
# Resident memory may move a little with a tunnel's buffers (64 KiB reads, queues
# up to the 512 KiB watermark): anything that followed an announced size of 2 GiB
# or 2^62 bytes would be far beyond this.
RSS_MARGIN_KB = 6 * 1024
if sanitizer.binary_is_sanitized():
    # ASan keeps freed blocks in its quarantine (16 MiB in .ci/run and tests/run.sh)
    # before reusing them: a transfer's freed buffers add up to that much.
    RSS_MARGIN_KB += 24 * 1024


@pytest.fixture
def hostile():
    made = []

    def make(script=None):
        h = HostileServer(script)
        made.append(h)
        return h

    yield make
    for h in reversed(made):
        h.close()
        assert not h.errors, f"hostile server script failed: {h.errors}"


def problems(t, start):
    with t.cond:
        return [line for line in t.lines[start:] if PROBLEM_RE.match(line)]


def peer_of(sock):
    return f"127.0.0.1:{sock.getsockname()[1]}"


def summary_of(t, peer, start, timeout=10):
    return t.wait_for(r"^\[INFO  otoroshictl::tunnels::tcp\] Tunnel from " + re.escape(peer)
                      + r" closed after ", timeout, start=start).string


def next_tunnel_works(t, h, payload=b"the next tunnel works"):
    h.set_script(serve_echo)
    with t.connect() as s:
        assert echo_once(s, payload) == payload
    assert t.proc.poll() is None


def run_case(t, h, script, level, rx, send=b"local bytes\n", close_within=2.5, received=None,
             rss_margin_kb=RSS_MARGIN_KB):
    """Runs one tunnel against `script` and checks what every case must show; returns
    (the ERROR/WARN line, the close summary, the HostileConn)."""
    h.set_script(script)
    rss0 = t.rss_kb()
    sampler = RssSampler(t)
    mark = t.mark()
    count = len(h.conns)
    s = t.connect()
    peer = peer_of(s)
    try:
        if send:
            s.sendall(send)
        got = bytearray()
        t0 = time.monotonic()
        s.settimeout(close_within + 3)
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        except ConnectionResetError:
            pass
        except socket.timeout:
            raise AssertionError(f"local connection still open {close_within + 3}s after the "
                                 f"hostile answer; stderr:\n{t.text()[-3000:]}") from None
        took = time.monotonic() - t0
    finally:
        s.close()
    summary = summary_of(t, peer, mark)
    peak = sampler.stop()
    assert took < close_within, f"local connection closed only after {took:.2f}s"
    if received is not None:
        assert bytes(got) == received, (len(got), bytes(got[:200]))
    lines = problems(t, mark)
    assert len(lines) == 1, "want exactly one ERROR/WARN line, got:\n" + "\n".join(lines)
    line = lines[0]
    assert line.startswith(f"[{level}"), line
    assert re.search(rx, line), f"{rx!r} not in {line!r}"
    assert peer in line, f"the line does not name the local client {peer}: {line}"
    # Under valgrind the resident size is valgrind's: memory is bounded by the other runs.
    if not sanitizer.under_valgrind():
        assert peak - rss0 < rss_margin_kb, (
            f"VmRSS went from {rss0} kB to {peak} kB ({sampler.samples} samples)")
    conn = h.wait_conns(count + 1)
    next_tunnel_works(t, h)
    # Nothing more about that tunnel was said after its summary.
    assert problems(t, mark) == lines, "\n".join(problems(t, mark))
    return line, summary, conn


@pytest.fixture
def ht(hostile, tunnel):
    """(tunnel process, hostile server): a tunnel whose gateway is the hostile server."""
    h = hostile()
    t = tunnel(h.addr, *PUBLIC)
    return t, h


# --- answers to the upgrade --------------------------------------------------------

def head_without_accept(c):
    c.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")


def head_wrong_accept(c):
    c.send(response_101(accept=accept_for("not the key that was sent==")))


def head_200_with_body(c):
    body = b"<html><body>Welcome to a web server, not a gateway</body></html>\n" * 20
    c.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(body)
           + body)
    # Keep-alive: the connection stays open; the client must act on the body's end.


def head_never_ends(c):
    c.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n")
    filler = b"X-Filler: " + b"f" * 90 + b"\r\n"
    for _ in range(400):  # 40 KiB, well past the 16 KiB limit, in 400 writes
        if not c.send(filler):
            return


def head_cut_mid_way(c):
    c.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnec")
    c.close()


UPGRADE_CASES = [
    pytest.param(head_without_accept, "ERROR", r"lacks Sec-WebSocket-Accept", id="no-accept"),
    pytest.param(head_wrong_accept, "ERROR", r"Sec-WebSocket-Accept does not match", id="wrong-accept"),
    # HTML is never printed, only said to be there.
    pytest.param(head_200_with_body, "ERROR", r"HTTP 200 OK: an HTML error page$", id="200-with-body"),
    pytest.param(head_never_ends, "ERROR", r"larger than 16 KiB", id="head-never-ends"),
    pytest.param(head_cut_mid_way, "ERROR", r"closed the connection during the WebSocket upgrade",
                 id="hang-up-mid-head"),
]


@pytest.mark.parametrize("script,level,rx", UPGRADE_CASES)
def test_bad_answer_to_the_upgrade(ht, script, level, rx):
    t, h = ht
    line, summary, conn = run_case(t, h, script, level, rx, received=b"")
    # Nothing the local client sent reached the "gateway" as WebSocket data.
    assert conn.client_frames() == [], conn.client_frames()


def test_no_answer_at_all_times_out(ht):
    """The one slow case: 10 s of silence after the request (the handshake timeout)."""
    t, h = ht
    h.set_script(lambda c: None)  # read the request, say nothing, keep the socket open
    mark = t.mark()
    with t.connect() as s:
        peer = peer_of(s)
        s.sendall(b"held while nothing answers")
        h.wait_conns(1)
        took = expect_closed(s, 16)
    assert 9 <= took <= 12.5, f"closed after {took:.1f}s, want the 10 s handshake timeout"
    summary_of(t, peer, mark)
    lines = problems(t, mark)
    assert len(lines) == 1 and lines[0].startswith("[ERROR") and "timed out" in lines[0], lines
    assert peer in lines[0]
    # The silent connection to the "gateway" was closed too.
    wait_until(lambda: h.conns[0].finished.is_set(), 5, message="the hostile connection to end")
    next_tunnel_works(t, h)


def test_frames_in_the_101_segment_are_delivered(ht):
    t, h = ht

    def script(c):
        # One write: head, three data frames (one fragmented in two), a Ping and a
        # text frame (carried nothing) between them; then an echo gateway.
        c.send(response_101(c.key) + binary(b"first ") + frame(OP_BINARY, b"sec", fin=False)
               + frame(OP_PING, b"p") + frame(OP_CONT, b"ond ") + frame(OP_TEXT, b"text")
               + binary(b"third\n"))
        echo_frames(c)

    h.set_script(script)
    mark = t.mark()
    with t.connect() as s:
        s.settimeout(5)
        want = b"first second third\n"
        got = b""
        while len(got) < len(want):
            chunk = s.recv(100)
            assert chunk, got
            got += chunk
        assert got == want
        assert echo_once(s, b"and the echo after") == b"and the echo after"
    assert problems(t, mark) == []
    # The Ping in that segment was answered.
    conn = h.wait_conns(1)
    assert conn.finished.wait(5)
    assert [f.payload for f in conn.seen if f.opcode == OP_PONG] == [b"p"], conn.seen


def test_101_data_and_close_in_one_segment(ht):
    t, h = ht

    def script(c):
        c.send(response_101(c.key) + binary(b"all of it, ") + binary(b"then Close") + close_frame(1000))
        # Then wait for the client's Close and its end (drained by the server).

    h.set_script(script)
    mark = t.mark()
    with t.connect() as s:
        peer = peer_of(s)
        s.settimeout(5)
        got = b""
        while True:
            chunk = s.recv(100)
            if not chunk:
                break
            got += chunk
        assert got == b"all of it, then Close"
    summary = summary_of(t, peer, mark)
    assert "21 bytes received" in summary and "Close 1000" in summary, summary
    assert problems(t, mark) == []
    conn = h.wait_conns(1)
    assert conn.finished.wait(5)
    assert conn.client_close_code() == 1000, conn.client_frames()


# --- frames after a good 101 ----------------------------------------------------------

def after_101(*chunks, then="hold"):
    """A script: a good 101, then `chunks` (bytes, or callables taking the conn), then
    `then`: "hold" (keep the socket open and drain), "close", "reset"."""
    def script(c):
        if not c.send(response_101(c.key)):
            return
        for chunk in chunks:
            if callable(chunk):
                chunk(c)
            elif not c.send(chunk):
                return
        if then == "close":
            c.close()
        elif then == "reset":
            c.reset()
    return script


def pause(seconds):
    return lambda c: time.sleep(seconds)


# The client's answer: Close 1002 (protocol error), 1007 (invalid payload data) or
# 1009 (message too big); for the errors wslay finds in a frame's header (a length
# with its top bit set, a fragmented or oversized control frame) it sends a Close
# without a code (1005 here), which RFC 6455 section 7.1.7 allows.
PROTO_OR_BARE = (1002, 1005)
FRAME_RULES = {
    # id: (bytes after the 101, what the line should name, the client's Close codes)
    "payload-2^62": (frame(OP_BINARY, b"x" * 1000, length=1 << 62),
                     r"(?i)too (big|large|long)|length|size|1009", (1009,)),
    "payload-2^63-msb": (frame(OP_BINARY, b"x" * 1000, length=(1 << 63) + 5),
                         r"(?i)length|size|1002", PROTO_OR_BARE),
    "masked-frame": (frame(OP_BINARY, b"masked by the server", mask=b"\x01\x02\x03\x04"),
                     r"(?i)mask", (1002,)),
    "reserved-opcode-3": (frame(0x3, b"data"), r"(?i)opcode|reserved", (1002,)),
    "reserved-opcode-0xb": (frame(0xB, b""), r"(?i)opcode|reserved", (1002,)),
    "rsv-bits": (frame(OP_BINARY, b"compressed?", rsv=4), r"(?i)rsv|reserved|extension", (1002,)),
    "fragmented-ping": (frame(OP_PING, b"half a ping", fin=False) + frame(OP_CONT, b" and the rest"),
                        r"(?i)fragment|control", PROTO_OR_BARE),
    "ping-over-125": (frame(OP_PING, b"p" * 126), r"(?i)control|125|too (big|long|large)",
                      PROTO_OR_BARE),
    "close-over-125": (frame(OP_CLOSE, struct.pack("!H", 1000) + b"r" * 200),
                       r"(?i)control|125|too (big|long|large)", PROTO_OR_BARE),
    "continuation-first": (frame(OP_CONT, b"no message to continue"), r"(?i)continu|opcode", (1002,)),
    "close-code-1005": (close_frame(1005), r"(?i)code|1005", (1002,)),
    "close-code-999": (close_frame(999), r"(?i)code|999", (1002,)),
    "close-code-5000": (close_frame(5000), r"(?i)code|5000", (1002,)),
    # RFC 6455 5.5.1: a Close body starts with a 2-byte code; one byte is no code.
    "close-code-1-byte": (frame(OP_CLOSE, b"\x03"), r"(?i)code|close", PROTO_OR_BARE),
    "close-reason-bad-utf8": (close_frame(1000, b"bad \xc3\x28 utf-8 \xff"), r"(?i)utf-?8|1007", (1007,)),
    "text-bad-utf8": (frame(OP_TEXT, b"\xed\xa0\x80 surrogate"), r"(?i)utf-?8|1007", (1007,)),
}


@pytest.mark.parametrize("case", list(FRAME_RULES))
def test_broken_frame_after_101(ht, case):
    t, h = ht
    data, _, close_codes = FRAME_RULES[case]
    line, summary, conn = run_case(
        t, h, after_101(binary(b"before the bad frame\n"), data), "ERROR",
        r"Otoroshi sent an invalid WebSocket frame", received=b"before the bad frame\n")
    assert "(protocol error" in summary, summary
    assert conn.finished.wait(5)
    frames = conn.client_frames()
    closes = [f for f in frames if f.opcode == OP_CLOSE]
    # The client ends the WebSocket with its own Close (wslay's, after the error).
    assert len(closes) == 1, frames
    assert closes[0].close_code in close_codes, (closes[0].close_code, close_codes)


def test_broken_frame_line_says_which_rule(ht):
    """Issue 6: 'one error line says what was wrong' -- not only that a frame was bad,
    but which rule it broke (its size, a mask, an opcode, a close code, UTF-8). One
    test for all the cases, listing every line that does not say it."""
    t, h = ht
    vague = []
    for case, (data, rule_rx, _) in FRAME_RULES.items():
        h.set_script(after_101(data))
        mark = t.mark()
        with t.connect() as s:
            peer = peer_of(s)
            expect_closed(s, 5)
        summary_of(t, peer, mark)
        lines = problems(t, mark)
        if len(lines) != 1 or not re.search(rule_rx, lines[0]):
            vague.append(f"{case}: want {rule_rx!r}, got {lines}")
    assert not vague, "lines that do not say which rule the frame broke:\n" + "\n".join(vague)


def test_announced_2gib_frame_is_streamed_not_buffered(ht):
    """A frame announcing 2^31 - 1 bytes (just under the client's cap) streams: the
    16 MiB that come are delivered as they come, memory stays flat, and the gateway
    hanging up mid-frame is a plain end (WARN)."""
    t, h = ht
    payload = random.Random(62).randbytes(16 << 20)
    head = frame(OP_BINARY, b"", length=(1 << 31) - 1)

    def body(c):
        for off in range(0, len(payload), 65536):
            if not c.send(payload[off:off + 65536]):
                return

    line, summary, conn = run_case(t, h, after_101(head, body, then="close"), "WARN",
                                   r"ended the connection .* without a WebSocket Close",
                                   send=b"", close_within=10, received=payload)
    assert "(gateway connection lost" in summary, summary


def test_random_bytes_after_101(ht):
    t, h = ht
    # Seeded: these blobs break a rule within their first bytes (checked here, so
    # that the case cannot silently become "a frame still being received").
    for seed in range(1, 6):
        blob = random.Random(seed).randbytes(4096)
        b0 = blob[0]
        assert (b0 & 0x70) != 0 or (b0 & 0x0F) not in (0, 1, 2, 8, 9, 10), (seed, hex(b0))
        run_case(t, h, after_101(blob), "ERROR", r"invalid WebSocket frame", received=b"")


@pytest.mark.parametrize("how", ["reset", "close"])
def test_gateway_gone_in_the_middle_of_data(ht, how):
    """Mid-frame: a frame announces 100 000 bytes, 30 000 come, then a TCP reset or
    FIN. What came is delivered; one WARN says the connection was lost."""
    t, h = ht
    data = random.Random(7).randbytes(30000)
    script = after_101(binary(b"whole frame\n"), frame(OP_BINARY, data, length=100000), pause(0.2),
                       then=how)
    rx = (r"connection to Otoroshi for .* failed: connection reset by peer" if how == "reset"
          else r"ended the connection for .* without a WebSocket Close")
    line, summary, conn = run_case(t, h, script, "WARN", rx, send=b"",
                                   received=b"whole frame\n" + data)
    assert "(gateway connection lost" in summary, summary


def test_bad_tunnels_never_harm_a_good_one(ht):
    """A good tunnel keeps flowing, both ways, while one hostile answer after another
    breaks the other tunnels of the same process."""
    t, h = ht
    h.set_script(serve_echo)
    a = t.connect()
    assert echo_once(a, b"good before") == b"good before"
    bad = [head_without_accept, head_never_ends, head_cut_mid_way,
           after_101(frame(OP_BINARY, b"x", length=1 << 62)), after_101(frame(0x3, b"")),
           after_101(binary(b"x"), then="reset"),
           after_101(frame(OP_BINARY, b"m", mask=b"abcd")), after_101(random.Random(9).randbytes(999))]
    for i, script in enumerate(bad * 3):
        h.set_script(script)
        with t.connect() as s:
            expect_closed(s, 5)
        payload = b"good %d " % i * 1000
        assert echo_once(a, payload) == payload
    a.close()
    assert t.proc.poll() is None


# --- the sanitizer-report check itself ---------------------------------------------------

FAKE_BINARY = """#!/bin/sh
echo '[INFO  otoroshictl::tunnels::tcp] TCP tunnel listening on 127.0.0.1:9 \u2192 x via Otoroshi (y)' >&2
echo '[INFO  otoroshictl::tunnels::tcp] TCP tunnel ready, waiting for connections ...' >&2
echo '../src/ws.c:42:7: runtime error: signed integer overflow: 2147483647 + 1' >&2
exec sleep 30
"""


def test_a_sanitizer_report_fails_the_test(tmp_path, home, monkeypatch):
    """What sanitizer.py adds to every tunnel process: a report on its standard error
    makes close() (the fixtures' teardown) raise, after the process is stopped."""
    fake = tmp_path / "fake-otoroshictl"
    fake.write_text(FAKE_BINARY)
    fake.chmod(0o755)
    monkeypatch.setenv("OTOROSHICTL_BIN", str(fake))
    t = TunnelProcess(["--host", "x"], clean_env(home))
    t.wait_for("runtime error", 5)
    with pytest.raises(sanitizer.SanitizerReport, match="runtime error: signed integer overflow"):
        t.close()
    assert t.proc.poll() is not None
    t.close()  # checked once: a second close does not raise again
