#!/usr/bin/python3
"""Self-test of the stand-in gateway, with the websockets library's own client.

The client here is the library's sans-I/O ClientConnection over a blocking socket,
so it can keep receiving data after it sent its Close (which the half-close
behaviour needs), and can be made to misbehave (unmasked frames) on purpose.
"""

import base64
import html
import json
import signal
import socket
import ssl
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from websockets.client import ClientConnection  # noqa: E402
from websockets.frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, Close, Frame  # noqa: E402
from websockets.http11 import Response  # noqa: E402
from websockets.uri import parse_uri  # noqa: E402

import gateway as gw  # noqa: E402
from harness import GatewayProcess  # noqa: E402
from pki import Pki  # noqa: E402
from services import (  # noqa: E402
    EchoServer, ReplyAfterEOFServer, SinkServer, SourceServer, free_port, random_bytes,
    reply_after_eof, sha256,
)

TUNNEL = "/.well-known/otoroshi/tunnel?transport=tcp"
TIMEOUT = 10


class WsClient:
    """The library's ClientConnection driven over a blocking socket."""

    def __init__(self, port, host=None, path=TUNNEL, headers=(), timeout=TIMEOUT,
                 tls=None, server_hostname=None, session=None):
        host = host or f"127.0.0.1:{port}"
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls is not None:  # an ssl.SSLContext: wss://
            self.sock = tls.wrap_socket(self.sock, server_hostname=server_hostname,
                                        session=session, suppress_ragged_eofs=False)
        self.conn = ClientConnection(parse_uri(f"ws://{host}{path}"), max_size=None)
        request = self.conn.connect()
        for name, value in headers:
            request.headers[name] = value
        self.conn.send_request(request)
        self.flush()
        self.pending = []
        self.eof = False
        self.response = self.next_event()
        assert isinstance(self.response, Response), self.response

    def flush(self):
        for data in self.conn.data_to_send():
            if data:
                self.sock.sendall(data)
            else:
                self.sock.shutdown(socket.SHUT_WR)

    def pump(self):
        data = self.sock.recv(65536)
        if data:
            self.conn.receive_data(data)
        else:
            self.eof = True
            self.conn.receive_eof()
        self.flush()
        self.pending += self.conn.events_received()

    def next_event(self):
        while not self.pending:
            if self.eof:
                return None
            self.pump()
        return self.pending.pop(0)

    def send(self, data):
        self.conn.send_binary(data)
        self.flush()

    def receive_until_close(self, limit=None):
        """Payload of binary messages (text ignored) until the server's Close."""
        out = bytearray()
        frames = []
        kind = None
        while True:
            ev = self.next_event()
            if ev is None:
                return bytes(out), None, frames
            frames.append((ev.opcode, ev.fin, len(ev.data)))
            if ev.opcode in (OP_BINARY, OP_TEXT):
                kind = ev.opcode
            if ev.opcode == OP_BINARY or (ev.opcode == OP_CONT and kind == OP_BINARY):
                out += ev.data
            if ev.opcode == OP_CLOSE:
                return bytes(out), Close.parse(ev.data).code, frames
            if limit is not None and len(out) >= limit:
                return bytes(out), None, frames

    def close(self):
        self.sock.close()


