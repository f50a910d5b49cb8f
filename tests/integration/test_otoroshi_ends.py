"""How tunnels end, refuse and stay alive against a gateway that does what Otoroshi
does (PROTOCOL.md sections 3 to 7): a client Close is echoed at once and the target's
later data dropped, so a local end of input lingers instead of closing; a gateway's
Close is answered at once; a quiet tunnel is kept open by pings through the route's
idle timeout, and a flow-controlled gateway is not declared dead; refusals show
Otoroshi-Error-Msg, never HTML; and the reference client's command line works."""

import re
import socket
import subprocess
import time

import pytest

from helpers import Transfer, TunnelProcess, binary, clean_env, echo_once, expect_closed, public_route
from hops import PYTHON, env_for, sshd, stdio  # noqa: F401,F811  (fixtures)
from services import (
    EchoServer, ReplyAfterEOFServer, SlowSinkServer, SourceServer, random_bytes, reply_after_eof,
    sha256, wait_until,
)
from test_redis import redis  # noqa: F401  (a fixture)

PUBLIC = ["--access-type", "public"]
MIB = 1 << 20


# --- a local end of input: linger, then Close ------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 1024, MIB, 16 * MIB])
def test_request_then_half_close_gets_the_whole_reply(gateway, tunnel, echo, size):
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC)
    data = random_bytes(size, seed=size + 1)
    s = t.connect()
    tr = Transfer(s, data, half_close=True, keep=False, timeout=60).wait(60)
    s.close()
    assert tr.nreceived == size and tr.digest == sha256(data)
    closed = g.wait_records("closed", 1)[0]
    # The Close came only after the reply, so the gateway dropped nothing.
    assert closed["client_close_code"] == 1000, closed
    assert closed["dropped_after_client_close"] == 0, closed
    assert closed["bytes_to_client"] == size
    # And the tunnel ended within the linger (2 s) of the last byte.
    after = tr.eof_at - max(tr.sent_at, tr.last_at or 0)
    assert 1.5 < after < 4, f"EOF {after:.2f}s after the last byte"
    summary = t.wait_for(r"Tunnel from .* closed after", 5).string
    assert "(local close" in summary, summary


def test_linger_ends_after_the_reply_stops(gateway, tunnel, service):
    # A target that answers a question in pieces, then keeps its side open: the local
    # client ended its input right after the question, and everything the target sends
    # with gaps shorter than the linger is delivered, then the Close goes.
    class Chatty(EchoServer):
        def serve(self, conn, index):
            question = b""
            while not question.endswith(b"\n"):
                question += conn.recv(1)
            for i in range(5):
                conn.sendall(b"part %d\n" % i)
                time.sleep(0.3)
            self.stopped.wait(20)

    svc = service(Chatty)
    g = gateway([public_route(svc.addr)])
    t = tunnel(g, *PUBLIC, "--linger", "1")
    s = t.connect()
    tr = Transfer(s, b"question\n", half_close=True, timeout=30).wait(30)
    s.close()
    assert bytes(tr.received) == b"".join(b"part %d\n" % i for i in range(5))
    took = tr.eof_at - tr.sent_at
    assert 2.0 < took < 4.0, f"EOF {took:.2f}s after the half-close (5 parts over 1.2 s, then 1 s)"
    closed = g.wait_records("closed", 1)[0]
    assert closed["outcome"].startswith("client_close"), closed


def test_redis_ping_then_shut_wr_gets_pong(gateway, tunnel, redis):
    # What `printf 'PING\r\n' | nc -N 127.0.0.1 PORT` does.
    g = gateway([public_route(f"127.0.0.1:{redis}")])
    t = tunnel(g, *PUBLIC)
    s = t.connect()
    tr = Transfer(s, b"PING\r\n", half_close=True, timeout=20).wait(20)
    s.close()
    assert bytes(tr.received) == b"+PONG\r\n"


