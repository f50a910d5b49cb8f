"""--tls (wss://): trust, names, client certificates, resumption, abrupt ends; and the
default gateway ports.

Every certificate is made here at run time (tests/gateway/pki.py, openssl CLI) in a
temporary directory and lives one day; none is checked in. The stand-in gateway
serves wss:// and records each handshake ({"event": "tls"}: ok/error, SNI, session
reuse, client certificate), and its TLS settings can be switched while it runs
(GatewayProcess.set_tls), so that one tunnel process can meet a good certificate, then
a bad one, then the good one again, with a tunnel kept open throughout.
"""

import base64
import os
import re
import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import make_certificate
from helpers import (
    LISTEN_RE, READY, Transfer, TunnelProcess, binary, clean_env, echo_once, expect_closed, public_route,
    run_cli,
)
from pki import Pki, describe
from services import SourceServer, random_bytes, sha256

APIKEY = ["--access-type", "apikey", "--apikey-client-id", "tls-id",
          "--apikey-client-secret", "tls-secret-Qw8"]
PUBLIC = ["--access-type", "public"]
ERROR_TLS = r"^\[ERROR otoroshictl::tunnels::tcp\] cannot open TLS to Otoroshi at "


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The module's certificates: a CA and what it signed, and a CA nobody trusts."""
    p = Pki(tmp_path_factory.mktemp("pki"))
    ca = p.ca("Tunnel Test CA")
    rogue = p.ca("Rogue CA")
    ns = SimpleNamespace(
        pki=p, ca=ca, rogue=rogue,
        # RSA for the main one, P-256 for the others: both kinds get handshakes.
        # OTOROSHICTL_TEST_MAIN_KEY=ec makes the main one P-256 as well: for a
        # TLS 1.2 gateway and mbedTLS 3.6, whose first handshake with an RSA key
        # fails once (test_tls_version_agreed_and_resumed_under_it).
        localhost=ca.issue("localhost", dns=["localhost"], ips=["127.0.0.1", "::1"],
                           key_kind=os.environ.get("OTOROSHICTL_TEST_MAIN_KEY", "rsa")),
        rsa=ca.issue("rsa", dns=["localhost"], ips=["127.0.0.1"], key_kind="rsa"),
        other=ca.issue("other", dns=["other.example"]),
        noip=ca.issue("noip", dns=["localhost"]),
        expired=ca.issue("expired", dns=["localhost"], ips=["127.0.0.1"], days=(-30, -29)),
        future=ca.issue("future", dns=["localhost"], ips=["127.0.0.1"], days=(30, 31)),
        rogue_localhost=rogue.issue("rogue-localhost", dns=["localhost"], ips=["127.0.0.1"]),
        client=ca.issue("client", client=True, cn="otoroshictl-client"),
        rogue_client=rogue.issue("rogue-client", client=True, cn="rogue-client"),
    )
    ns.bundle = p.dir / "bundle.pem"  # the rogue CA first: a bundle is read in full
    ns.bundle.write_bytes(rogue.cert.read_bytes() + ca.cert.read_bytes())
    ns.cert_dir = p.cert_dir("certdir", ca)
    return ns


def tls_gateway(gateway, leaf, routes, *args, **kw):
    return gateway(routes, "--tls-cert", leaf.cert, "--tls-key", leaf.key, *args, **kw)


def wss_tunnel(tunnel, g, *args, host="localhost", level="info", env=None, **kw):
    """A tunnel with --tls to gateway g; `host` is the --host name (the port is g's)."""
    return tunnel(f"{host}:{g.port}", "--tls", *args, level=level, env=env, **kw)


def tls_records(g, ok=None):
    return [r for r in g.records("tls") if ok is None or r["ok"] == ok]


def request_count(g):
    """Upgrade requests that reached the gateway (not connections that ended before
    a request head: those are recorded too, without a request line)."""
    return len([r for r in g.requests() if "request_line" in r])


def error_lines(t, start=0):
    with t.cond:
        return [line for line in t.lines[start:] if line.startswith("[ERROR ")]


# --- the first tests: TLS before anything else, untrusted certificate --------------

def test_tls_flag_speaks_tls_before_anything_else(tunnel):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        listener.settimeout(10)
        t = tunnel(f"localhost:{port}", "--tls", *APIKEY)
        local = t.connect()
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            first = b""
            try:
                while len(first) < 5:
                    chunk = conn.recv(5 - len(first))
                    if not chunk:
                        break
                    first += chunk
            except socket.timeout:
                pass
            assert not first.startswith(b"GET "), (
                "--tls sent a plaintext upgrade request (credentials in clear): " + repr(first))
            assert first[:1] == b"\x16", f"want a TLS handshake record, got {first!r}"
        # The server went away mid-handshake: the local side is closed, an error logged.
        assert expect_closed(local, 5) < 3
        local.close()
    t.wait_for(r"^\[ERROR ", 5)
    assert "tls-secret-Qw8" not in t.text()


def test_tls_untrusted_certificate_is_refused(gateway, tunnel, echo, tmp_path):
    cert, key = make_certificate(tmp_path)
    g = gateway([dict(host="localhost", access="apikey", apikeys=["tls-id:tls-secret-Qw8"],
                      target=echo.addr)], "--tls-cert", cert, "--tls-key", key)
    t = tunnel(f"localhost:{g.port}", "--tls", *APIKEY)
    with t.connect() as s:
        assert expect_closed(s, 5) < 3
    line = t.wait_for(r"^\[ERROR ", 5).string
    assert re.search(r"(?i)certif|verif|x509|trust", line), line
    assert g.requests() == [], "the request went out over an unverified TLS session"


