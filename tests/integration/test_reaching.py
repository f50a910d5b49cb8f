"""Reaching the gateway: --connect-to (curl's meaning), --header, retries before the first
byte, Happy Eyeballs."""

import os
import re
import shutil
import socket
import subprocess
import time

import pytest

from helpers import clean_env, echo_once, public_route, run_cli, route
from services import free_port

PUBLIC = ["--access-type", "public"]


def headers_of(rec):
    return [(n.lower(), v) for n, v in rec["headers"]]


def test_connect_to_keeps_the_host_header(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr, host="gateway.invalid")])
    # The name does not resolve: only --connect-to can reach the gateway.
    t = tunnel(f"gateway.invalid:{g.port}", *PUBLIC, "--connect-to", f"127.0.0.1:{g.port}")
    assert f"Connecting to 127.0.0.1:{g.port} for Otoroshi (gateway.invalid:{g.port}) (--connect-to)" in t.text()
    with t.connect() as s:
        assert echo_once(s, b"through the side door") == b"through the side door"
    rec = g.wait_records("request", 1)[0]
    assert ("host", f"gateway.invalid:{g.port}") in headers_of(rec)
    assert rec["status"] == 101


def test_connect_to_without_a_port_keeps_the_host_port(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr, host="gateway.invalid")])
    t = tunnel(f"gateway.invalid:{g.port}", *PUBLIC, "--connect-to", "127.0.0.1")
    with t.connect() as s:
        assert echo_once(s, b"same port") == b"same port"
    assert g.wait_records("request", 1)[0]["status"] == 101


def test_connect_to_an_ipv6_literal_and_in_a_profile(gateway, tunnel, echo, home, tmp_path):
    g = gateway([public_route(echo.addr, host="*")], listen="[::1]:0")
    ini = tmp_path / "t.ini"
    ini.write_text(f"[p]\nhost = gw.invalid:{g.port}\naccess-type = public\nconnect-to = [::1]:{g.port}\n")
    t = tunnel(None, "--config", ini, "-p", "p")
    with t.connect() as s:
        assert echo_once(s, b"v6") == b"v6"
    assert ("host", f"gw.invalid:{g.port}") in headers_of(g.wait_records("request", 1)[0])


@pytest.mark.parametrize("value,want", [
    ("", "--connect-to needs a non-empty value"),
    ("::1", "--connect-to: '::1'"),
    ("h:0", "--connect-to: 'h:0'"),
    ("h\r\nX: y", "a line break"),
])
def test_connect_to_usage_errors(home, value, want):
    r = run_cli(["--host", "gw", *PUBLIC, "--connect-to", value], clean_env(home))
    assert r.returncode == 2 and want in r.stderr.decode(), r.stderr


def test_headers_reach_the_gateway_in_order(gateway, tunnel, echo):
    g = gateway([route("bearer", echo.addr, tokens=["tok"])])
    t = tunnel(g, "--access-type", "bearer", "--bearer-token", "tok", "-H", "X-Team: data",
               "--header", "X-Empty:", "--header=X-Spaces:   padded value  ", "-HX-Tab:\tx")
    with t.connect() as s:
        assert echo_once(s, b"h") == b"h"
    rec = g.wait_records("request", 1)[0]
    hs = headers_of(rec)
    assert hs[-4:] == [("x-team", "data"), ("x-empty", ""), ("x-spaces", "padded value"), ("x-tab", "x")], hs
    # The tunnel's own come first, the credential untouched.
    assert ("authorization", "Bearer tok") in hs
    assert rec["head"].endswith("X-Team: data\r\nX-Empty: \r\nX-Spaces: padded value\r\nX-Tab: x\r\n\r\n")


def test_headers_from_a_profile_and_a_flag_wins(gateway, tunnel, echo, tmp_path):
    g = gateway([public_route(echo.addr)])
    ini = tmp_path / "t.ini"
    ini.write_text(f"[p]\nhost = {g.addr}\naccess-type = public\nheader = X-A: 1\nheader = X-B: 2\n")
    t = tunnel(None, "--config", ini, "-p", "p")
    with t.connect() as s:
        assert echo_once(s, b"p") == b"p"
    hs = headers_of(g.wait_records("request", 1)[0])
    assert ("x-a", "1") in hs and ("x-b", "2") in hs
    t2 = tunnel(None, "--config", ini, "-p", "p", "-H", "X-C: 3")
    with t2.connect() as s:
        assert echo_once(s, b"q") == b"q"
    hs = headers_of(g.wait_records("request", 2)[1])
    assert ("x-c", "3") in hs and ("x-a", "1") not in hs


@pytest.mark.parametrize("header", [
    "Host: other", "host: other", "Connection: close", "Upgrade: h2c", "Sec-WebSocket-Key: x",
    "sec-websocket-protocol: y", "Authorization: Basic eA==", "Content-Length: 5",
    "Transfer-Encoding: chunked",
])
def test_headers_the_tunnel_owns_are_usage_errors(home, header):
    r = run_cli(["--host", "gw", *PUBLIC, "--header", header], clean_env(home))
    err = r.stderr.decode()
    assert r.returncode == 2 and "the tunnel writes this header itself" in err, err
    assert header.split(":")[0] in err


