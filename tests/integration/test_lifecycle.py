"""Process life cycle: signals, bind failures, usage errors, the `tt` alias."""

import signal
import socket
import time

import pytest

from helpers import clean_env, echo_once, expect_closed, public_route, run_cli
from services import StubbornServer, free_port


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_sends_close_1000_on_every_tunnel(gateway, tunnel, echo, sig):
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, "--access-type", "public")
    socks = [t.connect() for _ in range(3)]
    for i, s in enumerate(socks):
        assert echo_once(s, b"open %d" % i) == b"open %d" % i
    ids = {r["id"] for r in g.wait_records("request", 3)}
    t0 = time.monotonic()
    t.proc.send_signal(sig)
    rc = t.wait_exit(6)
    took = time.monotonic() - t0
    assert rc == 0, t.text()
    assert took < 3, f"exit took {took:.1f}s"
    closes = g.wait_records("client_close", 3, timeout=5)
    assert {c["id"] for c in closes} == ids
    assert [c["code"] for c in closes] == [1000, 1000, 1000]
    for s in socks:
        expect_closed(s, 3)
        s.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", t.port), timeout=2).close()


def test_signal_gives_up_on_tunnels_that_do_not_finish(gateway, tunnel, service):
    # The target never ends its side, so the gateway never answers the Close:
    # the tunnel must still exit after its ~2 s grace period.
    stubborn = service(StubbornServer)
    g = gateway([public_route(stubborn.addr)])
    t = tunnel(g, "--access-type", "public")
    s = t.connect()
    s.sendall(b"hello")
    g.wait_records("request", 1)
    t0 = time.monotonic()
    t.proc.send_signal(signal.SIGTERM)
    rc = t.wait_exit(8)
    took = time.monotonic() - t0
    s.close()
    assert rc == 0
    assert took < 3.5, f"exit took {took:.1f}s"
    assert g.wait_records("client_close", 1, timeout=5)[0]["code"] == 1000


def test_alias_tt_and_explicit_local_port(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr)])
    port = free_port()
    t = tunnel(g, "--access-type", "public", "--local-host", "127.0.0.1", "--local-port", port,
               command="tt")
    assert t.port == port
    with t.connect() as s:
        assert echo_once(s, b"via tt") == b"via tt"


def test_bind_failure_exits_1(home):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        r = run_cli(["--host", "127.0.0.1:9", "--access-type", "public", "--local-port", port],
                    clean_env(home), timeout=10)
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 1, err
    assert "Failed to bind to" in err and f":{port}" in err, err


USAGE_ERRORS = [
    pytest.param(["--host", "gw:1", "--access-type", "public", "--bogus"], "--bogus", id="unknown-option"),
    pytest.param(["--host", "gw:1", "--access-type", "public", "--local-port", "70000"], "--local-port",
                 id="port-too-big"),
    pytest.param(["--host", "gw:1", "--access-type", "public", "--local-port", "abc"], "--local-port",
                 id="port-not-a-number"),
    pytest.param(["--host", "gw:1", "--access-type", "public", "--remote-port", "12x"], "--remote-port",
                 id="bad-remote-port"),
    pytest.param(["--access-type", "public"], "--host", id="missing-host"),
    pytest.param(["--host", "gw:1", "--access-type", "kerberos"], "--access-type",
                 id="unknown-access-type"),
    pytest.param(["--host", "gw:1", "--access-type", "apikey", "--apikey-client-id", "id"],
                 "--apikey-client-secret", id="apikey-without-secret"),
    pytest.param(["--host", "gw:1", "--access-type", "apikey", "--apikey-client-secret", "s"],
                 "--apikey-client-id", id="apikey-without-id"),
    pytest.param(["--host", "gw:1"], "--apikey-client-", id="default-apikey-without-credentials"),
    pytest.param(["--host", "gw:1", "--access-type", "bearer"], "--bearer-token",
                 id="bearer-without-token"),
    pytest.param(["--host", "gw:1", "--access-type", "jwt"], "--bearer-token", id="jwt-without-token"),
    pytest.param(["--host", "gw:1", "--access-type", "session"], "--session-token",
                 id="session-without-token"),
]


@pytest.mark.parametrize("args,flag", USAGE_ERRORS)
def test_usage_errors_exit_2_without_listening(home, args, flag):
    port = free_port()
    if "--local-port" not in args:
        args = args + ["--local-port", str(port)]
    r = run_cli(args, clean_env(home), timeout=10)
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 2, f"exit {r.returncode}; stderr: {err}"
    assert flag in err, f"stderr does not name {flag}: {err}"
    assert "listening" not in err.lower(), err
    lines = [line for line in err.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 3, f"want a short message, got: {err}"


def test_a_tunnel_outlives_the_handshake_time_limit(gateway, tunnel, echo):
    # The 10 s limit is the handshake's: an open tunnel, busy or quiet, is
    # not ended by it. Time itself is what is tested here, so the test waits.
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, "--access-type", "public")
    with t.connect() as s:
        assert echo_once(s, b"first") == b"first"
        time.sleep(11)
        assert echo_once(s, b"after the limit") == b"after the limit"
    assert "timed out" not in t.text()
