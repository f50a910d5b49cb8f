"""A real HTTP CONNECT proxy (tinyproxy, started by each test) between the tunnel and
the gateway: ws and wss, --proxy and the *_PROXY variables, NO_PROXY, a 407, proxy
credentials kept out of the logs, and the graceful stop with a proxy and keepalive."""

import base64
import re
import signal
import socket
import time
from types import SimpleNamespace

import pytest

from helpers import Transfer, echo_once, expect_closed, public_route, run_cli
from hops import env_for, tinyproxy  # noqa: F401,F811  (a fixture)
from pki import Pki
from services import EchoServer, StubbornServer, free_port, random_bytes, sha256

PUBLIC = ["--access-type", "public"]
MIB = 1 << 20


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    p = Pki(tmp_path_factory.mktemp("proxy-pki"))
    ca = p.ca("Proxy Test CA")
    rogue = p.ca("Proxy Rogue CA")
    return SimpleNamespace(ca=ca, rogue=rogue,
                           localhost=ca.issue("localhost", dns=["localhost"], ips=["127.0.0.1"]))


def dead_proxy():
    """A proxy URL where nothing listens: using it fails."""
    return f"http://127.0.0.1:{free_port()}"


def transfer_hash_checked(t, size=3 * MIB, seed=5):
    data = random_bytes(size, seed)
    with t.connect() as s:
        tr = Transfer(s, data, keep=False).wait(60)
    assert tr.nreceived == len(data) and tr.digest == sha256(data)
    return data


def tunnel_env(home, level="info", **extra):
    return env_for(home, level, extra)


# --- ws through the proxy ------------------------------------------------------------------

@pytest.mark.parametrize("how", ["flag", "HTTP_PROXY", "http_proxy"])
def test_ws_through_the_proxy(gateway, tunnel, echo, tinyproxy, home, how):
    proxy = tinyproxy()
    g = gateway([public_route(echo.addr)])
    if how == "flag":
        # --proxy wins over the environment's (dead) proxies.
        t = tunnel(g, *PUBLIC, "--proxy", proxy.url,
                   env=dict(HTTP_PROXY=dead_proxy(), http_proxy=dead_proxy()))
        source = "--proxy"
    else:
        # HTTPS_PROXY is for wss:// only: a dead one must not be used for ws://.
        t = tunnel(g, *PUBLIC, env={how: proxy.url, "HTTPS_PROXY": dead_proxy(),
                                    "https_proxy": dead_proxy()})
        source = how
    t.wait_for(re.escape(f"Reaching Otoroshi through the HTTP proxy 127.0.0.1:{proxy.port} "
                         f"(from {source})"), 5)
    data = transfer_hash_checked(t)
    assert proxy.wait_connects(1) == [f"127.0.0.1:{g.port}"]
    closed = g.wait_records("closed", 1)[0]
    assert closed["sha256_from_client"] == sha256(data)
    assert closed["client_close_code"] == 1000
    # The gateway saw the connection come from the proxy, with an intact upgrade.
    rec = g.requests()[0]
    assert rec["status"] == 101 and rec["headers"][0] == ["Host", g.addr]


def test_lowercase_http_proxy_wins_over_uppercase(gateway, tunnel, echo, tinyproxy):
    proxy = tinyproxy()
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC, env=dict(http_proxy=proxy.url, HTTP_PROXY=dead_proxy()))
    with t.connect() as s:
        assert echo_once(s) == b"hello through the tunnel\n"
    assert proxy.wait_connects(1)


def test_many_tunnels_through_the_proxy(gateway, tunnel, echo, tinyproxy):
    proxy = tinyproxy()
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC, "--proxy", proxy.url)
    socks = [t.connect() for _ in range(8)]
    transfers = [Transfer(s, random_bytes(200000 + i, i), keep=False) for i, s in enumerate(socks)]
    for i, tr in enumerate(transfers):
        tr.wait(30)
        assert tr.digest == sha256(random_bytes(200000 + i, i))
    for s in socks:
        s.close()
    assert len(proxy.wait_connects(8)) == 8


# --- wss through the proxy --------------------------------------------------------------------

def test_wss_through_https_proxy(gateway, tunnel, echo, tinyproxy, certs):
    proxy = tinyproxy()
    g = gateway([dict(host="localhost", access="apikey", apikeys=["wss-id:wss-secret"],
                      target=echo.addr)],
                "--tls-cert", certs.localhost.cert, "--tls-key", certs.localhost.key)
    env = dict(HTTPS_PROXY=proxy.url, HTTP_PROXY=dead_proxy(), http_proxy=dead_proxy(),
               OTOROSHI_APIKEY_CLIENT_ID="wss-id", OTOROSHI_APIKEY_CLIENT_SECRET="wss-secret")
    t = tunnel(f"localhost:{g.port}", "--tls", "--ca-cert", certs.ca.cert, env=env)
    t.wait_for(re.escape(f"through the HTTP proxy 127.0.0.1:{proxy.port} (from HTTPS_PROXY)"), 5)
    data = transfer_hash_checked(t, 4 * MIB + 1, seed=6)
    assert proxy.wait_connects(1) == [f"localhost:{g.port}"]
    tls = g.wait_records("tls", 1)[0]
    assert tls["ok"] and tls["sni"] == "localhost", tls
    closed = g.wait_records("closed", 1)[0]
    assert closed["sha256_to_client"] == sha256(data)