@pytest.mark.parametrize("header,want", [
    ("X-A: 1\r\nX-B: 2", "a line break"),
    ("X-A: 1\nX-B: 2", "a line break"),
    ("X-A: a\x01b", "a control character"),
    ("no colon", "give 'Name: value'"),
    (": no name", "give 'Name: value'"),
    ("X A: 1", "a header name holds only"),
])
def test_bad_headers_are_usage_errors(home, header, want):
    r = run_cli(["--host", "gw", *PUBLIC, "--header", header], clean_env(home))
    err = r.stderr.decode()
    assert r.returncode == 2 and want in err, err
    assert err.count("\n") == 1


def test_secret_header_values_are_never_logged(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr)])
    secrets = {"X-Api-Key": "k-123456", "X-Auth-Token": "t-654321", "Cookie": "sid=c-777",
               "X-Client-Secret": "s-888", "Proxy-Authorization": "Basic cC05OTk=",
               "Otoroshi-Bearer": "otoapk_s3cr3t", "X-JWT-Assertion": "eyJ.s3cr3t", "X-Forwarded-Cred": "Bearer b-1"}
    args = [a for name, value in secrets.items() for a in ("-H", f"{name}: {value}")]
    t = tunnel(g, *PUBLIC, *args, "-H", "X-Team: visible-value", level="trace")
    with t.connect() as s:
        assert echo_once(s, b"s") == b"s"
    hs = dict(headers_of(g.wait_records("request", 1)[0]))
    for name, value in secrets.items():
        assert hs[name.lower()] == value
    t.close()
    text = t.text()
    for name, value in secrets.items():
        assert value not in text, name
        assert f"with the header {name}: (hidden" in text
    assert "with the header X-Team: visible-value" in text


# --- retries before the first byte -----------------------------------------------------

def summary(t):
    return t.wait_for(r"Tunnel from \S+ closed after .*\)$", 15).string


def test_a_gateway_started_after_the_client_connected_still_gets_its_bytes(gateway, tunnel, echo):
    port = free_port()
    t = tunnel(f"127.0.0.1:{port}", *PUBLIC, level="debug")
    with t.connect() as s:
        s.sendall(b"sent while nothing listens\n")
        time.sleep(1.5)  # the scenario itself: the gateway comes up 1.5 s later
        g = gateway([public_route(echo.addr)], listen=f"127.0.0.1:{port}")
        s.settimeout(15)
        got = b""
        while len(got) < 27:
            chunk = s.recv(100)
            assert chunk, t.text()
            got += chunk
        assert got == b"sent while nothing listens\n"
    line = summary(t)
    m = re.search(r"after (\d+) attempts\)$", line)
    assert m and int(m.group(1)) >= 3, line
    # Each wait is 75 % to 125 % of 100 ms doubling.
    waits = [(int(a), int(ms)) for a, ms in re.findall(r"attempt (\d+) failed \(.*?\): trying again in (\d+) ms",
                                                       t.text())]
    assert waits, t.text()
    for attempt, ms in waits:
        base = 100 << (attempt - 1)
        assert 0.75 * base <= ms <= 1.25 * base, (attempt, ms)
    assert len(g.records("request")) == 1
    assert "failed (connection refused): trying again in" in t.text()
    assert "ERROR" not in t.text()


def test_503_from_the_front_is_retried_then_the_tunnel_opens(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr, refuse={"status": 503, "body": "down for a moment"})])
    t = tunnel(g, *PUBLIC, level="debug")
    with t.connect() as s:
        s.sendall(b"early")
        g.wait_records("request", 2, timeout=10)
        g.set_routes([public_route(echo.addr)])
        s.settimeout(15)
        assert s.recv(5) == b"early"
    assert re.search(r"attempt \d+ failed \(HTTP 503\): trying again in \d+ ms", t.text())
    assert re.search(r"after \d+ attempts\)$", summary(t))
    statuses = [r["status"] for r in g.records("request")]
    assert statuses[-1] == 101 and set(statuses[:-1]) == {503}, statuses


def test_503_until_the_handshake_time_is_over_is_one_error(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr, refuse={"status": 503, "body": "down"})])
    t = tunnel(g, *PUBLIC)
    with t.connect() as s:
        start = time.monotonic()
        s.settimeout(15)
        assert s.recv(10) == b""
        assert time.monotonic() - start < 11
    line = summary(t)
    assert re.search(r"HTTP 503, after \d+ attempts\)$", line), line
    assert t.text().count("Otoroshi refused the tunnel") == 1, t.text()
    assert len(g.records("request")) >= 4


