"""An https:// proxy: tinyproxy behind a TLS front (socat OPENSSL-LISTEN), so that the
tunnel speaks TLS to the proxy, CONNECT inside it, and for wss:// TLS to the gateway
inside that. The proxy's certificate is verified against --proxy-ca-cert (or the
default trust store), by name or by IP address, and --proxy-insecure skips that; a
proxy certificate that does not verify is refused with a message that says which
certificate and which flag."""

import re
from types import SimpleNamespace

import pytest

from helpers import Transfer, expect_closed, public_route, run_cli
from hops import env_for, tinyproxy, tls_front  # noqa: F401,F811  (fixtures)
from pki import Pki
from services import random_bytes, sha256

PUBLIC = ["--access-type", "public"]
MIB = 1 << 20


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    p = Pki(tmp_path_factory.mktemp("https-proxy-pki"))
    ca = p.ca("Proxy CA")
    rogue = p.ca("Rogue CA")
    # Each leaf under its own file name (the name is the files' stem).
    return SimpleNamespace(
        ca=ca,
        # The proxy by name and by address.
        proxy=ca.issue("proxy", dns=["localhost"], ips=["127.0.0.1"], cn="localhost"),
        # A name only: reached by address, it does not match.
        proxy_name_only=ca.issue("proxy-name-only", dns=["localhost"], cn="localhost"),
        proxy_rogue=rogue.issue("proxy-rogue", dns=["localhost"], ips=["127.0.0.1"], cn="localhost"),
        gateway=ca.issue("gateway", dns=["localhost"], ips=["127.0.0.1"], cn="localhost"),
    )


def https_proxy(tinyproxy, tls_front, cert):
    """tinyproxy behind a TLS front with `cert`: (tinyproxy, front)."""
    proxy = tinyproxy()
    front = tls_front(proxy.port, cert.cert, cert.key)
    return proxy, front


def transfer_checked(t, size, seed):
    data = random_bytes(size, seed)
    with t.connect() as s:
        tr = Transfer(s, data, keep=False).wait(60)
    assert tr.nreceived == len(data) and tr.digest == sha256(data)
    return data


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_ws_through_an_https_proxy(gateway, tunnel, echo, tinyproxy, tls_front, certs, host):
    proxy, front = https_proxy(tinyproxy, tls_front, certs.proxy)
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC, "--proxy", f"https://{host}:{front.port}", "--proxy-ca-cert", certs.ca.cert)
    t.wait_for(re.escape(f"Reaching Otoroshi through the HTTPS proxy {host}:{front.port} (from --proxy)"), 5)
    data = transfer_checked(t, 3 * MIB, seed=21)
    # The CONNECT went through the TLS front to tinyproxy, and on to the gateway.
    assert proxy.wait_connects(1) == [f"127.0.0.1:{g.port}"]
    assert front.accepted() >= 1
    closed = g.wait_records("closed", 1)[0]
    assert closed["sha256_from_client"] == sha256(data)
    assert closed["client_close_code"] == 1000


def test_wss_through_an_https_proxy_is_tls_inside_tls(gateway, tunnel, echo, tinyproxy, tls_front, certs):
    proxy, front = https_proxy(tinyproxy, tls_front, certs.proxy)
    g = gateway([dict(host="localhost", access="apikey", apikeys=["in-id:in-secret"], target=echo.addr)],
                "--tls-cert", certs.gateway.cert, "--tls-key", certs.gateway.key)
    env = dict(HTTPS_PROXY=f"https://localhost:{front.port}",
               OTOROSHI_APIKEY_CLIENT_ID="in-id", OTOROSHI_APIKEY_CLIENT_SECRET="in-secret")
    t = tunnel(f"localhost:{g.port}", "--tls", "--ca-cert", certs.ca.cert,
               "--proxy-ca-cert", certs.ca.cert, env=env)
    t.wait_for(re.escape(f"through the HTTPS proxy localhost:{front.port} (from HTTPS_PROXY)"), 5)
    data = transfer_checked(t, 4 * MIB + 3, seed=22)
    assert proxy.wait_connects(1) == [f"localhost:{g.port}"]
    # The gateway's handshake came through the proxy's: its SNI is the gateway's name.
    tls = g.wait_records("tls", 1)[0]
    assert tls["ok"] and tls["sni"] == "localhost", tls
    closed = g.wait_records("closed", 1)[0]
    assert closed["sha256_to_client"] == sha256(data)
    # The API key went inside both TLS layers: neither the front nor tinyproxy logged it.
    assert "in-secret" not in front.log() + proxy.log()