def raw_request(port, head, timeout=TIMEOUT):
    """Send a raw request head; return (status, headers dict lower-cased, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(4096)
            assert chunk, f"EOF before response head: {buf!r}"
            buf += chunk
        head_bytes, _, body = buf.partition(b"\r\n\r\n")
        lines = head_bytes.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = s.recv(4096)
            assert chunk
            body += chunk
        return status, headers, body


def upgrade_head(port, host=None, extra="", path=TUNNEL, version=True):
    host = host or f"127.0.0.1:{port}"
    key = base64.b64encode(b"k" * 16).decode()
    head = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            + ("Sec-WebSocket-Version: 13\r\n" if version else "")
            + f"Sec-WebSocket-Key: {key}\r\n{extra}\r\n")
    return head.encode()


def basic(cid, secret):
    return "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()


@pytest.fixture
def echo():
    with EchoServer() as s:
        yield s


@pytest.fixture
def gateway(tmp_path):
    made = []

    def make(routes, *args, **kw):
        g = GatewayProcess(tmp_path, routes, *args, **kw)
        made.append(g)
        return g

    yield make
    for g in made:
        g.close()


def public(target, **kw):
    return dict(host="127.0.0.1", access="public", target=target, **kw)


def test_echo_roundtrip_and_record(gateway, echo):
    g = gateway([public(echo.addr)])
    c = WsClient(g.port)
    assert c.response.status_code == 101
    payload = random_bytes(200_000, 7)
    for i in range(0, len(payload), 50_000):
        c.send(payload[i:i + 50_000])
    got, code, _ = c.receive_until_close(limit=len(payload))
    assert got == payload and code is None
    c.conn.send_close(1000)
    c.flush()
    rest, code, _ = c.receive_until_close()
    assert rest == b"" and code == 1000
    c.close()
    closed = g.wait_records("closed", 1)[0]
    assert closed["client_close_code"] == 1000
    assert closed["bytes_from_client"] == closed["bytes_to_client"] == len(payload)
    assert closed["sha256_from_client"] == sha256(payload)
    assert closed["max_frame_from_client"] == 50_000
    req = g.requests()[0]
    assert req["status"] == 101 and req["target"] == echo.addr
    assert [h[0] for h in req["headers"]][:2] == ["Host", "Upgrade"]
    assert base64.b64decode(req["head_b64"]).startswith(f"GET {TUNNEL} HTTP/1.1\r\n".encode())


def test_client_close_is_echoed_at_once_and_later_target_data_dropped(gateway):
    # Play's WebSocketFlowHandler: a client Close is sent straight back, the target's
    # input ends, and the target's reply to that end is never relayed.
    with ReplyAfterEOFServer() as svc:
        g = gateway([public(svc.addr)])
        c = WsClient(g.port)
        request = random_bytes(300_000, 3)
        c.send(request)
        t0 = time.monotonic()
        c.conn.send_close(1000, "done")
        c.flush()
        got, code, _ = c.receive_until_close()
        echoed = time.monotonic() - t0
        assert got == b"" and code == 1000 and echoed < 1.0, (len(got), code, echoed)
        assert c.next_event() is None  # the gateway closes the connection after the echo
        c.close()
        closed = g.wait_records("closed", 1)[0]
        assert closed["outcome"] == "client_close+target_eof", closed
        assert closed["client_close_code"] == 1000 and closed["server_close_code"] == 1000
        assert closed["bytes_from_client"] == len(request) and closed["bytes_to_client"] == 0
        # The target got the whole request and its EOF, and its reply was dropped.
        assert svc.inputs == [request]
        assert closed["dropped_after_client_close"] == len(reply_after_eof(request)), closed
        rec = g.wait_records("client_close", 1)[0]
        assert rec["code"] == 1000 and rec["after_server_close"] is False


def test_client_close_without_code_is_echoed_empty(gateway, echo):
    g = gateway([public(echo.addr)])
    c = WsClient(g.port)
    c.sock.sendall(Frame(OP_CLOSE, b"").serialize(mask=True))
    data = b""
    while len(data) < 2:
        chunk = c.sock.recv(16)
        assert chunk, data
        data += chunk
    assert data[:2] == b"\x88\x00"  # an empty Close back, as Play echoes what came
    c.close()


def test_target_eof_then_no_client_close_drops_after_3s(gateway):
    with SourceServer(1000, seed=5) as src:
        g = gateway([public(src.addr)])
        raw = socket.create_connection(("127.0.0.1", g.port), timeout=TIMEOUT)
        raw.sendall(upgrade_head(g.port))
        t0 = time.monotonic()
        buf = b""
        while True:  # read everything, never answer the Close
            chunk = raw.recv(65536)
            if not chunk:
                break
            buf += chunk
        waited = time.monotonic() - t0
        raw.close()
        assert b"\x88\x02\x03\xe8" in buf  # Close 1000
        assert 2.5 < waited < 5, waited
        closed = g.wait_records("closed", 1)[0]
        assert closed["outcome"] == "target_eof+no_client_close", closed


def idle_route(target, seconds):
    return public(target, idle_timeout=seconds)


def test_idle_timeout_closes_1011_after_silence(gateway, echo):
    g = gateway([idle_route(echo.addr, 1.0)])
    c = WsClient(g.port)
    c.send(b"x")
    assert c.receive_until_close(limit=1)[0] == b"x"
    t0 = time.monotonic()
    _, code, _ = c.receive_until_close()
    quiet = time.monotonic() - t0
    c.close()
    assert code == 1011 and 0.8 < quiet < 2.5, (code, quiet)
    assert g.wait_records("closed", 1)[0]["outcome"].startswith("target_idle")


@pytest.mark.parametrize("kind", ["ping", "pong", "text", "binary"])
def test_every_client_frame_counts_against_the_idle_timeout(gateway, echo, kind):
    # Otoroshi's flow maps text, ping and pong frames to empty chunks: they are
    # elements of the target flow all the same, and keep the idle timeout away.
    g = gateway([idle_route(echo.addr, 1.0)])
    c = WsClient(g.port)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 3.0:
        {"ping": lambda: c.conn.send_ping(b"p"), "pong": lambda: c.conn.send_pong(b"q"),
         "text": lambda: c.conn.send_text(b"t"), "binary": lambda: c.conn.send_binary(b"b")}[kind]()
        c.flush()
        c.sock.settimeout(0.4)
        try:
            c.pump()
        except socket.timeout:
            pass
        c.sock.settimeout(TIMEOUT)
        assert not any(ev.opcode == OP_CLOSE for ev in c.pending), c.pending
    c.conn.send_close(1000)
    c.flush()
    assert c.receive_until_close()[1] == 1000
    c.close()
    closed = g.wait_records("closed", 1)[0]
    assert closed["outcome"].startswith("client_close"), closed


def test_target_data_counts_against_the_idle_timeout(gateway):
    class Ticker(EchoServer):
        def serve(self, conn, index):
            for _ in range(6):
                conn.sendall(b"t")
                time.sleep(0.5)
            conn.shutdown(socket.SHUT_WR)
    with Ticker() as svc:
        g = gateway([idle_route(svc.addr, 1.0)])
        c = WsClient(g.port)
        got, code, _ = c.receive_until_close()
        c.close()
        assert got == b"t" * 6 and code == 1000  # the target's EOF, not the idle timeout


def test_target_eof_gives_close_1000_after_all_data(gateway):
    with SourceServer(1 << 20, seed=5) as src:
        g = gateway([public(src.addr)])
        c = WsClient(g.port)
        got, code, _ = c.receive_until_close()
        assert sha256(got) == src.sha256 and code == 1000
        # The library answered the Close; the gateway records it.
        closed = g.wait_records("closed", 1)[0]
        c.close()
        assert closed["client_close_code"] == 1000
        assert closed["server_close_code"] == 1000


def test_unreachable_target_closes_1011(gateway):
    g = gateway([public(f"127.0.0.1:{free_port()}")])
    c = WsClient(g.port)
    assert c.response.status_code == 101
    _, code, _ = c.receive_until_close()
    assert code == 1011
    c.close()
    closed = g.wait_records("closed", 1)[0]
    assert closed["outcome"] == "target_unreachable" and closed["target_error"]


def test_backend_close_knob(gateway, echo):
    g = gateway([public(echo.addr, backend_close=1002)])
    c = WsClient(g.port)
    assert c.response.status_code == 101
    assert c.receive_until_close()[1] == 1002
    c.close()
    assert g.wait_records("closed", 1)[0]["outcome"] == "backend_close"


APIKEY_ROUTE = dict(host="127.0.0.1", access="apikey", target="127.0.0.1:9",
                    apikeys=["good:s3cret", "rev:x", "con:x", "tag:x", "quo:x"],
                    revoked=["rev"], constrained=["con"], tags_mismatch=["tag"],
                    quota_exceeded=["quo"])

APIKEY_CASES = [
    ("", 400, "no apikey"),
    (f"Authorization: {basic('nobody', 'x')}\r\n", 400, "invalid apikey tuple"),
    (f"Authorization: {basic('good', 'wrong')}\r\n", 401, "bad apikey"),
    (f"Authorization: {basic('rev', 'x')}\r\n", 401, "bad apikey"),
    (f"Authorization: {basic('con', 'x')}\r\n", 401, "invalid apikey"),
    (f"Authorization: {basic('tag', 'x')}\r\n", 403, "forbidden"),
    (f"Authorization: {basic('quo', 'x')}\r\n", 429, "You performed too much requests"),
]


@pytest.mark.parametrize("extra,status,text", APIKEY_CASES)
def test_apikey_refusals_are_html_pages_without_accept(gateway, extra, status, text):
    g = gateway([APIKEY_ROUTE], "--refusal-linger", "0")
    st, headers, body = raw_request(g.port, upgrade_head(g.port, extra=extra))
    assert st == status
    assert headers["otoroshi-error"] == "true" and headers["otoroshi-error-msg"] == text
    assert headers["content-type"].startswith("text/html")
    assert int(headers["content-length"]) == len(body)
    assert body.startswith(b"<!DOCTYPE html>") and b"<title>Otoroshi Error</title>" in body
    assert html.escape(text).encode() in body
    assert g.requests()[0]["status"] == status


@pytest.mark.parametrize("extra,status,text", APIKEY_CASES)
def test_apikey_refusals_are_json_with_an_accept_without_html(gateway, extra, status, text):
    g = gateway([APIKEY_ROUTE], "--refusal-linger", "0")
    st, headers, body = raw_request(g.port, upgrade_head(g.port, extra=extra + "Accept: */*\r\n"))
    assert st == status and headers["content-type"] == "application/json"
    assert json.loads(body) == {"Otoroshi-Error": text}
    assert headers["otoroshi-error-msg"] == text


@pytest.mark.parametrize("accept,html_body", [
    ("text/html", True), ("application/json,text/html", True), ("*/*", False),
    # Otoroshi splits on commas without trimming: " text/html" is not "text/html".
    ("application/json, text/html", False), ("text/html;q=0.9", False),
])
def test_accept_header_decides_the_body_as_otoroshi_does(gateway, accept, html_body):
    g = gateway([APIKEY_ROUTE], "--refusal-linger", "0")
    st, headers, body = raw_request(g.port, upgrade_head(g.port, extra=f"Accept: {accept}\r\n"))
    assert st == 400 and body.startswith(b"<!DOCTYPE html>") == html_body, (accept, body[:40])


def test_modern_and_template_error_formats(gateway):
    g = gateway([dict(APIKEY_ROUTE, modern_errors=True)], "--refusal-linger", "0")
    st, headers, body = raw_request(g.port, upgrade_head(g.port, extra="Accept: application/json\r\n"))
    assert st == 400 and headers["otoroshi-error-cause"] == "errors.no.api.key"
    assert json.loads(body) == {"error": "errors.no.api.key", "error_description": "no apikey"}
    g.set_routes([dict(APIKEY_ROUTE, error_template=True)])
    st, headers, body = raw_request(g.port, upgrade_head(g.port))
    assert st == 400 and "otoroshi-error-msg" not in headers and body.startswith(b"<html>")
    st, headers, body = raw_request(g.port, upgrade_head(g.port, extra="Accept: application/json\r\n"))
    assert "otoroshi-error-msg" not in headers and json.loads(body)["message"] == "no apikey"


def test_apikey_accepted(gateway, echo):
    g = gateway([dict(APIKEY_ROUTE, target=echo.addr)])
    c = WsClient(g.port, headers=[("Authorization", basic("good", "s3cret"))])
    assert c.response.status_code == 101
    c.send(b"ping")
    assert c.receive_until_close(limit=4)[0] == b"ping"
    c.close()


def test_404_wrong_host_path_and_missing_version(gateway):
    g = gateway([public("127.0.0.1:9")], "--refusal-linger", "0")
    st, headers, _ = raw_request(g.port, upgrade_head(g.port, host="other.example:1"))
    assert st == 404 and headers["otoroshi-error-msg"] == "no route found !"
    st, headers, _ = raw_request(g.port, upgrade_head(g.port, version=False))
    assert st == 404 and headers["otoroshi-error-msg"] == "Resource not found"
    st, headers, _ = raw_request(g.port, upgrade_head(g.port, path="/elsewhere"))
    assert st == 404 and headers["otoroshi-error-msg"] == "Resource not found"
    # Host matching ignores case and port.
    g.set_routes([dict(public("127.0.0.1:9"), host="Gw.Example")])
    st, _, _ = raw_request(g.port, upgrade_head(g.port, host="gW.example:443"))
    assert st == 101


def test_bearer_and_session(gateway, echo):
    g = gateway([dict(host="127.0.0.1", access="bearer", tokens=["tok"], target=echo.addr)],
                "--refusal-linger", "0")
    st, headers, body = raw_request(g.port, upgrade_head(
        g.port, extra="Authorization: Bearer nope\r\nAccept: application/json\r\n"))
    assert st == 401 and json.loads(body) == {"Otoroshi-Error": "invalid token"}
    c = WsClient(g.port, headers=[("Authorization", "Bearer tok")])
    assert c.response.status_code == 101
    c.close()
    g.set_routes([dict(host="127.0.0.1", access="session", tokens=["pt"], target=echo.addr)])
    st, headers, body = raw_request(g.port, upgrade_head(g.port, path=TUNNEL + "&pappsToken=bad"))
    assert st == 303 and headers["location"].startswith("http://") and body == b""
    c = WsClient(g.port, path=TUNNEL + "&pappsToken=pt")
    assert c.response.status_code == 101
    c.close()


def test_template_target(gateway):
    with EchoServer(greeting=b"A") as a, EchoServer(greeting=b"B") as b:
        tpl = "${req.query.remoteHost:127.0.0.1}:${req.query.remotePort:%d}" % a.port
        g = gateway([public(tpl)])
        for path, want in [(TUNNEL, b"A"), (TUNNEL + f"&remotePort={b.port}", b"B"),
                           (TUNNEL + f"&remoteHost=127.0.0.1&remotePort={a.port}", b"A")]:
            c = WsClient(g.port, path=path)
            assert c.receive_until_close(limit=1)[0] == want
            c.close()
    # A parameter missing without a default is Otoroshi's literal no-query-NAME.
    assert gw.render_target("${req.query.remoteHost}:1", {}) == "no-query-remoteHost:1"
    g.set_routes([public("${req.query.remoteHost}:${req.query.remotePort}")])
    c = WsClient(g.port)
    assert c.receive_until_close()[1] == 1011
    c.close()
    assert g.wait_records("closed", 4)[-1]["target"] == "no-query-remoteHost:no-query-remotePort"


def test_fragment_text_and_ping_frames(gateway):
    with SourceServer(1 << 20, seed=9) as src:
        g = gateway([public(src.addr, fragment=True, text_frames=True, ping_every=0.01,
                            frame_size=8192)])
        c = WsClient(g.port)
        got, code, frames = c.receive_until_close()
        c.close()
        assert sha256(got) == src.sha256 and code == 1000
        ops = {op for op, _, _ in frames}
        assert {OP_BINARY, OP_CONT, OP_TEXT, OP_PING} <= ops
        closed = g.wait_records("closed", 1)[0]
        assert closed["pings_sent"] > 0
        assert closed["pongs_matched"] >= 1
        assert all(seq > closed["last_pong_seq"] for seq in closed["pings_unanswered"])
        assert closed["pongs_unmatched"] == 0


def test_client_fragments_text_and_ping_accepted(gateway, echo):
    g = gateway([public(echo.addr)])
    c = WsClient(g.port)
    c.conn.send_binary(b"abc", fin=False)
    c.conn.send_ping(b"hello")
    c.conn.send_continuation(b"def", fin=True)
    c.conn.send_text(b"ignored text")
    c.conn.send_binary(b"ghi")
    c.flush()
    got = bytearray()
    pong = None
    while len(got) < 9 or pong is None:
        ev = c.next_event()
        assert ev is not None
        if ev.opcode == OP_PONG:
            pong = ev.data
        elif ev.opcode in (OP_BINARY, OP_CONT):
            got += ev.data
    assert bytes(got) == b"abcdefghi" and pong == b"hello"
    c.close()


def test_unmasked_client_frame_rejected(gateway, echo):
    g = gateway([public(echo.addr)])
    c = WsClient(g.port)
    c.sock.sendall(Frame(OP_BINARY, b"not masked").serialize(mask=False))
    _, code, _ = c.receive_until_close()
    c.close()
    assert code == 1002
    assert "masking" in g.wait_records("closed", 1)[0]["protocol_error"]


def test_slow_read(gateway):
    with SinkServer() as sink:
        g = gateway([public(sink.addr)], "--slow-read", str(1 << 20))
        c = WsClient(g.port)
        data = random_bytes(600_000, 11)
        t0 = time.monotonic()
        for i in range(0, len(data), 30_000):
            c.send(data[i:i + 30_000])
        c.conn.send_close(1000)
        c.flush()
        _, code, _ = c.receive_until_close()
        elapsed = time.monotonic() - t0
        c.close()
        assert code == 1000
        assert sink.wait_results(1, TIMEOUT)[0][1:] == (len(data), sha256(data))
        assert elapsed > 0.4, elapsed


def test_bad_accept_and_hang(gateway, echo):
    g = gateway([public(echo.addr, bad_accept=True)])
    c = WsClient(g.port)
    assert c.conn.handshake_exc is not None  # the library refuses the wrong accept
    c.close()
    g.set_routes([public(echo.addr, hang=True)])
    with socket.create_connection(("127.0.0.1", g.port), timeout=TIMEOUT) as s:
        s.sendall(upgrade_head(g.port))
        g.wait_records("request", 2)
        s.settimeout(0.3)
        with pytest.raises(socket.timeout):
            s.recv(1)


def test_ipv6_listen(gateway, echo):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"::1 unavailable: {exc}")
    g = gateway([dict(public(echo.addr), host="[::1]")], listen="[::1]:0")
    sock = socket.create_connection(("::1", g.port), timeout=TIMEOUT)
    sock.sendall(upgrade_head(g.port, host=f"[::1]:{g.port}"))
    assert sock.recv(12) == b"HTTP/1.1 101"
    sock.close()


def test_sigterm_stops_gateway(gateway, echo):
    g = gateway([public(echo.addr)])
    c = WsClient(g.port)
    g.proc.send_signal(signal.SIGTERM)
    assert g.proc.wait(5) == 0
    c.close()


def test_dribble_coalesce_and_abort_knobs(gateway):
    with EchoServer(greeting=b"hi!") as svc:
        g = gateway([public(svc.addr, coalesce=True)])
        with socket.create_connection(("127.0.0.1", g.port), timeout=TIMEOUT) as s:
            s.sendall(upgrade_head(g.port))
            buf = b""
            while not buf.endswith(b"hi!"):
                chunk = s.recv(4096)
                assert chunk, buf
                buf += chunk
            # The 101 and the first frame came in one segment.
            assert buf.startswith(b"HTTP/1.1 101 ") and buf.endswith(b"\x82\x03hi!")
        g.set_routes([public(svc.addr, dribble=True)])
        c = WsClient(g.port)
        assert c.response.status_code == 101
        assert c.receive_until_close(limit=3)[0] == b"hi!"
        c.close()
    with SourceServer(100_000, seed=3) as src:
        g.set_routes([public(src.addr, abort_after_bytes=10_000)])
        c = WsClient(g.port)
        got, code, _ = c.receive_until_close()
        c.close()
        assert len(got) == 10_000 and code is None  # TCP ended without a Close frame
        assert g.wait_records("closed", 3)[-1]["outcome"] == "aborted"


def test_response_header_and_forced_refusal_knobs(gateway, echo):
    g = gateway([public(echo.addr, response_headers={"Upgrade": "WebSocket",
                                                     "Connection": "keep-alive, UPGRADE"})])
    c = WsClient(g.port)
    assert c.response.status_code == 101 and c.conn.handshake_exc is None
    assert c.response.headers["Connection"] == "keep-alive, UPGRADE"
    c.close()
    g.set_routes([public(echo.addr, response_headers={"Upgrade": None})])
    c = WsClient(g.port)
    assert "Upgrade" not in c.response.headers and c.conn.handshake_exc is not None
    c.close()
    g.set_routes([public(echo.addr, refuse={"status": 502, "body": "<h1>bad gateway</h1>"})])
    st, headers, body = raw_request(g.port, upgrade_head(g.port))
    assert st == 502 and body == b"<h1>bad gateway</h1>" and headers["content-type"] == "text/html"
    g.set_routes([public(echo.addr, refuse={"status": 503, "body": "busy", "no_length": True})])
    with socket.create_connection(("127.0.0.1", g.port), timeout=TIMEOUT) as s:
        s.sendall(upgrade_head(g.port))
        buf = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    assert buf.startswith(b"HTTP/1.1 503 ") and buf.endswith(b"\r\n\r\nbusy")
    assert b"content-length" not in buf.lower()


def test_tls_listener(gateway, echo, tmp_path):
    from harness import make_certificate
    cert, key = make_certificate(tmp_path)
    g = gateway([dict(public(echo.addr), host="localhost")], "--tls-cert", cert, "--tls-key", key)
    ctx = ssl.create_default_context(cafile=str(cert))
    with socket.create_connection(("127.0.0.1", g.port), timeout=TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(upgrade_head(g.port, host=f"localhost:{g.port}"))
            assert s.recv(12) == b"HTTP/1.1 101"


def test_inline_route_flag(echo):
    import subprocess
    from harness import GATEWAY, PYTHON, read_line
    route = json.dumps(dict(public(echo.addr), host="*"))
    proc = subprocess.Popen([PYTHON, str(GATEWAY), "--listen", "127.0.0.1:0", "--route", route],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        port = int(read_line(proc.stdout, 15).split()[1])
        c = WsClient(port, host="anything.example")
        c.send(b"inline")
        assert c.receive_until_close(limit=6)[0] == b"inline"
        c.close()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(5) == 0
        proc.stdout.close()


# --- TLS: records, client certificates, alerts, the client's end, abort modes -----------

@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    p = Pki(tmp_path_factory.mktemp("pki"))
    ca = p.ca("Gateway Self-Test CA")
    return SimpleNamespace(
        ca=ca, server=ca.issue("localhost", dns=["localhost"], ips=["127.0.0.1"]),
        other=ca.issue("other", dns=["other.example"]),
        client=ca.issue("client", client=True, cn="gw-client"),
    )


def tls_client(certs, client=None, check_hostname=True):
    ctx = ssl.create_default_context(cafile=str(certs.ca.cert))
    ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # the session is there after the handshake
    ctx.check_hostname = check_hostname
    ctx.set_alpn_protocols(["http/1.1"])
    if client is not None:
        ctx.load_cert_chain(client.cert, client.key)
    return ctx


def tls_gateway(gateway, certs, routes, *args):
    return gateway(routes, "--tls-cert", certs.server.cert, "--tls-key", certs.server.key, *args)


def echo_and_close(c, data=b"tls echo"):
    c.send(data)
    got, _, _ = c.receive_until_close(limit=len(data))
    assert got == data
    c.conn.send_close(1000)
    c.flush()
    assert c.receive_until_close()[1] == 1000


def test_tls_records_sni_session_reuse_and_alpn(gateway, echo, certs):
    g = tls_gateway(gateway, certs, [dict(public(echo.addr), host="*")])
    ctx = tls_client(certs)
    c = WsClient(g.port, tls=ctx, server_hostname="localhost")
    echo_and_close(c)
    session = c.sock.session
    c.sock.unwrap()
    c.close()
    c = WsClient(g.port, tls=ctx, server_hostname="localhost", session=session)
    assert c.sock.session_reused
    echo_and_close(c)
    c.close()  # no close_notify
    c = WsClient(g.port, tls=tls_client(certs, check_hostname=False))  # no SNI
    echo_and_close(c)
    c.close()
    hs = g.wait_records("tls", 3)
    assert [r["sni"] for r in hs] == ["localhost", "localhost", None], hs
    assert [r["session_reused"] for r in hs] == [False, True, False], hs
    assert {r["alpn"] for r in hs} == {"http/1.1"} and {r["version"] for r in hs} == {"TLSv1.2"}
    assert [r["sni"] for r in g.records("sni")] == ["localhost", "localhost", None]
    ends = {r["id"]: r["tls_client_end"] for r in g.wait_records("closed", 3)}
    assert [ends[r["id"]] for r in hs][:2] == ["close_notify", "eof"], ends


def test_tls_client_ca_sends_the_alert_and_records_the_client(gateway, echo, certs):
    g = tls_gateway(gateway, certs, [dict(public(echo.addr), host="*")],
                    "--tls-client-ca", certs.ca.cert)
    with pytest.raises(ssl.SSLError) as err:
        c = WsClient(g.port, tls=tls_client(certs), server_hostname="localhost")
        c.close()
    assert "alert" in str(err.value).lower(), "the gateway's alert did not reach the client"
    failed = g.wait_records("tls", 1)[0]
    assert not failed["ok"] and "did not return a certificate" in failed["error"], failed
    assert g.requests() == []
    c = WsClient(g.port, tls=tls_client(certs, certs.client), server_hostname="localhost")
    echo_and_close(c)
    c.close()
    ok = g.wait_records("tls", 2)[1]
    assert ok["ok"] and ok["client_cert"] == "gw-client", ok


def test_tls_settings_switch_while_running(gateway, echo, certs):
    g = tls_gateway(gateway, certs, [dict(public(echo.addr), host="*")])
    g.set_tls(cert=certs.other.cert, key=certs.other.key)
    with pytest.raises(ssl.SSLCertVerificationError):
        WsClient(g.port, tls=tls_client(certs), server_hostname="localhost").close()
    g.set_tls()
    c = WsClient(g.port, tls=tls_client(certs), server_hostname="localhost")
    echo_and_close(c)
    c.close()


def raw_tls_upgrade(port, ctx, host="localhost"):
    """A TLS client on memory BIOs over a plain socket, so that the TCP end (FIN or
    RST) and the TLS end (close_notify or none) are each seen as they are."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=host)
    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            sock.sendall(out.read())
            data = sock.recv(65536)
            assert data, "EOF in the handshake"
            inc.write(data)
    obj.write(upgrade_head(port, host=host))
    sock.sendall(out.read())
    return sock, obj, inc