def test_no_retry_after_a_401(gateway, tunnel, echo):
    g = gateway([route("apikey", echo.addr, apikeys=["id:right"])])
    t = tunnel(g, "--apikey-client-id", "id", "--apikey-client-secret", "wrong")
    with t.connect() as s:
        s.settimeout(10)
        assert s.recv(10) == b""
    line = summary(t)
    assert "HTTP 40" in line and "attempts" not in line, line
    assert len(g.records("request")) == 1


def test_no_retry_after_a_101(gateway, tunnel):
    dead = free_port()
    g = gateway([public_route(f"127.0.0.1:{dead}")])
    t = tunnel(g, *PUBLIC)
    with t.connect() as s:
        s.settimeout(10)
        assert s.recv(10) == b""
    line = summary(t)
    assert "Close 1011" in line and "attempts" not in line, line
    assert len(g.records("request")) == 1


# --- Happy Eyeballs ---------------------------------------------------------------------

def blackhole_v6(port):
    """A socket on [::1]:port whose backlog is full and that never accepts: SYNs to it
    get no answer, as from a firewall that drops them. Returns what to close."""
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(("::1", port))
    s.listen(0)
    fill = [s]
    for _ in range(8):
        c = socket.socket(socket.AF_INET6)
        c.setblocking(False)
        try:
            c.connect(("::1", port))
        except BlockingIOError:
            pass
        fill.append(c)
    probe = socket.socket(socket.AF_INET6)
    probe.settimeout(0.5)
    try:
        probe.connect(("::1", port))
        pytest.skip("a full backlog does not drop connection attempts here")
    except (TimeoutError, socket.timeout):
        pass
    finally:
        probe.close()
    return fill


@pytest.fixture
def dual_name(tmp_path, monkeypatch):
    """dual.test resolving to ::1 then 127.0.0.1, for the tunnel only: it runs in a
    mount namespace of its own where /etc/hosts says so."""
    if not shutil.which("unshare"):
        pytest.skip("needs unshare (util-linux)")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n::1 dual.test\n127.0.0.1 dual.test\n")
    probe = subprocess.run(["unshare", "--mount", "sh", "-c", f"mount --bind {hosts} /etc/hosts && "
                            "getent ahosts dual.test"], capture_output=True, timeout=10)
    if probe.returncode != 0 or not probe.stdout.startswith(b"::1"):
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.decode()[:200]}")
    wrapper = tmp_path / "otoroshictl"
    wrapper.write_text("#!/bin/sh\n"
                       f"exec unshare --mount sh -c 'mount --bind {hosts} /etc/hosts && exec \"$0\" \"$@\"' "
                       f"{os.environ['OTOROSHICTL_BIN']} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setenv("OTOROSHICTL_BIN", str(wrapper))
    return "dual.test"


def test_happy_eyeballs_skips_an_address_that_drops_packets(gateway, tunnel, echo, dual_name):
    g = gateway([public_route(echo.addr, host="*")])
    try:
        hole = blackhole_v6(g.port)
    except OSError as e:
        pytest.skip(f"[::1]:{g.port} is taken: {e}")
    try:
        t = tunnel(f"{dual_name}:{g.port}", *PUBLIC, level="trace")
        with t.connect() as s:
            start = time.monotonic()
            assert echo_once(s, b"by the other family") == b"by the other family"
            took = time.monotonic() - start
        assert took < 1, f"the tunnel took {took:.2f} s"
        assert re.search(rf"connected to Otoroshi at 127\.0\.0\.1:{g.port}", t.text()), t.text()
        # The first attempt went to ::1, as the resolver ordered them.
        tries = re.findall(r"connecting to (\S+)", t.text())
        assert tries[:2] == [f"[::1]:{g.port}", f"127.0.0.1:{g.port}"], tries
    finally:
        for s in hole:
            s.close()


def test_every_address_refused_names_each(tunnel, dual_name):
    port = free_port()
    t = tunnel(f"{dual_name}:{port}", *PUBLIC)
    with t.connect() as s:
        s.settimeout(15)
        assert s.recv(10) == b""
    line = t.wait_for(r"^\[ERROR .*cannot connect to Otoroshi", 5).string
    assert f"[::1]:{port}: connection refused; 127.0.0.1:{port}: connection refused" in line, line


def test_secret_headers_in_a_readable_profile_warn_and_never_show_in_errors(home, tmp_path, tunnel, gateway, echo):
    g = gateway([public_route(echo.addr)])
    ini = tmp_path / "t.ini"
    ini.write_text(f"[p]\nhost = {g.addr}\naccess-type = public\nheader = X-Api-Key: s3cr3t-h\n")
    ini.chmod(0o644)
    t = tunnel(None, "--config", ini, "-p", "p")
    assert re.search(r"holds a secret and can be read by", t.text()), t.text()
    many = [a for i in range(16) for a in ("-H", f"X-N{i}: v")]
    r = run_cli(["--host", "gw", *PUBLIC, *many, "-H", "X-Api-Key: topsecret-123"], clean_env(home))
    err = r.stderr.decode()
    assert r.returncode == 2 and "more than 16 headers (--header X-Api-Key is one more)" in err, err
    assert "topsecret" not in err
