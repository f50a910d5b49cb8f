"""The upgrade request, refusals, unreachable gateways and targets, secrets, logs."""

import base64
import re
import signal
import socket
import time
from urllib.parse import quote

import pytest

from helpers import (
    LINE_RE, echo_once, expect_closed, public_route, wait_until,
)
from services import EchoServer, free_port, refused_port

TUNNEL = "/.well-known/otoroshi/tunnel?transport=tcp"
WEIRD_HOST = "db.internal&x=1#frag= sp/\u00e9\u20ac~_-."
WEIRD_TOKEN = "tok&en=1#x y/\u00fc+%~"
SECRET = "s3cr:et&\u00e9Zq9"


def q(value):
    """Percent-encoding of every byte outside RFC 3986's unreserved set (uppercase hex)."""
    return quote(value, safe="", encoding="utf-8")


def b64(text):
    return base64.b64encode(text.encode()).decode()


def expected_head(path, host, key, auth):
    head = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n"
            f"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n")
    if auth is not None:
        head += f"Authorization: {auth}\r\n"
    return (head + "\r\n").encode()


HEAD_CASES = [
    pytest.param(["--access-type", "apikey", "--apikey-client-id", "cid-1",
                  "--apikey-client-secret", SECRET],
                 dict(access="apikey", apikeys=[f"cid-1:{SECRET}"]), "", f"Basic {b64('cid-1:' + SECRET)}",
                 id="apikey"),
    pytest.param(["--apikey-client-id", "cid-1", "--apikey-client-secret", SECRET],
                 dict(access="apikey", apikeys=[f"cid-1:{SECRET}"]), "", f"Basic {b64('cid-1:' + SECRET)}",
                 id="apikey-by-default"),
    pytest.param(["--access-type", "bearer", "--bearer-token", "tok.en_1-X"],
                 dict(access="bearer", tokens=["tok.en_1-X"]), "", "Bearer tok.en_1-X", id="bearer"),
    pytest.param(["--access-type", "jwt", "--bearer-token", "eyJhbGciOi.eyJzdWIi.c2ln"],
                 dict(access="bearer", tokens=["eyJhbGciOi.eyJzdWIi.c2ln"]), "",
                 "Bearer eyJhbGciOi.eyJzdWIi.c2ln", id="jwt"),
    pytest.param(["--access-type", "session", "--session-token", WEIRD_TOKEN],
                 dict(access="session", tokens=[WEIRD_TOKEN]), f"&pappsToken={q(WEIRD_TOKEN)}", None,
                 id="session"),
    pytest.param(["--access-type", "public"], dict(access="public"), "", None, id="public"),
    pytest.param(["--access-type", "public", "--remote-host", WEIRD_HOST, "--remote-port", "5432"],
                 dict(access="public"), f"&remoteHost={q(WEIRD_HOST)}&remotePort=5432", None,
                 id="remote-host-port"),
    pytest.param(["--access-type", "public", "--remote-port", "6379"],
                 dict(access="public"), "&remotePort=6379", None, id="remote-port-only"),
    pytest.param(["--access-type", "session", "--session-token", WEIRD_TOKEN,
                  "--remote-host", "db", "--remote-port", "1"],
                 dict(access="session", tokens=[WEIRD_TOKEN]),
                 f"&remoteHost=db&remotePort=1&pappsToken={q(WEIRD_TOKEN)}", None,
                 id="session-remote"),
]