# --- 1. data ------------------------------------------------------------------------

def test_wss_several_mib_each_way_on_five_simultaneous_tunnels(gateway, tunnel, echo, pki):
    g = tls_gateway(gateway, pki.localhost, [public_route(echo.addr, host="*")])
    t = wss_tunnel(tunnel, g, "--ca-cert", pki.ca.cert, *PUBLIC)
    size = 4 << 20
    payloads = [random_bytes(size, seed=100 + i) for i in range(5)]
    socks = [t.connect() for _ in payloads]
    try:
        transfers = [Transfer(s, p, keep=False, timeout=60) for s, p in zip(socks, payloads)]
        for tr, p in zip(transfers, payloads):
            tr.wait(60)
            assert tr.nreceived == len(p)
            assert tr.digest == sha256(p), "echoed bytes differ from those sent"
    finally:
        for s in socks:
            s.close()
    closed = g.wait_records("closed", 5, timeout=10)
    assert sorted(r["sha256_from_client"] for r in closed) == sorted(map(sha256, payloads))
    assert sorted(r["sha256_to_client"] for r in closed) == sorted(map(sha256, payloads))
    assert all(r["client_close_code"] == 1000 for r in closed), closed
    assert [r["tls_client_end"] for r in closed] == ["close_notify"] * 5, closed
    hs = tls_records(g)
    assert len(hs) == 5 and all(r["ok"] for r in hs), hs
    assert {r["alpn"] for r in hs} == {"http/1.1"}, "the client offers ALPN http/1.1"
    assert all(r["version"] in ("TLSv1.2", "TLSv1.3") for r in hs), hs


# --- 2. trust -------------------------------------------------------------------------

def trust_cases():
    # (id, extra args, env (names of pki members), ok)
    return [
        pytest.param(["--ca-cert", "ca"], {}, True, id="ca-cert"),
        pytest.param(["--ca-cert", "bundle"], {}, True, id="ca-cert-bundle"),
        pytest.param([], {"SSL_CERT_FILE": "ca"}, True, id="SSL_CERT_FILE"),
        pytest.param([], {"SSL_CERT_DIR": "cert_dir"}, True, id="SSL_CERT_DIR"),
        pytest.param(["--ca-cert", "ca"], {"SSL_CERT_FILE": "rogue"}, True,
                     id="ca-cert-wins-over-SSL_CERT_FILE"),
        pytest.param([], {"SSL_CERT_FILE": "rogue", "SSL_CERT_DIR": "cert_dir"}, False,
                     id="SSL_CERT_FILE-wins-over-SSL_CERT_DIR"),
        pytest.param([], {}, False, id="system-store"),
    ]


def pki_path(pki, name):
    return {"ca": pki.ca.cert, "rogue": pki.rogue.cert, "bundle": pki.bundle,
            "cert_dir": pki.cert_dir}[name]


@pytest.mark.parametrize("args,env,ok", trust_cases())
def test_trust_sources(gateway, tunnel, echo, pki, args, env, ok):
    if not args and not env and not Path("/etc/ssl/certs/ca-certificates.crt").is_file():
        pytest.skip("no system trust store here")
    g = tls_gateway(gateway, pki.localhost, [public_route(echo.addr, host="*")])
    args = [pki_path(pki, a) if a in ("ca", "bundle") else a for a in args]
    env = {k: str(pki_path(pki, v)) for k, v in env.items()}
    t = wss_tunnel(tunnel, g, *args, *PUBLIC, env=env)
    with t.connect() as s:
        if ok:
            assert echo_once(s, b"trusted") == b"trusted"
            return
        assert expect_closed(s, 5) < 3
    line = t.wait_for(ERROR_TLS, 5).string
    assert "not correctly signed by the trusted CA" in line, line
    assert "--ca-cert" in line, f"no hint naming --ca-cert: {line}"
    assert request_count(g) == 0


# --- 3. refusals ----------------------------------------------------------------------

# (bad gateway certificate, gateway TLS settings, tunnel args, what the line must hold,
#  the hint, the gateway's own error when it is the one refusing)
REFUSALS = [
    pytest.param("rogue_localhost", {}, [],
                 "not correctly signed by the trusted CA", "--ca-cert", "",
                 id="unknown-ca"),
    pytest.param("other", {}, [],
                 "does not match with the expected CN", "--tls-server-name", "",
                 id="wrong-name"),
    pytest.param("expired", {}, [],
                 "validity has expired", "expired", "",
                 id="expired"),
    pytest.param("future", {}, [],
                 "validity starts in the future", "not valid yet", "",
                 id="not-yet-valid"),
    pytest.param("localhost", {"client_ca": "ca"}, [],
                 "handshake", "--client-cert", "peer did not return a certificate",
                 id="no-client-certificate"),
    pytest.param("localhost", {"client_ca": "ca"}, ["--client-cert", "rogue_client.cert",
                                                    "--client-key", "rogue_client.key"],
                 "handshake", "--client-cert", "certificate verify failed",
                 id="client-certificate-of-unknown-ca"),
]