def test_linger_0_sends_close_at_once_at_the_price_of_the_reply(gateway, tunnel, service):
    svc = service(ReplyAfterEOFServer)
    g = gateway([public_route(svc.addr)])
    t = tunnel(g, *PUBLIC, "--linger", "0", level="debug")
    s = t.connect()
    request = random_bytes(5000, seed=3)
    tr = Transfer(s, request, half_close=True, timeout=20).wait(20)
    s.close()
    took = tr.eof_at - tr.sent_at
    assert took < 1.0, f"the Close waited {took:.2f}s"
    # The target learnt of the end of input (it replied) and the gateway dropped the
    # reply, as Otoroshi does after a client Close.
    wait_until(lambda: svc.inputs, 5, message="the target's EOF")
    assert svc.inputs == [request]
    closed = g.wait_records("closed", 1)[0]
    assert closed["client_close_code"] == 1000
    assert closed["dropped_after_client_close"] == len(reply_after_eof(request)), closed
    assert tr.nreceived == 0
    t.wait_for(r"tunnel \d+: the local side ended: sending Close 1000", 5)


def test_a_target_that_waits_for_eof_gets_it_after_the_linger(gateway, tunnel, service):
    # Through Otoroshi, the only end of input a target can see is the one a Close
    # brings: with the default linger, after 2 s of silence.
    svc = service(ReplyAfterEOFServer)
    g = gateway([public_route(svc.addr)])
    t = tunnel(g, *PUBLIC)
    s = t.connect()
    t0 = time.monotonic()
    Transfer(s, b"abc", half_close=True, timeout=20).wait(20)
    s.close()
    wait_until(lambda: svc.inputs, 5, message="the target's EOF")
    assert 1.5 < time.monotonic() - t0 < 4


def test_stdio_with_stdin_closed_after_a_request_prints_the_reply(gateway, stdio, echo):
    g = gateway([public_route(echo.addr)])
    data = random_bytes(300_000, seed=5)
    r = stdio(["--host", g.addr, *PUBLIC], data=data)
    rc = r.wait(20)
    assert rc == 0, r.err_text()
    assert r.nout == len(data) and r.digest == sha256(data)
    closed = g.wait_records("closed", 1)[0]
    assert closed["client_close_code"] == 1000 and closed["dropped_after_client_close"] == 0


def test_stop_signal_closes_at_once_without_lingering(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC, "--linger", "30")
    s = t.connect()
    assert echo_once(s, b"x") == b"x"
    t0 = time.monotonic()
    assert t.stop() == 0
    assert time.monotonic() - t0 < 2.5
    closed = g.wait_records("closed", 1)[0]
    assert closed["client_close_code"] == 1000
    s.close()


# --- the gateway's Close ----------------------------------------------------------------

def test_gateway_close_is_answered_at_once_while_the_client_stays_open(gateway, tunnel, service):
    src = service(SourceServer, 200_000, seed=9)
    g = gateway([public_route(src.addr)])
    t = tunnel(g, *PUBLIC)
    s = t.connect()
    got = b""
    s.settimeout(10)
    while len(got) < 200_000:
        chunk = s.recv(65536)
        assert chunk
        got += chunk
    assert sha256(got) == src.sha256
    # The local client keeps its side open; the gateway has its answer anyway.
    closed = g.wait_records("closed", 1, timeout=5)[0]
    assert closed["outcome"] == "target_eof", closed  # not "+no_client_close"
    assert closed["client_close_code"] == 1000
    assert closed["duration"] < 3
    assert s.recv(1) == b""  # and the local client got its FIN
    s.close()


# --- idle: the route's backend idle timeout -----------------------------------------------

def test_keepalive_keeps_a_quiet_tunnel_through_the_idle_timeout(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr, idle_timeout=3)])
    t = tunnel(g, *PUBLIC, "--keepalive", "1")
    s = t.connect()
    assert echo_once(s, b"before") == b"before"
    s.settimeout(5)
    with pytest.raises(socket.timeout):  # 5 s of quiet, longer than the 3 s idle timeout
        s.recv(1)
    assert echo_once(s, b"after") == b"after"
    s.close()
    assert "idle" not in t.text()