@pytest.mark.parametrize("args,route_fields,query,auth", HEAD_CASES)
def test_request_head_byte_for_byte(gateway, tunnel, echo, args, route_fields, query, auth):
    g = gateway([dict(host="127.0.0.1", target=echo.addr, **route_fields)])
    t = tunnel(g, *args)
    for i in range(2):
        with t.connect() as s:
            assert echo_once(s, b"x%d" % i) == b"x%d" % i
    reqs = g.wait_records("request", 2)
    keys = []
    for rec in reqs:
        head = base64.b64decode(rec["head_b64"])
        key = dict(rec["headers"]).get("Sec-WebSocket-Key", "")
        want = expected_head(TUNNEL + query, g.addr, key, auth)
        assert head == want, f"\n got: {head!r}\nwant: {want!r}"
        raw = base64.b64decode(key, validate=True)
        assert len(raw) == 16 and base64.b64encode(raw).decode() == key
        assert rec["status"] == 101
        keys.append(key)
    assert keys[0] != keys[1], "Sec-WebSocket-Key must be fresh for every connection"
    # The gateway decoded the query back to the values given on the command line.
    params = dict(reqs[0]["params"])
    if "--remote-host" in args:
        assert params["remoteHost"] == args[args.index("--remote-host") + 1]
    if "--session-token" in args:
        assert params["pappsToken"] == args[args.index("--session-token") + 1]


def test_host_header_keeps_name_and_port(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr, host="localhost")])
    t = tunnel(f"localhost:{g.port}", "--access-type", "public")
    with t.connect() as s:
        echo_once(s)
    rec = g.wait_records("request", 1)[0]
    assert rec["headers"][0] == ["Host", f"localhost:{g.port}"]
    assert rec["status"] == 101


def test_startup_and_connection_log_lines(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, "--access-type", "public", "--remote-host", "db.internal", "--remote-port", "5432")
    assert t.listen.group("addr") == "127.0.0.1"
    assert t.port > 0
    assert t.listen.group("remote") == "db.internal:5432"
    assert t.listen.group("host") == g.addr
    with t.connect() as s:
        echo_once(s)
        t.wait_for(re.escape(f"New TCP connection from: 127.0.0.1:{s.getsockname()[1]}"), 5)
    t2 = tunnel(g, "--access-type", "public")
    assert t2.listen.group("remote") == "(defined in otoroshi target)"
    for line in t.text().splitlines() + t2.text().splitlines():
        assert "\x1b" not in line, f"colour codes on a non-terminal: {line!r}"
        assert LINE_RE.match(line), f"badly formatted log line: {line!r}"
    assert LINE_RE.match(t.text().splitlines()[0]).group(1) == "INFO "


def test_log_level_from_environment(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr)])
    port = free_port()
    quiet = tunnel(g, "--access-type", "public", "--local-port", port, level="error",
                   wait_ready=False)
    # Nothing at INFO is printed, so poll the port until it accepts; it must work.
    s = wait_until(lambda: try_connect(port), 10, message="the quiet tunnel to listen")
    assert echo_once(s, b"quiet") == b"quiet"
    s.close()
    loud = tunnel(g, "--access-type", "public", level="debug")
    with loud.connect() as s:
        echo_once(s)
    loud.wait_for(r"^\[DEBUG ", 5)
    verbose = tunnel(g, "--access-type", "public", "-v", level=None)
    with verbose.connect() as s:
        echo_once(s)
    verbose.wait_for(r"^\[DEBUG ", 5)
    quiet.stop()
    assert quiet.wait_exit(5) == 0
    assert not [line for line in quiet.lines if line.startswith("[INFO")], quiet.text()


def try_connect(port):
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        return None


# --- refusals -------------------------------------------------------------------

APIKEY_ARGS = ["--access-type", "apikey", "--apikey-client-id", "cid", "--apikey-client-secret", "sec"]
APIKEY_OK = dict(access="apikey", apikeys=["cid:sec"])