def resolve(pki, arg):
    if "." in arg and not arg.startswith("-"):
        name, attr = arg.split(".")
        return getattr(getattr(pki, name), attr)
    return arg


@pytest.mark.parametrize("leaf,extra,args,reason,hint,gw_error", REFUSALS)
def test_handshake_refusal_closes_at_once_and_others_carry_on(
        gateway, tunnel, echo, pki, leaf, extra, args, reason, hint, gw_error):
    g = tls_gateway(gateway, pki.localhost, [public_route(echo.addr, host="*")])
    t = wss_tunnel(tunnel, g, "--ca-cert", pki.ca.cert, *[resolve(pki, a) for a in args],
                   *PUBLIC)
    good = t.connect()  # open throughout, across the refusal
    assert echo_once(good, b"before") == b"before"
    bad_leaf = getattr(pki, leaf)
    g.set_tls(cert=bad_leaf.cert, key=bad_leaf.key,
              **{k: getattr(pki, v).cert for k, v in extra.items()})
    requests_before = request_count(g)
    mark = t.mark()
    with t.connect() as s:
        local_port = s.getsockname()[1]
        took = expect_closed(s, 5)
    assert took < 3, f"the local connection stayed open {took:.1f}s after the refusal"
    line = t.wait_for(ERROR_TLS + re.escape(f"localhost:{g.port} for 127.0.0.1:{local_port}: "),
                      5, start=mark).string
    assert reason in line, f"want {reason!r} in: {line}"
    assert hint in line, f"want the hint {hint!r} in: {line}"
    assert len(error_lines(t, mark)) == 1, error_lines(t, mark)
    assert request_count(g) == requests_before, "the upgrade request reached the gateway"
    refused = g.wait_records("tls", 1, where=lambda r: not r["ok"])
    assert gw_error in refused[-1]["error"], refused[-1]  # ("" when the client refuses)
    # The tunnel kept open meanwhile still flows, and so does a new one once the
    # gateway is fixed: the listener carried on.
    assert echo_once(good, b"still there") == b"still there"
    good.close()
    g.set_tls()
    with t.connect() as s:
        assert echo_once(s, b"after") == b"after"
    assert t.proc.poll() is None
    if extra:  # the client certificate was the problem: another process, with a good one
        g.set_tls(client_ca=pki.ca.cert)
        t2 = wss_tunnel(tunnel, g, "--ca-cert", pki.ca.cert, "--client-cert", pki.client.cert,
                        "--client-key", pki.client.key, *PUBLIC)
        with t2.connect() as s:
            assert echo_once(s, b"with a client certificate") == b"with a client certificate"


# The alert a client sends when it rejects the server's certificate (RFC 5246 7.2.2,
# RFC 8446 6.2): what OpenSSL reports on the gateway's side when it receives it.
ALERTS = [
    pytest.param("rogue_localhost", "unknown ca", id="unknown-ca"),
    pytest.param("other", "bad certificate", id="wrong-name"),
    pytest.param("expired", "certificate expired", id="expired"),
]


@pytest.mark.parametrize("leaf,alert", ALERTS)
def test_client_tells_the_gateway_why_with_a_fatal_alert(gateway, tunnel, echo, pki, leaf, alert):
    """Rejecting the certificate, the client sends a fatal alert before it closes, so
    that the gateway's operator can see why the handshakes fail."""
    bad = getattr(pki, leaf)
    g = tls_gateway(gateway, bad, [public_route(echo.addr, host="*")])
    t = wss_tunnel(tunnel, g, "--ca-cert", pki.ca.cert, *PUBLIC)
    with t.connect() as s:
        assert expect_closed(s, 5) < 3
    t.wait_for(ERROR_TLS, 5)
    rec = g.wait_records("tls", 1)[0]
    assert not rec["ok"] and alert in rec["error"], (
        f"the gateway saw {rec['error']!r}, not a TLS alert {alert!r}: the client closed "
        "without sending the fatal alert")


def test_wrong_name_works_with_tls_server_name_in_another_process(gateway, tunnel, echo, pki):
    g = tls_gateway(gateway, pki.other, [public_route(echo.addr, host="*")])
    bad = wss_tunnel(tunnel, g, "--ca-cert", pki.ca.cert, *PUBLIC)
    with bad.connect() as s:
        assert expect_closed(s, 5) < 3
    bad.wait_for(ERROR_TLS + ".*--tls-server-name", 5)
    t = wss_tunnel(tunnel, g, "--ca-cert", pki.ca.cert, "--tls-server-name", "other.example",
                   *PUBLIC)
    with t.connect() as s:
        assert echo_once(s, b"other name") == b"other name"
    ok = tls_records(g, ok=True)
    assert [r["sni"] for r in ok] == ["other.example"]
    req = g.wait_records("request", 1)[0]
    assert dict(req["headers"])["Host"] == f"localhost:{g.port}", "Host keeps --host"


# --- 4. mutual TLS and usage errors -------------------------------------------------