def test_without_keepalive_the_idle_timeout_is_explained(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr, idle_timeout=3)])
    t = tunnel(g, *PUBLIC, "--keepalive", "0")
    s = t.connect()
    peer = f"127.0.0.1:{s.getsockname()[1]}"
    assert echo_once(s, b"before") == b"before"
    took = expect_closed(s, 10)
    s.close()
    assert 2.5 < took < 5, took
    line = t.wait_for(r"Otoroshi closed the idle tunnel for " + re.escape(peer), 5).string
    assert line.startswith("[WARN ")
    assert re.search(r"\(Close 1011 after 3 s without traffic\): the route's backend idle timeout; "
                     r"a --keepalive below it keeps quiet tunnels open", line), line
    summary = t.wait_for(r"Tunnel from " + re.escape(peer) + r" closed after", 5).string
    assert "(gateway idle timeout, Close 1011)" in summary, summary


def test_ssh_session_idle_longer_than_the_idle_timeout_still_answers(gateway, sshd, tmp_path, home):
    g = gateway([public_route(f"127.0.0.1:{sshd.port}", idle_timeout=3)])
    proxy = " ".join([binary(), "tcp-tunnel", "--stdio", "--host", g.addr, *PUBLIC, "--keepalive", "1"])
    r = subprocess.run(sshd.ssh_args(proxy, "sleep 5; echo still here"), capture_output=True,
                       env=env_for(home, None), timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert r.stdout == b"still here\n"
    closed = g.wait_records("closed", 1)[0]
    assert closed["client_pings"] >= 3 and not closed["outcome"].startswith("target_idle"), closed


# --- liveness is progress -------------------------------------------------------------------

def test_flow_controlled_upload_is_not_declared_dead(gateway, tunnel, service):
    sink = service(SlowSinkServer, MIB)
    g = gateway([public_route(sink.addr)])
    t = tunnel(g, *PUBLIC, "--keepalive", "1")
    data = random_bytes(8 * MIB, seed=8)
    s = t.connect()
    t0 = time.monotonic()
    tr = Transfer(s, data, half_close=True, keep=False, timeout=60).wait(60)
    s.close()
    results = sink.wait_results(1, 30)
    assert results[0][1:] == (len(data), sha256(data))
    assert time.monotonic() - t0 > 5  # it was flow-controlled: 8 MiB at 1 MiB/s
    assert "stopped answering" not in t.text(), t.text()
    assert tr.nreceived == 0


# --- refusals: Otoroshi's message, never HTML -----------------------------------------------

APIKEY_ROUTE = dict(host="127.0.0.1", access="apikey", target="127.0.0.1:9",
                    apikeys=["good:s3cret", "rev:x", "con:x", "tag:x", "quo:x"], revoked=["rev"],
                    constrained=["con"], tags_mismatch=["tag"], quota_exceeded=["quo"])


@pytest.mark.parametrize("cid,secret,status,message,hint", [
    ("nobody", "x", 400, "invalid apikey tuple", "no API key has this client id: check --apikey-client-id"),
    ("good", "wrong", 401, "bad apikey", "the client secret is wrong, or the API key is disabled"),
    ("rev", "x", 401, "bad apikey", "the client secret is wrong, or the API key is disabled"),
    ("con", "x", 401, "invalid apikey", "this API key may not use this route"),
    ("tag", "x", 403, "forbidden", "not allowed on this route"),
    ("quo", "x", 429, "You performed too much requests", "quota is exhausted"),
])
def test_refusals_show_otoroshis_message_and_no_html(gateway, tunnel, cid, secret, status, message, hint):
    g = gateway([APIKEY_ROUTE], "--refusal-linger", "5")
    t = tunnel(g, "--apikey-client-id", cid, "--apikey-client-secret", secret, level="debug")
    s = t.connect()
    expect_closed(s, 5)
    s.close()
    line = t.wait_for(r"Otoroshi refused the tunnel for ", 5).string
    assert f": HTTP {status} " in line and f": {message} \u2014 " in line and hint in line, line
    assert "<" not in line and "DOCTYPE" not in line, line
    assert g.requests()[0]["status"] == status


def test_404_no_route_and_wrong_path_hints(gateway, tunnel):
    g = gateway([public_route("127.0.0.1:9", host="tunnel.example")], "--refusal-linger", "5")
    t = tunnel(g, *PUBLIC)
    s = t.connect()
    expect_closed(s, 5)
    s.close()
    line = t.wait_for(r"Otoroshi refused the tunnel for ", 5).string
    assert "HTTP 404 Not Found: no route found ! \u2014 no route serves this host: check --host" in line, line


def test_refusal_from_a_template_page_shows_its_title_only(gateway, tunnel):
    g = gateway([dict(APIKEY_ROUTE, error_template=True)], "--refusal-linger", "5")
    t = tunnel(g, "--apikey-client-id", "nobody", "--apikey-client-secret", "x")
    s = t.connect()
    expect_closed(s, 5)
    s.close()
    line = t.wait_for(r"Otoroshi refused the tunnel for ", 5).string
    assert 'HTTP 400 Bad Request: an HTML error page ("Access denied")' in line, line
    assert "<p>" not in line


def test_error_cause_at_debug_level(gateway, tunnel):
    g = gateway([APIKEY_ROUTE], "--refusal-linger", "5", "--modern-errors")
    t = tunnel(g, "--apikey-client-id", "nobody", "--apikey-client-secret", "x", level="debug")
    s = t.connect()
    expect_closed(s, 5)
    s.close()
    # The request has no Accept header: an HTML page, the cause header only in the
    # modern JSON format; the message is the header's either way.
    t.wait_for(r"HTTP 400 Bad Request: invalid apikey tuple", 5)


# --- the gateway closing at once: a dynamic target, a route without the plugin ---------------

def test_dynamic_target_without_remote_options_gets_the_hint(gateway, tunnel):
    g = gateway([public_route("${req.query.remoteHost}:${req.query.remotePort}")])
    t = tunnel(g, *PUBLIC)
    s = t.connect()
    expect_closed(s, 5)
    s.close()
    line = t.wait_for(r"Otoroshi could not reach the remote service for ", 5).string
    assert "right after the handshake" in line
    assert ("if the route's target uses ${req.query.remoteHost}:${req.query.remotePort}, pass "
            "--remote-host and --remote-port") in line, line
    assert g.wait_records("request", 1)[0]["target"] == "no-query-remoteHost:no-query-remotePort"


def test_unreachable_target_with_remote_options_has_no_dynamic_hint(gateway, tunnel):
    g = gateway([public_route("${req.query.remoteHost}:${req.query.remotePort}")])
    t = tunnel(g, *PUBLIC, "--remote-host", "127.0.0.1", "--remote-port", "9")
    s = t.connect()
    expect_closed(s, 5)
    s.close()
    line = t.wait_for(r"Otoroshi could not reach the remote service for ", 5).string
    assert "req.query" not in line


def test_early_close_with_an_error_hints_at_the_missing_plugin(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr, backend_close=1002)])
    t = tunnel(g, *PUBLIC)
    s = t.connect()
    expect_closed(s, 5)
    s.close()
    line = t.wait_for(r"Otoroshi closed the tunnel for .* with code 1002", 5).string
    assert "right after the handshake, before any data: the route may lack the TCP tunnel plugin" in line