def test_wss_through_proxy_still_verifies_the_gateway(gateway, tunnel, echo, tinyproxy, certs):
    # The proxy is no reason to trust: a certificate from an unknown CA is refused.
    proxy = tinyproxy()
    g = gateway([public_route(echo.addr, host="localhost")],
                "--tls-cert", certs.localhost.cert, "--tls-key", certs.localhost.key)
    t = tunnel(f"localhost:{g.port}", "--tls", "--ca-cert", certs.rogue.cert, *PUBLIC,
               env=dict(https_proxy=proxy.url))
    with t.connect() as s:
        assert expect_closed(s, 10) < 5
    t.wait_for(r"^\[ERROR .*cannot open TLS to Otoroshi", 5)
    assert proxy.wait_connects(1) == [f"localhost:{g.port}"]
    assert g.requests() == []


# --- NO_PROXY -------------------------------------------------------------------------------------

NO_PROXY_CASES = [
    pytest.param("NO_PROXY", "127.0.0.1", "127.0.0.1", id="address"),
    pytest.param("no_proxy", "example.com, 127.0.0.1", "127.0.0.1", id="lowercase-list"),
    pytest.param("NO_PROXY", "*", "127.0.0.1", id="star"),
    pytest.param("NO_PROXY", "localhost", "localhost", id="name"),
    pytest.param("NO_PROXY", ".localhost", "localhost", id="leading-dot"),
    pytest.param("NO_PROXY", "other.example,127.0.0.1:{port}", "127.0.0.1", id="host-port"),
]


@pytest.mark.parametrize("var,value,host", NO_PROXY_CASES)
def test_no_proxy_goes_direct(gateway, tunnel, echo, tinyproxy, var, value, host):
    proxy = tinyproxy()
    g = gateway([public_route(echo.addr, host=host)])
    # A live proxy (its log must show nothing) and, for HTTPS_PROXY, a dead one.
    t = tunnel(f"{host}:{g.port}", *PUBLIC, level="debug",
               env={"HTTP_PROXY": proxy.url, var: value.format(port=g.port)})
    assert "Reaching Otoroshi through" not in t.text()
    transfer_hash_checked(t, 300000)
    assert proxy.connects() == []
    t.wait_for(r"NO_PROXY covers", 2)


NOT_EXEMPT = [
    pytest.param("127.0.0.1:1", id="other-port"),
    pytest.param("other.example,10.0.0.1", id="other-hosts"),
    pytest.param("0.0.1", id="not-a-name-suffix"),
]


@pytest.mark.parametrize("value", NOT_EXEMPT)
def test_no_proxy_that_does_not_match_keeps_the_proxy(gateway, tunnel, echo, tinyproxy, value):
    proxy = tinyproxy()
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC, env=dict(HTTP_PROXY=proxy.url, NO_PROXY=value))
    with t.connect() as s:
        assert echo_once(s) == b"hello through the tunnel\n"
    # tinyproxy logs the request before it connects: it is there by now if ever.
    assert proxy.connects() == [f"127.0.0.1:{g.port}"], (
        f"NO_PROXY={value!r} should not exempt 127.0.0.1:{g.port} (curl would use the proxy), "
        "but the tunnel went direct")


def test_no_proxy_with_a_dead_proxy_still_works(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC, env=dict(http_proxy=dead_proxy(), no_proxy="127.0.0.1"))
    with t.connect() as s:
        assert echo_once(s) == b"hello through the tunnel\n"


def test_dead_proxy_is_reported(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr)])
    url = dead_proxy()
    t = tunnel(g, *PUBLIC, env=dict(HTTP_PROXY=url))
    with t.connect() as s:
        # A refused proxy is tried again within the handshake's 10 s.
        assert expect_closed(s, 12) < 11
    line = t.wait_for(r"^\[ERROR .*through the proxy", 5).string
    assert url.removeprefix("http://") in line and "HTTP_PROXY" in line, line
    assert g.requests() == []


# --- proxy refusals and credentials ---------------------------------------------------------------