def test_mutual_tls_with_client_certificate(gateway, tunnel, echo, pki):
    g = tls_gateway(gateway, pki.localhost, [public_route(echo.addr, host="*")],
                    "--tls-client-ca", pki.ca.cert)
    t = wss_tunnel(tunnel, g, "--ca-cert", pki.ca.cert, "--client-cert", pki.client.cert,
                   "--client-key", pki.client.key, *PUBLIC)
    for i in range(2):
        with t.connect() as s:
            data = random_bytes(200_000, seed=i)
            tr = Transfer(s, data).wait(20)
            assert bytes(tr.received) == data
    hs = g.wait_records("tls", 2)
    assert all(r["ok"] for r in hs), hs
    assert [r["client_cert"] for r in hs] == ["otoroshictl-client"] * 2, hs
    assert [r["session_reused"] for r in hs] == [False, True], "resumption with mutual TLS"


def usage_error(args, env, home, timeout=10):
    p = run_cli(["--local-port", "0", *map(str, args)], clean_env(home, "info", env), timeout)
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 2, f"exit {p.returncode}, stderr: {err}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "listening" not in err and not p.stdout, (err, p.stdout)
    return lines[0]


@pytest.mark.parametrize("traditional", [False, True], ids=["pkcs8", "traditional"])
def test_passphrase_protected_client_key_is_a_usage_error(pki, home, traditional):
    key = pki.client.encrypted_key("Pass-phrase-9", traditional=traditional)
    line = usage_error(["--host", "localhost:1", "--tls", *PUBLIC, "--ca-cert", pki.ca.cert,
                        "--client-cert", pki.client.cert, "--client-key", key], None, home)
    assert line.startswith("error: --client-key: ") and str(key) in line, line
    assert "passphrase" in line, line
    assert "Pass-phrase-9" not in line


def bad_file_cases():
    return [
        pytest.param("--ca-cert", "missing", id="ca-cert-missing"),
        pytest.param("--ca-cert", "garbage", id="ca-cert-garbage"),
        pytest.param("--ca-cert", "empty", id="ca-cert-empty"),
        pytest.param("--ca-cert", "dir", id="ca-cert-directory"),
        pytest.param("--ca-cert", "unreadable", id="ca-cert-unreadable"),
        pytest.param("--client-cert", "missing", id="client-cert-missing"),
        pytest.param("--client-cert", "garbage", id="client-cert-garbage"),
        pytest.param("--client-key", "missing", id="client-key-missing"),
        pytest.param("--client-key", "garbage", id="client-key-garbage"),
        pytest.param("--client-key", "cert", id="client-key-is-a-certificate"),
        pytest.param("--client-key", "unreadable", id="client-key-unreadable"),
        pytest.param("SSL_CERT_FILE", "missing", id="SSL_CERT_FILE-missing"),
        pytest.param("SSL_CERT_FILE", "garbage", id="SSL_CERT_FILE-garbage"),
        pytest.param("SSL_CERT_DIR", "missing", id="SSL_CERT_DIR-missing"),
        pytest.param("SSL_CERT_DIR", "emptydir", id="SSL_CERT_DIR-empty"),
    ]