REFUSALS = [
    pytest.param(["--access-type", "public"], dict(access="public"), dict(access="apikey"),
                 400, "Bad Request", "no apikey", ["--access-type", "--apikey-client-id"],
                 id="400-no-apikey"),
    pytest.param(APIKEY_ARGS, APIKEY_OK, dict(access="apikey", apikeys=["other:sec"]),
                 400, "Bad Request", "invalid apikey tuple",
                 ["check --apikey-client-id"], id="400-invalid-tuple"),
    pytest.param(APIKEY_ARGS, APIKEY_OK, dict(access="apikey", apikeys=["cid:other"]),
                 401, "Unauthorized", "bad apikey", ["--apikey-client-secret"], id="401-wrong-secret"),
    pytest.param(APIKEY_ARGS, APIKEY_OK, dict(APIKEY_OK, revoked=["cid"]),
                 401, "Unauthorized", "bad apikey", ["the API key is disabled"], id="401-revoked"),
    pytest.param(APIKEY_ARGS, APIKEY_OK, dict(APIKEY_OK, constrained=["cid"]),
                 401, "Unauthorized", "invalid apikey", ["may not use this route"], id="401-constrained"),
    pytest.param(APIKEY_ARGS, APIKEY_OK, dict(APIKEY_OK, tags_mismatch=["cid"]),
                 403, "Forbidden", "forbidden", ["not allowed on this route"], id="403-tags"),
    pytest.param(APIKEY_ARGS, APIKEY_OK, dict(APIKEY_OK, quota_exceeded=["cid"]),
                 429, "Too Many Requests", "You performed too much requests", ["quota"], id="429-quota"),
    pytest.param(APIKEY_ARGS, APIKEY_OK, dict(APIKEY_OK, host="elsewhere.example"),
                 404, "Not Found", "no route found !", ["check --host"], id="404-wrong-host"),
    pytest.param(["--access-type", "session", "--session-token", "ptok"],
                 dict(access="session", tokens=["ptok"]), dict(access="session", tokens=[]),
                 303, "See Other", None, ["--session-token"], id="303-session-token-rejected"),
    pytest.param(APIKEY_ARGS, APIKEY_OK, dict(access="session", tokens=["ptok"]),
                 303, "See Other", None, ["--access-type session"], id="303-private-app"),
    pytest.param(["--access-type", "bearer", "--bearer-token", "btok"],
                 dict(access="bearer", tokens=["btok"]), dict(access="bearer", tokens=["other"]),
                 401, "Unauthorized", "invalid token", ["--bearer-token", "--access-type"],
                 id="401-bearer"),
]


@pytest.mark.parametrize("args,ok,refusing,status,phrase,text,hints", REFUSALS)
def test_refusal_closes_that_connection_only(gateway, tunnel, echo, args, ok, refusing,
                                              status, phrase, text, hints):
    ok_route = dict(dict(host="127.0.0.1", target=echo.addr), **ok)
    g = gateway([ok_route])
    t = tunnel(g, *args)
    a = t.connect()
    assert echo_once(a, b"before") == b"before"
    g.set_routes([dict(ok_route, **refusing)])
    mark = t.mark()
    b = t.connect()
    took = expect_closed(b, 5)
    b.close()
    assert took < 2.5, f"refused local connection closed only after {took:.1f}s"
    line = t.wait_for(rf"^\[ERROR .*\b{status}\b", 5, start=mark).string
    assert phrase in line, line
    if text:
        assert f": {text} \u2014 " in line, line
    # Otoroshi answered with an HTML page: none of it is shown.
    assert "<" not in line and "DOCTYPE" not in line, line
    if hints:
        assert any(h in line for h in hints), f"no hint among {hints} in: {line}"
    assert g.requests()[-1]["status"] == status
    # The tunnel opened before the refusal still carries data both ways.
    assert echo_once(a, b"after the refusal") == b"after the refusal"
    a.close()