# --- the reference client's command line ------------------------------------------------------

REFERENCE_GLOBALS = [
    "-o", "json", "--ouput=yaml", "-c", "/nonexistent/otoroshictl.yaml", "--config-file", "x",
    "--otoroshi-cluster-tls", "--otoroshi-cluster-hostname", "otoroshi-api.oto.tools",
    "--otoroshi-cluster-port", "8443", "--otoroshi-cluster-routing-tls",
    "--otoroshi-cluster-routing-hostname", "r.oto.tools", "--otoroshi-cluster-routing-port", "9443",
    "--otoroshi-user-client-id", "admin-id", "--otoroshi-user-client-secret", "admin-secret",
    "--otoroshi-user-health-key", "hk", "--otoroshi-cluster-cert-location", "c.pem",
    "--otoroshi-cluster-key-location", "k.pem", "--otoroshi-cluster-ca-location", "ca.pem",
]


def test_every_reference_global_option_is_accepted_anywhere(gateway, echo, home):
    g = gateway([public_route(echo.addr)])
    args = [*REFERENCE_GLOBALS[:7], "tcp-tunnel", "--host", g.addr, *PUBLIC, "--local-port", "0",
            *REFERENCE_GLOBALS[7:]]
    t = TunnelProcess(args, clean_env(home, None), command="-v")  # -v first, as the reference takes it
    try:
        s = t.connect()
        assert echo_once(s, b"reference") == b"reference"
        s.close()
        for name in ("ouput", "config-file", "otoroshi-cluster-tls", "otoroshi-cluster-ca-location",
                     "otoroshi-user-client-secret"):
            t.wait_for(r"^\[DEBUG otoroshictl::tunnels::tcp\] ignoring --" + re.escape(name) + ":", 5)
        assert "admin-secret" not in t.text()
    finally:
        t.close()