def tls_ends(sock, obj, inc):
    """Reads to the end: (TCP end 'fin' or 'reset', TLS end 'close_notify' or 'none',
    plaintext byte count)."""
    tcp_end = "fin"
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            tcp_end = "reset"
            break
        if not data:
            break
        inc.write(data)
    inc.write_eof()
    n = 0
    while True:
        try:
            chunk = obj.read(65536)
        except ssl.SSLZeroReturnError:
            return tcp_end, "close_notify", n
        except ssl.SSLError:
            return tcp_end, "none", n
        if not chunk:
            return tcp_end, "close_notify", n
        n += len(chunk)


@pytest.mark.parametrize("how,want", [("close", ("fin", "close_notify")),
                                      ("fin", ("fin", "none")), ("reset", ("reset", "none"))])
def test_tls_abort_modes(gateway, certs, how, want):
    with SourceServer(1 << 20, seed=5) as src:
        g = tls_gateway(gateway, certs, [dict(public(src.addr), host="*",
                                              abort_after_bytes=50_000, abort_how=how)])
        ctx = tls_client(certs)
        sock, obj, inc = raw_tls_upgrade(g.port, ctx)
        with sock:
            tcp_end, tls_end, n = tls_ends(sock, obj, inc)
        assert (tcp_end, tls_end) == want
        if how != "reset":
            assert n > 50_000  # the 101, the payload and the frame headers
        closed = g.wait_records("closed", 1)[0]
        assert closed["outcome"].startswith("aborted") and closed["bytes_to_client"] == 50_000


@pytest.mark.parametrize("limit", [None, "1.2"], ids=["python-default", "limited-to-1.2"])
def test_tls_max_version_limits_what_the_gateway_offers(gateway, echo, certs, limit):
    """Python's ssl offers TLS 1.3 by default; --tls-max-version 1.2 stops at 1.2, and the
    record names the version agreed. The client here offers both."""
    flags = ["--tls-max-version", limit] if limit else []
    g = tls_gateway(gateway, certs, [dict(public(echo.addr), host="*")], *flags)
    ctx = ssl.create_default_context(cafile=str(certs.ca.cert))
    ctx.set_alpn_protocols(["http/1.1"])
    c = WsClient(g.port, tls=ctx, server_hostname="localhost")
    want = "TLSv1.2" if limit else "TLSv1.3"
    assert c.sock.version() == want
    echo_and_close(c)
    c.close()
    assert g.wait_records("tls", 1)[0]["version"] == want