def test_many_refusals_while_a_tunnel_flows(gateway, tunnel, echo):
    ok_route = dict(host="127.0.0.1", target=echo.addr, **APIKEY_OK)
    g = gateway([ok_route])
    t = tunnel(g, *APIKEY_ARGS)
    a = t.connect()
    echo_once(a)
    sequence = [(dict(apikeys=["other:x"]), 400), (dict(apikeys=["cid:x"]), 401), (dict(revoked=["cid"]), 401),
                (dict(tags_mismatch=["cid"]), 403), (dict(quota_exceeded=["cid"]), 429),
                (dict(host="nope.example"), 404)]
    for fields, status in sequence:
        g.set_routes([dict(ok_route, **fields)])
        mark = t.mark()
        with t.connect() as b:
            assert expect_closed(b, 5) < 2.5
        t.wait_for(rf"^\[ERROR .*\b{status}\b", 5, start=mark)
        payload = b"still here after %d" % status
        assert echo_once(a, payload) == payload
    g.set_routes([ok_route])
    with t.connect() as c:
        assert echo_once(c, b"accepted again") == b"accepted again"
    a.close()


def test_wrong_accept_key_is_refused(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr, bad_accept=True)])
    t = tunnel(g, "--access-type", "public")
    mark = t.mark()
    with t.connect() as s:
        s.sendall(b"must not be relayed")
        assert expect_closed(s, 5) < 2.5
    t.wait_for(r"^\[ERROR ", 5, start=mark)
    assert echo.bytes_echoed == 0


def test_unreachable_target_close_1011(gateway, tunnel):
    g = gateway([public_route(f"127.0.0.1:{free_port()}")])
    t = tunnel(g, "--access-type", "public")
    mark = t.mark()
    with t.connect() as s:
        assert expect_closed(s, 5) < 2.5
    t.wait_for(r"^\[ERROR .*Otoroshi could not reach the remote service", 5, start=mark)
    assert g.wait_records("closed", 1)[0]["outcome"] == "target_unreachable"


def test_gateway_connection_refused(tunnel):
    held, port = refused_port()  # refused for the 10 s of retries, taken by nothing else
    t = tunnel(f"127.0.0.1:{port}", "--access-type", "public")
    mark = t.mark()
    # Refused connections are tried again within the handshake's 10 s.
    with held, t.connect() as s:
        assert expect_closed(s, 12) < 11
    t.wait_for(r"(?i)^\[ERROR .*refused", 5, start=mark)
    t.wait_for(r"after \d+ attempts\)$", 5, start=mark)


def test_gateway_name_unresolvable(tunnel):
    name = "no-such-gateway.invalid"
    t = tunnel(f"{name}:8080", "--access-type", "public")
    mark = t.mark()
    with t.connect() as s:
        expect_closed(s, 15)
    t.wait_for(rf"^\[ERROR .*{re.escape(name)}", 5, start=mark)


def test_gateway_never_answers_upgrade(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr, hang=True)])
    t = tunnel(g, "--access-type", "public")
    mark = t.mark()
    with t.connect() as s:
        g.wait_records("request", 1)
        took = expect_closed(s, 16)
    assert 8 <= took <= 14, f"handshake timeout took {took:.1f}s, want about 10s"
    t.wait_for(r"(?i)^\[ERROR .*timed out", 5, start=mark)


# --- secrets --------------------------------------------------------------------

SECRET_CASES = [
    pytest.param(["--access-type", "apikey", "--apikey-client-id", "cid-visible",
                  "--apikey-client-secret", "Zk9-apikey-SECRET-&x"],
                 dict(access="apikey", apikeys=["cid-visible:Zk9-apikey-SECRET-&x"]),
                 dict(apikeys=["cid-visible:other"]), ["Zk9-apikey-SECRET-&x",
                                                      b64("cid-visible:Zk9-apikey-SECRET-&x")],
                 id="apikey"),
    pytest.param(["--access-type", "bearer", "--bearer-token", "Bq7-bearer-SECRET"],
                 dict(access="bearer", tokens=["Bq7-bearer-SECRET"]), dict(tokens=[]),
                 ["Bq7-bearer-SECRET"], id="bearer"),
    pytest.param(["--access-type", "jwt", "--bearer-token", "Jw3-jwt-SECRET"],
                 dict(access="bearer", tokens=["Jw3-jwt-SECRET"]), dict(tokens=[]),
                 ["Jw3-jwt-SECRET"], id="jwt"),
    pytest.param(["--access-type", "session", "--session-token", "Sx5-session SECRET&="],
                 dict(access="session", tokens=["Sx5-session SECRET&="]), dict(tokens=[]),
                 ["Sx5-session", q("Sx5-session SECRET&="), q(q("Sx5-session SECRET&="))],
                 id="session"),
]