def test_remote_shown_as_the_reference_shows_it(gateway, tunnel):
    g = gateway([public_route("127.0.0.1:9")])
    t = tunnel(g, *PUBLIC, "--remote-port", "5432")
    assert t.listen.group("remote") == ":5432"
    t2 = tunnel(g, *PUBLIC, "--remote-host", "db.internal")
    assert t2.listen.group("remote") == "db.internal"
    t3 = tunnel(g, *PUBLIC)
    assert t3.listen.group("remote") == "(defined in otoroshi target)"


@pytest.mark.parametrize("host", ["::1", "[::1]", "fd00::5"])
def test_ipv6_remote_host_is_warned_about(gateway, tunnel, host):
    g = gateway([public_route("127.0.0.1:9")])
    t = tunnel(g, *PUBLIC, "--remote-host", host, "--remote-port", "22")
    line = t.wait_for(r"--remote-host .* is an IPv6 address", 5).string
    assert line.startswith("[WARN ") and "use a host name" in line
    t2 = tunnel(g, *PUBLIC, "--remote-host", "db6.internal", "--remote-port", "22")
    assert "IPv6" not in t2.text()


def failed_bind(home, env):
    """A run that logs one line and exits: a bind to an address that cannot be."""
    return subprocess.run([binary(), "tcp-tunnel", "--host", "127.0.0.1:1", *PUBLIC, "--local-port", "0",
                           "--local-host", "256.0.0.1"], capture_output=True,
                          env=clean_env(home, None, env), timeout=10)


@pytest.mark.parametrize("style,env,coloured", [
    ("always", {}, True), ("never", {}, False), ("auto", {}, False), ("ALWAYS", {}, True),
    ("always", {"NO_COLOR": "1"}, False),
])
def test_log_style(home, style, env, coloured):
    r = failed_bind(home, dict(env, OTOROSHICTL_LOG_STYLE=style))
    err = r.stderr.decode()
    assert r.returncode == 1 and "Failed to bind" in err, err
    assert ("\x1b[" in err) == coloured, repr(err)


def test_unknown_log_style_warns(home):
    r = failed_bind(home, {"OTOROSHICTL_LOG_STYLE": "rainbow"})
    assert "OTOROSHICTL_LOG_STYLE holds an unknown style (use auto, always or never)" in r.stderr.decode()