def test_proxy_407_is_reported_and_the_local_connection_closed(gateway, tunnel, echo, tinyproxy):
    proxy = tinyproxy(basic_auth=("puser", "Pr0xy-Pa55"))
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC, "--proxy", proxy.url)
    mark = t.mark()
    with t.connect() as s:
        s.sendall(b"held until the tunnel opens")
        took = expect_closed(s, 10)
    assert took < 3, f"local connection closed after {took:.1f}s"
    line = t.wait_for(r"^\[ERROR ", 5, start=mark).string
    assert "407" in line and "proxy" in line, line
    assert "credentials" in line, line  # the hint says what to do
    m = t.wait_for(r"Tunnel from 127\.0\.0\.1:\d+ closed after", 5, start=mark)
    assert m
    assert g.requests() == []
    # Wrong credentials (tinyproxy answers those with a 401) are reported with the
    # same advice; the listeners keep going.
    t2 = tunnel(g, *PUBLIC, "--proxy", f"http://puser:wrong@127.0.0.1:{proxy.port}")
    with t2.connect() as s:
        assert expect_closed(s, 10) < 3
    line = t2.wait_for(r"^\[ERROR ", 5).string
    assert re.search(r"answered 40[17] ", line) and "credentials" in line, line
    assert "wrong" not in line
    assert t.proc.poll() is None and t2.proc.poll() is None


@pytest.mark.parametrize("how", ["flag", "env"])
def test_proxy_credentials_work_and_stay_out_of_the_logs(gateway, tunnel, echo, tinyproxy, how):
    # tinyproxy takes [-a-z0-9._] in BasicAuth: the URL percent-encodes a '.' and a
    # '-' of the password to check that the credentials are decoded.
    password = "S3cret.Pr0xy-pw"
    proxy = tinyproxy(basic_auth=("puser", password))
    g = gateway([public_route(echo.addr)])
    url = f"http://puser:S3cret%2EPr0xy%2Dpw@127.0.0.1:{proxy.port}"
    if how == "flag":
        t = tunnel(g, *PUBLIC, "--proxy", url, level="trace")
    else:
        t = tunnel(g, *PUBLIC, level="trace", env=dict(HTTP_PROXY=url))
    transfer_hash_checked(t, 500000)
    assert proxy.wait_connects(1) == [f"127.0.0.1:{g.port}"]
    t.stop(signal.SIGTERM)
    assert t.wait_exit(5) == 0
    text = t.text() + "\n".join(t.stdout_lines)
    assert "[TRACE" in text or "[DEBUG" in text
    for secret in (password, "S3cret%2EPr0xy", "Pr0xy",
                   base64.b64encode(f"puser:{password}".encode()).decode()):
        assert secret not in text, f"{secret!r} in the logs:\n{text}"


# --- graceful stop with a proxy and keepalive --------------------------------------------------------

def test_sigterm_with_tunnels_through_the_proxy_exits_0(gateway, tunnel, echo, tinyproxy):
    proxy = tinyproxy()
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC, "--proxy", proxy.url, "--keepalive", "1")
    socks = [t.connect() for _ in range(3)]
    for i, s in enumerate(socks):
        assert echo_once(s, b"open %d" % i) == b"open %d" % i
    proxy.wait_connects(3)
    t0 = time.monotonic()
    t.proc.send_signal(signal.SIGTERM)
    rc = t.wait_exit(6)
    took = time.monotonic() - t0
    assert rc == 0, t.text()
    assert took < 3, f"exit took {took:.1f}s"
    closes = g.wait_records("client_close", 3, timeout=5)
    assert [c["code"] for c in closes] == [1000, 1000, 1000]
    for s in socks:
        expect_closed(s, 3)
        s.close()


def test_second_sigint_exits_at_once(gateway, tunnel, service, tinyproxy):
    # A target that never finishes keeps the graceful stop waiting: the second
    # SIGINT must not wait for it.
    stubborn = service(StubbornServer)
    proxy = tinyproxy()
    g = gateway([public_route(stubborn.addr)])
    t = tunnel(g, *PUBLIC, "--proxy", proxy.url, "--keepalive", "1", "-v")
    s = t.connect()
    s.sendall(b"hello")
    g.wait_records("request", 1)
    # A tunnel still in its handshake ends at once on the first signal: wait
    # for the WebSocket to be open, so that the graceful stop has to wait.
    t.wait_for(r"WebSocket open for", 5)
    mark = t.mark()
    t.proc.send_signal(signal.SIGINT)
    t.wait_for(r"SIGINT received", 5, start=mark)
    t0 = time.monotonic()
    t.proc.send_signal(signal.SIGINT)
    rc = t.wait_exit(5)
    took = time.monotonic() - t0
    s.close()
    assert rc != 0, t.text()
    assert took < 1, f"the second SIGINT took {took:.2f}s"
    t.wait_for(r"^\[WARN .*second SIGINT", 2)