def test_proxy_certificate_from_an_unknown_ca_is_refused(gateway, tunnel, echo, tinyproxy, tls_front, certs):
    proxy, front = https_proxy(tinyproxy, tls_front, certs.proxy_rogue)
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC, "--proxy", f"https://localhost:{front.port}", "--proxy-ca-cert", certs.ca.cert)
    with t.connect() as s:
        assert expect_closed(s, 10) < 5
    line = t.wait_for(r"^\[ERROR .*cannot open TLS to the proxy", 5).string
    assert f"localhost:{front.port} (--proxy)" in line, line
    assert "certificate verification failed for localhost" in line, line
    assert "--proxy-ca-cert" in line, line
    # Nothing went past the handshake: no CONNECT, no upgrade.
    assert proxy.connects() == []
    assert g.requests() == []


def test_proxy_certificate_without_the_address_is_refused(gateway, tunnel, echo, tinyproxy, tls_front, certs):
    # Reached as 127.0.0.1, the proxy's certificate must hold that address.
    proxy, front = https_proxy(tinyproxy, tls_front, certs.proxy_name_only)
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC, "--proxy", f"https://127.0.0.1:{front.port}", "--proxy-ca-cert", certs.ca.cert)
    with t.connect() as s:
        assert expect_closed(s, 10) < 5
    line = t.wait_for(r"^\[ERROR .*cannot open TLS to the proxy", 5).string
    assert "does not name the address 127.0.0.1" in line, line
    assert "give the proxy by a name its certificate holds" in line, line
    assert proxy.connects() == []


def test_default_trust_store_does_not_know_the_proxy(gateway, tunnel, echo, tinyproxy, tls_front, certs):
    # --ca-cert is the gateway's: it does not make the proxy trusted.
    proxy, front = https_proxy(tinyproxy, tls_front, certs.proxy)
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC, "--proxy", f"https://localhost:{front.port}")
    with t.connect() as s:
        assert expect_closed(s, 10) < 5
    line = t.wait_for(r"^\[ERROR .*cannot open TLS to the proxy", 5).string
    assert "trust the proxy's CA with --proxy-ca-cert FILE" in line, line
    assert proxy.connects() == []


def test_proxy_insecure_skips_the_check_and_says_so(gateway, tunnel, echo, tinyproxy, tls_front, certs):
    proxy, front = https_proxy(tinyproxy, tls_front, certs.proxy_rogue)
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC, "--proxy", f"https://localhost:{front.port}", "--proxy-insecure")
    t.wait_for(r"^\[WARN .*--proxy-insecure: the proxy's certificate is not verified", 5)
    transfer_checked(t, 256 * 1024, seed=23)
    assert proxy.wait_connects(1) == [f"127.0.0.1:{g.port}"]


def test_plain_proxy_given_as_https_is_explained(gateway, tunnel, echo, tinyproxy, certs):
    # tinyproxy itself speaks no TLS, and waits for a request line that the ClientHello
    # never completes: the handshake's step is the one named when time runs out.
    proxy = tinyproxy()
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC, "--proxy", f"https://127.0.0.1:{proxy.port}", "--proxy-ca-cert", certs.ca.cert)
    with t.connect() as s:
        assert 8 < expect_closed(s, 20) < 15
    line = t.wait_for(r"^\[ERROR ", 10).string
    assert f"the TLS handshake with the proxy 127.0.0.1 did not finish within 10 s" in line, line
    assert "a plain proxy is given as http://" in line, line


@pytest.mark.parametrize("flag", [["--proxy-ca-cert", "/nonexistent.pem"], ["--proxy-insecure"]])
@pytest.mark.parametrize("proxy", [None, "http://127.0.0.1:3128"])
def test_proxy_tls_flags_need_an_https_proxy(home, flag, proxy):
    args = ["--host", "127.0.0.1:9", *PUBLIC, "--local-port", "0", *flag]
    if proxy:
        args += ["--proxy", proxy]
    r = run_cli(args, env_for(home), timeout=5)
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert f"error: {flag[0]} only applies with an https:// proxy" in err, err
    assert ("the proxy in use is http://" if proxy else "no proxy is in use") in err, err


def test_unreadable_proxy_ca_is_a_usage_error(home, certs, tmp_path):
    missing = tmp_path / "missing.pem"
    r = run_cli(["--host", "127.0.0.1:9", *PUBLIC, "--local-port", "0", "--proxy", "https://127.0.0.1:3129",
                 "--proxy-ca-cert", str(missing)], env_for(home), timeout=5)
    err = r.stderr.decode()
    assert r.returncode != 0, err
    assert "--proxy-ca-cert" in err and str(missing) in err, err
