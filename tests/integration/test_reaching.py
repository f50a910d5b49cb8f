"""Reaching the gateway another way: --connect-to (curl's meaning) and --header."""

import re

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
               "X-Client-Secret": "s-888", "Proxy-Authorization": "Basic cC05OTk="}
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