@pytest.mark.parametrize("flag,kind", bad_file_cases())
def test_unusable_tls_file_is_a_usage_error_naming_it(pki, home, tmp_path, flag, kind):
    if kind == "unreadable":
        if os.geteuid() == 0:
            pytest.skip("root reads any file")
        (tmp_path / "unreadable.pem").write_bytes(pki.client.key.read_bytes())
        os.chmod(tmp_path / "unreadable.pem", 0)
    path = {
        "unreadable": tmp_path / "unreadable.pem",
        "missing": tmp_path / "no-such-file.pem",
        "garbage": tmp_path / "garbage.pem",
        "empty": tmp_path / "empty.pem",
        "dir": tmp_path,
        "emptydir": tmp_path / "empty-dir",
        "cert": pki.client.cert,
    }[kind]
    (tmp_path / "garbage.pem").write_text(
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
        if flag != "--client-key" else "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    (tmp_path / "empty.pem").write_bytes(b"")
    (tmp_path / "empty-dir").mkdir()
    args = ["--host", "localhost:1", "--tls", *PUBLIC]
    env = {}
    if flag.startswith("--"):
        if flag != "--ca-cert":
            args += ["--ca-cert", pki.ca.cert]
        args += {"--client-cert": ["--client-key", pki.client.key],
                 "--client-key": ["--client-cert", pki.client.cert]}.get(flag, [])
        args += [flag, path]
    else:
        env[flag] = str(path)
    line = usage_error(args, env, home)
    assert line.startswith(f"error: {flag}: "), line
    assert f"'{path}'" in line, f"the line does not name {path}: {line}"


@pytest.mark.parametrize("flag", [["--ca-cert", "ca.pem"], ["--client-cert", "c.pem"],
                                  ["--client-key", "k.pem"], ["--insecure"],
                                  ["--tls-server-name", "localhost"]],
                         ids=lambda f: f[0])
def test_tls_options_without_tls_are_usage_errors(home, flag):
    line = usage_error(["--host", "localhost:1", *PUBLIC, *flag], None, home)
    assert line.startswith(f"error: {flag[0]} ") and "--tls" in line, line


def test_client_cert_and_key_go_together(pki, home):
    line = usage_error(["--host", "localhost:1", "--tls", *PUBLIC, "--ca-cert", pki.ca.cert,
                        "--client-cert", pki.client.cert], None, home)
    assert "--client-key" in line, line
    line = usage_error(["--host", "localhost:1", "--tls", *PUBLIC, "--ca-cert", pki.ca.cert,
                        "--client-key", pki.client.key], None, home)
    assert "--client-cert" in line, line


def test_insecure_with_ca_cert_is_a_usage_error(pki, home):
    line = usage_error(["--host", "localhost:1", "--tls", *PUBLIC, "--insecure",
                        "--ca-cert", pki.ca.cert], None, home)
    assert "--insecure" in line and "--ca-cert" in line, line


def test_client_key_of_another_certificate(gateway, tunnel, echo, pki):
    """A key that does not match --client-cert: refused before listening (exit 2), or
    at the latest at the handshake, with a hint naming --client-cert."""
    g = tls_gateway(gateway, pki.localhost, [public_route(echo.addr, host="*")],
                    "--tls-client-ca", pki.ca.cert)
    t = tunnel(f"localhost:{g.port}", "--tls", "--ca-cert", pki.ca.cert,
               "--client-cert", pki.client.cert, "--client-key", pki.rogue_client.key,
               *PUBLIC, wait_ready=False)
    m = t.wait_for(r"^error: |TCP tunnel ready", 5)
    if m.string.startswith("error: "):
        assert t.wait_exit(5) == 2, t.text()
        assert re.search(r"^error: --client-key: .*does not match", t.text(), re.M), t.text()
        return
    t.port = int(t.wait_for(r"listening on \S+:(\d+)", 1).group(1))
    with t.connect() as s:
        assert expect_closed(s, 5) < 3
    line = t.wait_for(ERROR_TLS, 5).string
    assert "--client-cert" in line, line
    assert request_count(g) == 0


# --- 5. --insecure --------------------------------------------------------------------

def test_insecure_accepts_an_untrusted_certificate_and_warns_at_start(
        gateway, tunnel, echo, pki):
    g = tls_gateway(gateway, pki.rogue_localhost, [public_route(echo.addr, host="*")])
    t = wss_tunnel(tunnel, g, "--insecure", *PUBLIC)
    warn = t.wait_for(r"^\[WARN  otoroshictl::tunnels::tcp\] --insecure: ", 1)
    assert "not verified" in warn.string, warn.string
    with t.cond:
        first = t.lines.index(warn.string)
        listening = next(i for i, line in enumerate(t.lines) if "TCP tunnel listening" in line)
    assert first < listening, "the --insecure warning comes at start, before listening"
    with t.connect() as s:
        assert echo_once(s, b"insecure") == b"insecure"
    # Neither the chain nor the name is checked: an IP literal not in the certificate.
    g.set_tls(cert=pki.noip.cert, key=pki.noip.key)
    t2 = wss_tunnel(tunnel, g, "--insecure", *PUBLIC, host="127.0.0.1")
    t2.wait_for(r"^\[WARN .*--insecure", 1)
    with t2.connect() as s:
        assert echo_once(s, b"insecure ip") == b"insecure ip"


# --- 6. names: SNI and IP addresses -------------------------------------------------

# (certificate, --host name, extra args, SNI the gateway must see)
NAME_CASES = [
    pytest.param("noip", "127.0.0.1", ["--tls-server-name", "localhost"], "localhost",
                 id="ip-host-with-tls-server-name"),
    pytest.param("localhost", "127.0.0.1", [], None, id="ip-host-checked-against-ip-san"),
    pytest.param("localhost", "localhost", [], "localhost", id="name-host-sends-sni"),
    pytest.param("localhost", "localhost", ["--tls-server-name", "127.0.0.1"], None,
                 id="tls-server-name-ip-literal"),
    pytest.param("localhost", "[::1]", [], None, id="ipv6-host-checked-against-ip-san"),
]


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("leaf,host,args,sni", NAME_CASES)
def test_sni_and_verified_name(gateway, tunnel, echo, pki, leaf, host, args, sni):
    listen = "127.0.0.1:0"
    if host.startswith("["):
        if not ipv6_loopback():
            pytest.skip("no IPv6 loopback here")
        listen = "[::1]:0"
    g = tls_gateway(gateway, getattr(pki, leaf), [public_route(echo.addr, host="*")],
                    listen=listen)
    t = wss_tunnel(tunnel, g, "--ca-cert", pki.ca.cert, *args, *PUBLIC, host=host)
    with t.connect() as s:
        assert echo_once(s, b"named") == b"named"
    hs = g.wait_records("tls", 1)[0]
    assert hs["ok"] and hs["sni"] == sni, hs
    assert [r["sni"] for r in g.records("sni")] == [sni], "what the ClientHello carried"
    req = g.wait_records("request", 1)[0]
    assert dict(req["headers"])["Host"] == f"{host}:{g.port}", "Host keeps --host as given"


def test_ip_host_against_certificate_without_that_address(gateway, tunnel, echo, pki):
    g = tls_gateway(gateway, pki.noip, [public_route(echo.addr, host="*")])
    t = wss_tunnel(tunnel, g, "--ca-cert", pki.ca.cert, *PUBLIC, host="127.0.0.1")
    with t.connect() as s:
        assert expect_closed(s, 5) < 3
    line = t.wait_for(ERROR_TLS + re.escape(f"127.0.0.1:{g.port} for "), 5).string
    assert "does not name the address 127.0.0.1" in line, line
    assert "--tls-server-name" in line, line
    assert request_count(g) == 0, "the upgrade went out to an unverified name"
    assert [r["sni"] for r in g.records("sni")] == [None], "no SNI for an IP literal"
    # The same process keeps serving: with the right certificate it works.
    g.set_tls(cert=pki.localhost.cert, key=pki.localhost.key)
    with t.connect() as s:
        assert echo_once(s, b"now named") == b"now named"


# --- 7. resumption --------------------------------------------------------------------

@pytest.mark.parametrize("tickets", [True, False], ids=["ticket", "session-id"])
def test_second_tunnel_resumes_the_first_ones_session(gateway, tunnel, echo, pki, tickets):
    flags = [] if tickets else ["--tls-no-tickets"]
    g = tls_gateway(gateway, pki.localhost, [public_route(echo.addr, host="*")], *flags)
    t = wss_tunnel(tunnel, g, "--ca-cert", pki.ca.cert, *PUBLIC, level="debug")
    marks = []
    for i in range(3):
        marks.append(t.mark())
        with t.connect() as s:
            assert echo_once(s, b"round %d" % i) == b"round %d" % i
        g.wait_records("tls", i + 1)
    hs = g.records("tls")
    assert [r["session_reused"] for r in hs] == [False, True, True], hs
    first = t.wait_for(r"TLS to \S+ established", 5, start=marks[0]).string
    assert "(session resumed)" not in first, first
    for m in marks[1:]:
        line = t.wait_for(r"TLS to \S+ established", 5, start=m).string
        assert line.endswith(" (session resumed)"), line


def version_text():
    return subprocess.run([binary(), "--version"], capture_output=True, text=True, check=True,
                          timeout=10).stdout


def mbedtls_version():
    """The mbedTLS the binary runs with, from --version: (major, minor)."""
    out = version_text()
    m = re.search(r"mbedTLS (\d+)\.(\d+)\.\d+", out)
    assert m, out
    return int(m[1]), int(m[2])


def test_version_names_the_libraries():
    out = version_text()
    assert re.fullmatch(r"otoroshictl \S+\nlibuv \d+\.\d+\.\d+, wslay \S+, mbedTLS \d+\.\d+\.\d+"
                        r"( \(built with \S+\))?\n", out), out
    # CI names the mbedTLS each build must run with.
    want = os.environ.get("OTOROSHICTL_EXPECT_MBEDTLS")
    if want:
        assert f"mbedTLS {want}." in out, out


@pytest.mark.parametrize("offer", ["1.3", "1.2"], ids=["gateway-offers-1.3", "gateway-stops-at-1.2"])
def test_tls_version_agreed_and_resumed_under_it(gateway, tunnel, echo, pki, offer):
    """TLS 1.3 where both ends have it (mbedTLS 3.6 and the gateway), else 1.2; either
    way the second and third tunnels resume the first one's session (a TLS 1.3 ticket
    comes after the handshake), and the client's logs name the version and suite.

    mbedTLS 3.6 offers RSA-PSS signatures, which TLS 1.3 needs, but refuses one in a
    TLS 1.2 key exchange, and OpenSSL's TLS 1.2 picks RSA-PSS for an RSA key: the first
    handshake fails, is retried at once without RSA-PSS, and the gateway's connections
    stay that way. The tunnel itself does not fail."""
    g = tls_gateway(gateway, pki.rsa, [public_route(echo.addr, host="*")], "--tls-max-version", offer)
    t = wss_tunnel(tunnel, g, "--ca-cert", pki.ca.cert, *PUBLIC, level="debug")
    v3 = mbedtls_version() >= (3, 6)
    want = "TLSv1.3" if offer == "1.3" and v3 else "TLSv1.2"
    fallback = v3 and want == "TLSv1.2"
    for i in range(3):
        mark = t.mark()
        with t.connect() as s:
            assert echo_once(s, b"round %d" % i) == b"round %d" % i
        g.wait_records("tls", i + 1 + fallback)
        line = t.wait_for(r"TLS to localhost established: ", 5, start=mark).string
        assert re.search(rf"established: {want}, TLS(1-3)?-[A-Z0-9-]+( \(session resumed\))?$", line), line
        assert line.endswith("(session resumed)") == (i > 0), line
        summary = t.wait_for(r"Tunnel from \S+ closed after ", 5, start=mark).string
        assert re.search(rf", {want} TLS(1-3)?-[A-Z0-9-]+(, after 2 attempts)?\)$" if i == 0 else
                         rf", {want} TLS(1-3)?-[A-Z0-9-]+\)$", summary), summary
    assert len(tls_records(g, ok=False)) == fallback, g.records("tls")
    assert ("signed TLS 1.2 with RSA-PSS" in t.text()) == fallback, t.text()
    hs = tls_records(g, ok=True)
    assert [r["version"] for r in hs] == [want] * 3, hs
    assert [r["session_reused"] for r in hs] == [False, True, True], hs


def test_first_tunnels_together_to_a_tls12_rsa_gateway_all_get_through(gateway, tunnel, echo, pki):
    """Five tunnels opened at once, before any handshake is done, to a TLS 1.2 gateway
    with an RSA key: on mbedTLS 3.6 all five first handshakes fail over RSA-PSS, and
    all five are retried; the warning is said once."""
    g = tls_gateway(gateway, pki.rsa, [public_route(echo.addr, host="*")], "--tls-max-version", "1.2")
    t = wss_tunnel(tunnel, g, "--ca-cert", pki.ca.cert, *PUBLIC)
    socks = [t.connect() for _ in range(5)]
    try:
        for i, s in enumerate(socks):
            s.sendall(b"together %d" % i)
        for i, s in enumerate(socks):
            s.settimeout(10)
            got = b""
            while len(got) < len(b"together %d" % i):
                chunk = s.recv(64)
                assert chunk, f"tunnel {i}: EOF after {got!r}"
                got += chunk
            assert got == b"together %d" % i
    finally:
        for s in socks:
            s.close()
    ok = tls_records(g, ok=True)
    assert len(ok) >= 5 and {r["version"] for r in ok} == {"TLSv1.2"}, g.records("tls")
    assert t.text().count("signed TLS 1.2 with RSA-PSS") == (1 if mbedtls_version() >= (3, 6) else 0), t.text()


def test_every_forward_resumes_the_session_of_another(gateway, tunnel, echo, pki, home, tmp_path):
    """Forwards to one gateway share one TLS session cache: -L forwards, and profiles
    that reach the same gateway the same way."""
    g = tls_gateway(gateway, pki.localhost, [public_route("${req.query.remoteHost}:"
                                                          "${req.query.remotePort}", host="*")])
    t = wss_tunnel(tunnel, g, "--ca-cert", pki.ca.cert, *PUBLIC, "-L", f"0:127.0.0.1:{echo.port}",
                   "-L", f"0:localhost:{echo.port}")
    t.wait_for(re.escape(READY))
    ports = [int(m.group("port")) for m in map(LISTEN_RE.search, t.text().splitlines()) if m]
    assert len(ports) == 2
    for i, port in enumerate(ports + ports[::-1]):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            assert echo_once(s, b"hop %d" % i) == b"hop %d" % i
        g.wait_records("tls", i + 1)
    assert [r["session_reused"] for r in g.records("tls")] == [False, True, True, True]

    ini = tmp_path / "two.ini"
    profile = (f"host = localhost:{g.port}\ntls = true\nca-cert = {pki.ca.cert}\naccess-type = public\n"
               f"local-port = 0\nremote-host = 127.0.0.1\nremote-port = {echo.port}\n")
    ini.write_text(f"[one]\n{profile}\n[two]\n{profile}keepalive = 7\n")
    p = TunnelProcess(["--config", ini, "-p", "one", "-p", "two"], clean_env(home))
    try:
        p.wait_for(re.escape(READY))
        ports = [int(m.group("port")) for m in map(LISTEN_RE.search, p.text().splitlines()) if m]
        before = len(g.records("tls"))
        for i, port in enumerate(ports):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                assert echo_once(s, b"profile %d" % i) == b"profile %d" % i
            g.wait_records("tls", before + i + 1)
        assert [r["session_reused"] for r in g.records("tls")[before:]] == [False, True]
    finally:
        p.close()


def test_connect_to_keeps_the_host_name_for_sni_and_verification(gateway, tunnel, echo, pki):
    g = tls_gateway(gateway, pki.other, [public_route(echo.addr, host="other.example")])
    t = wss_tunnel(tunnel, g, "--ca-cert", pki.ca.cert, *PUBLIC, "--connect-to", f"127.0.0.1:{g.port}",
                   host="other.example")
    with t.connect() as s:
        assert echo_once(s, b"by address") == b"by address"
    assert [r["sni"] for r in g.records("sni")] == ["other.example"]
    rec = g.wait_records("request", 1)[0]
    assert ["Host", f"other.example:{g.port}"] in rec["headers"] and rec["status"] == 101


def test_no_resumption_claimed_when_the_gateway_refuses_it(gateway, tunnel, echo, pki):
    """A gateway that lost the session (another context: new keys, empty cache) makes
    a full handshake, which the client verifies and does not call resumed."""
    g = tls_gateway(gateway, pki.localhost, [public_route(echo.addr, host="*")])
    t = wss_tunnel(tunnel, g, "--ca-cert", pki.ca.cert, *PUBLIC, level="debug")
    with t.connect() as s:
        assert echo_once(s) == b"hello through the tunnel\n"
    g.wait_records("tls", 1)
    g.set_tls(tickets=False)  # a distinct context: neither ticket nor id is known
    mark = t.mark()
    with t.connect() as s:
        assert echo_once(s) == b"hello through the tunnel\n"
    hs = g.wait_records("tls", 2)
    assert hs[1]["session_reused"] is False, hs
    line = t.wait_for(r"TLS to \S+ established", 5, start=mark).string
    assert "(session resumed)" not in line, line


# --- 8. the gateway cutting the TLS connection mid-stream ------------------------------

@pytest.mark.parametrize("how", ["fin", "reset", "close"],
                         ids=["fin-without-close_notify", "reset", "close_notify-only"])
def test_gateway_cuts_tls_mid_stream(gateway, tunnel, service, echo, pki, how):
    src = service(SourceServer, 1 << 20, seed=8)
    route = public_route(src.addr, host="*", abort_after_bytes=100_000, abort_how=how)
    g = tls_gateway(gateway, pki.localhost, [route])
    t = wss_tunnel(tunnel, g, "--ca-cert", pki.ca.cert, *PUBLIC)
    mark = t.mark()
    with t.connect() as s:
        tr = Transfer(s, b"", half_close=False, timeout=10)
        tr.receiver.join(5)
        assert not tr.receiver.is_alive(), (
            f"the local connection is still open 5 s after the gateway cut it "
            f"({tr.nreceived} bytes received)")
        took = (tr.eof_at or time.monotonic()) - tr.t0
    assert took < 3, f"the local connection ended {took:.1f}s after it started"
    if how == "reset":  # (what was in flight may be lost with a reset)
        assert src.data.startswith(bytes(tr.received)), "bytes out of order or altered"
    else:
        assert tr.error is None, tr.error
        assert bytes(tr.received) == src.data[:100_000]
    closed = g.wait_records("closed", 1)[0]
    assert closed["outcome"] == "aborted" and closed["aborted_how"] == how, closed
    if how == "fin":
        assert closed["tls_client_end"] == "close_notify", (
            "the client ended TLS without close_notify: " + repr(closed["tls_client_end"]))
    # (A reset that comes with the last data may be seen as an EOF: libuv reports a
    # hang-up after a partial read as EOF without reading the error.)
    want = {"fin": r"without a WebSocket Close", "close": r"without a WebSocket Close",
            "reset": r"without a WebSocket Close|failed: connection reset"}[how]
    line = t.wait_for(r"^\[(WARN |ERROR) otoroshictl::tunnels::tcp\] .*(Otoroshi|TLS)", 5,
                      start=mark).string
    assert re.search(want, line), line
    # The process carries on with new tunnels.
    g.set_routes([public_route(echo.addr, host="*")])
    with t.connect() as s:
        assert echo_once(s, b"next tunnel") == b"next tunnel"
    assert t.proc.poll() is None


# --- 9. secrets -------------------------------------------------------------------------

def test_secrets_absent_at_trace_level_over_wss(gateway, tunnel, echo, pki):
    secret = "wss-Secret-Kq2&z"
    route = dict(host="*", access="apikey", apikeys=[f"tls-id:{secret}"], target=echo.addr)
    g = tls_gateway(gateway, pki.localhost, [route], "--tls-client-ca", pki.ca.cert)
    t = wss_tunnel(tunnel, g, "--ca-cert", pki.ca.cert, "--client-cert", pki.client.cert,
                   "--client-key", pki.client.key, "--access-type", "apikey",
                   "--apikey-client-id", "tls-id", "--apikey-client-secret", secret,
                   level="trace")
    for _ in range(2):  # a full handshake, then a resumed one
        with t.connect() as s:
            assert echo_once(s, b"secret stuff") == b"secret stuff"
            s.shutdown(socket.SHUT_WR)
            expect_closed(s, 5)
    g.set_routes([dict(route, apikeys=["tls-id:other"])])  # a refusal's path too
    with t.connect() as s:
        expect_closed(s, 5)
    t.wait_for(r"^\[ERROR .*\b401\b", 5)
    t.stop()
    t.wait_exit(5)
    text = t.text() + "\n".join(t.stdout_lines)
    assert "[TRACE" in text, "expected trace output"
    key_body = [ln for ln in pki.client.key.read_text().splitlines() if not ln.startswith("-")]
    forbidden = [secret, base64.b64encode(f"tls-id:{secret}".encode()).decode(), *key_body]
    for f in forbidden:
        assert f not in text, f"{f!r} leaked:\n" + "\n".join(
            line for line in text.splitlines() if f in line)


# --- close_notify ------------------------------------------------------------------------

@pytest.mark.parametrize("first", ["local", "gateway"])
def test_client_ends_tls_with_close_notify(gateway, tunnel, service, echo, pki, first):
    """Whichever side ends the tunnel, the client's TLS ends with close_notify (the
    gateway tells it from a bare TCP EOF)."""
    if first == "local":
        route = public_route(echo.addr, host="*")
    else:
        route = public_route(service(SourceServer, 5000, seed=3).addr, host="*")
    g = tls_gateway(gateway, pki.localhost, [route])
    t = wss_tunnel(tunnel, g, "--ca-cert", pki.ca.cert, *PUBLIC)
    with t.connect() as s:
        if first == "local":
            tr = Transfer(s, b"bye now").wait(10)
            assert bytes(tr.received) == b"bye now"
        else:
            tr = Transfer(s, b"", half_close=False).wait(10)
            assert tr.nreceived == 5000
    closed = g.wait_records("closed", 1)[0]
    assert closed["client_close_code"] == 1000 and closed["server_close_code"] == 1000, closed
    assert closed["tls_client_end"] == "close_notify", closed


def test_certificates_are_what_the_tests_think(pki):
    assert "IP Address:127.0.0.1" in describe(pki.localhost.cert)
    assert "IP Address" not in describe(pki.noip.cert)
    assert "DNS:other.example" in describe(pki.other.cert)


# --- default ports -----------------------------------------------------------------------

def bindable(port):
    try:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not bindable(80), reason="cannot listen on 127.0.0.1:80 here")
def test_host_without_port_uses_port_80(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr)], listen="127.0.0.1:80")
    t = tunnel("127.0.0.1", "--access-type", "public")
    with t.connect() as s:
        assert echo_once(s, b"port 80") == b"port 80"
    rec = g.wait_records("request", 1)[0]
    assert rec["headers"][0] == ["Host", "127.0.0.1"], "Host keeps the --host value as given"