@pytest.mark.parametrize("args,ok,refusing,forbidden", SECRET_CASES)
def test_secrets_never_logged_even_at_trace(gateway, tunnel, echo, args, ok, refusing, forbidden):
    ok_route = dict(dict(host="127.0.0.1", target=echo.addr), **ok)
    g = gateway([ok_route])
    t = tunnel(g, *args, level="trace")
    with t.connect() as s:
        echo_once(s)
        s.shutdown(socket.SHUT_WR)
        expect_closed(s, 5)
    g.set_routes([dict(ok_route, **refusing)])
    with t.connect() as s:
        expect_closed(s, 5)
    t.wait_for(r"^\[ERROR ", 5)
    t.stop(signal.SIGTERM)
    t.wait_exit(5)
    text = t.text() + "\n".join(t.stdout_lines)
    assert "[TRACE" in text, "expected trace output at OTOROSHICTL=trace"
    for secret in forbidden:
        assert secret not in text, f"secret {secret!r} leaked:\n" + "\n".join(
            line for line in text.splitlines() if secret in line)


# --- other handshake behaviour -----------------------------------------------------

def test_bytes_sent_before_handshake_completes_are_kept(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr, handshake_delay=0.7)])
    t = tunnel(g, "--access-type", "public")
    payload = bytes(range(256)) * 400  # 100 KiB
    with t.connect() as s:
        s.sendall(payload)  # straight away, long before the 101 comes back
        t0 = time.monotonic()
        got = b""
        s.settimeout(10)
        while len(got) < len(payload):
            chunk = s.recv(65536)
            assert chunk, f"EOF after {len(got)} bytes"
            got += chunk
        assert got == payload
        assert time.monotonic() - t0 > 0.3  # the delay really was in the way


def ipv6_available():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_available(), reason="no ::1 on this machine")
def test_ipv6_literal_gateway(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr, host="[::1]")], listen="[::1]:0")
    host = f"[::1]:{g.port}"
    t = tunnel(host, "--access-type", "public")
    assert t.listen.group("host") == host
    with t.connect() as s:
        assert echo_once(s, b"over v6") == b"over v6"
    rec = g.wait_records("request", 1)[0]
    assert rec["headers"][0] == ["Host", host]


def test_template_target_follows_remote_flags(gateway, tunnel, service):
    a = service(EchoServer, greeting=b"service-A\n")
    b = service(EchoServer, greeting=b"service-B\n")
    tpl = "${req.query.remoteHost:127.0.0.1}:${req.query.remotePort:%d}" % a.port
    g = gateway([public_route(tpl)])

    def greeting(t):
        with t.connect() as s:
            s.settimeout(10)
            got = b""
            while not got.endswith(b"\n"):
                chunk = s.recv(100)
                assert chunk, got
                got += chunk
            return got

    assert greeting(tunnel(g, "--access-type", "public", "--remote-host", "127.0.0.1",
                           "--remote-port", b.port)) == b"service-B\n"
    assert greeting(tunnel(g, "--access-type", "public", "--remote-port", a.port)) == b"service-A\n"
    assert greeting(tunnel(g, "--access-type", "public")) == b"service-A\n"  # defaults
    # A fixed target ignores the parameters.
    g.set_routes([public_route(a.addr)])
    assert greeting(tunnel(g, "--access-type", "public", "--remote-port", b.port)) == b"service-A\n"
    targets = [r["target"] for r in g.requests()]
    assert targets == [b.addr, a.addr, a.addr, a.addr]