def ipv6_available():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_available(), reason="no ::1 on this machine")
@pytest.mark.parametrize("value", ["::1", "[::1]", "example.com,[::1]:{port}"])
def test_no_proxy_ipv6_gateway(gateway, tunnel, value):
    echo6 = EchoServer(host="::1")
    try:
        g = gateway([public_route(echo6.addr, host="[::1]")], listen="[::1]:0")
        t = tunnel(f"[::1]:{g.port}", *PUBLIC,
                   env=dict(HTTP_PROXY=dead_proxy(), NO_PROXY=value.format(port=g.port)))
        with t.connect() as s:
            assert echo_once(s, b"v6 direct") == b"v6 direct"
    finally:
        echo6.close()


@pytest.mark.skipif(not ipv6_available(), reason="no ::1 on this machine")
def test_proxy_to_an_ipv6_gateway(gateway, tunnel, tinyproxy):
    # The CONNECT target is the bracketed literal.
    echo6 = EchoServer(host="::1")
    try:
        proxy = tinyproxy()
        g = gateway([public_route(echo6.addr, host="[::1]")], listen="[::1]:0")
        t = tunnel(f"[::1]:{g.port}", *PUBLIC, "--proxy", proxy.url)
        with t.connect() as s:
            assert echo_once(s, b"v6 via proxy") == b"v6 via proxy"
        assert proxy.wait_connects(1) == [f"[::1]:{g.port}"]
    finally:
        echo6.close()


def test_proxy_url_without_scheme(gateway, tunnel, echo, tinyproxy):
    proxy = tinyproxy()
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC, env=dict(http_proxy=f"127.0.0.1:{proxy.port}"))
    with t.connect() as s:
        assert echo_once(s) == b"hello through the tunnel\n"
    assert proxy.wait_connects(1) == [f"127.0.0.1:{g.port}"]


@pytest.mark.parametrize("args,env,name", [
    (["--proxy", "http://127.0.0.1:notaport"], {}, "--proxy"),
    ([], {"HTTP_PROXY": "socks5://127.0.0.1:1080"}, "HTTP_PROXY"),
], ids=["bad-port", "env-socks"])
def test_unusable_proxy_url_is_a_usage_error(home, args, env, name):
    r = run_cli(["--host", "127.0.0.1:9", *PUBLIC, "--local-port", "0", *args],
                env_for(home, extra=env), timeout=5)
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert err.startswith(f"error: {name}: "), err


def test_proxy_that_cannot_reach_the_gateway(tunnel, tinyproxy):
    # tinyproxy answers 500 when it cannot connect: reported with the status.
    proxy = tinyproxy()
    t = tunnel(f"127.0.0.1:{free_port()}", *PUBLIC, "--proxy", proxy.url)
    with t.connect() as s:
        assert expect_closed(s, 10) < 5
    line = t.wait_for(r"^\[ERROR ", 5).string
    assert "through the proxy" in line and "answered 500" in line, line


def test_proxy_that_hangs_up_without_answering(gateway, tunnel, echo):
    with socket.socket() as fake:
        fake.bind(("127.0.0.1", 0))
        fake.listen(4)
        fake.settimeout(10)
        g = gateway([public_route(echo.addr)])
        t = tunnel(g, *PUBLIC, "--proxy", f"http://127.0.0.1:{fake.getsockname()[1]}")
        with t.connect() as s:
            conn, _ = fake.accept()
            with conn:
                conn.settimeout(5)
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(4096)
                    assert chunk
                    head += chunk
                assert head.startswith(f"CONNECT 127.0.0.1:{g.port} HTTP/1.1\r\n".encode()), head
                assert f"\r\nHost: 127.0.0.1:{g.port}\r\n".encode() in head
                assert b"Proxy-Authorization" not in head
            assert expect_closed(s, 5) < 3
    line = t.wait_for(r"^\[ERROR ", 5).string
    assert "closed the connection before answering CONNECT" in line, line


def test_profile_names_the_proxy_and_keepalive(gateway, tunnel, echo, tinyproxy, home, tmp_path):
    proxy = tinyproxy()
    g = gateway([public_route(echo.addr)])
    ini = tmp_path / "p.ini"
    ini.write_text(f"[via-proxy]\nhost = {g.addr}\naccess-type = public\nproxy = {proxy.url}\n"
                   "keepalive = 1\n")
    ini.chmod(0o600)
    t = tunnel(None, "--config", ini, "-p", "via-proxy", level="trace")
    t.wait_for(re.escape(f"through the HTTP proxy 127.0.0.1:{proxy.port} (from --proxy)"), 5)
    s = t.connect()
    assert echo_once(s, b"x") == b"x"
    t.wait_for(r"Ping after \d+ ms of silence", 5)  # keepalive = 1 from the profile
    assert echo_once(s, b"y") == b"y"
    s.close()
    assert proxy.wait_connects(1) == [f"127.0.0.1:{g.port}"]
