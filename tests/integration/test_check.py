"""--check: one diagnosed tunnel per forward, every step reported with its time, the
failing step named with the tunnel's own message, nothing written to the target."""

import json
import re
import subprocess

import pytest

from helpers import binary, clean_env, public_route, route
from pki import Pki
from services import SinkServer, free_port

PUBLIC = ["--access-type", "public"]
STEP_RE = re.compile(r"^  (ok  |FAIL)  (.{16}) +(\d+) ms  (.*)$")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = Pki(tmp_path_factory.mktemp("pki"))
    ca = p.ca("Check Test CA")
    return dict(ca=ca, good=ca.issue("localhost", dns=["localhost"], ips=["127.0.0.1"]),
                expired=ca.issue("expired", dns=["localhost"], ips=["127.0.0.1"], days=(-30, -29)))


def run_check(args, home, env=None, timeout=30):
    r = subprocess.run([binary(), "tcp-tunnel", "--check", *map(str, args)], capture_output=True,
                       timeout=timeout, env=clean_env(home, None, env))
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def steps(out):
    return [(m.group(1).strip(), m.group(2).strip(), int(m.group(3)), m.group(4))
            for m in map(STEP_RE.match, out.splitlines()) if m]


def test_a_good_route_passes_every_step_and_writes_nothing(gateway, service, home):
    sink = service(SinkServer)
    g = gateway([public_route(sink.addr)])
    rc, out, err = run_check(["--host", g.addr, *PUBLIC, "--check-wait", "0.5"], home)
    assert rc == 0, out + err
    got = steps(out)
    assert [s[:2] for s in got] == [("ok", "name lookup"), ("ok", "TCP connection"), ("ok", "upgrade"),
                                    ("ok", "target")], out
    assert got[0][3] == "127.0.0.1: 127.0.0.1"
    assert got[1][3] == f"127.0.0.1:{g.port}"
    assert "HTTP 101" in got[2][3]
    assert "reached: no Close within 0.500 s" in got[3][3] and got[3][2] >= 500
    assert out.splitlines()[0] == f"Checking 127.0.0.1:2222 \u2192 (defined in otoroshi target) via Otoroshi ({g.addr})"
    assert out.rstrip().endswith("=> every step passed")
    assert err == ""
    # One connection, closed with Close 1000, and not one byte to the target.
    closed = g.wait_records("closed", 1)[0]
    assert closed["client_close_code"] == 1000, closed
    assert len(g.records("request")) == 1
    sink.wait_results(1, 10)
    assert sink.received == 0


def test_wss_reports_the_tls_details(gateway, service, home, pki):
    sink = service(SinkServer)
    g = gateway([public_route(sink.addr, host="*")], "--tls-cert", pki["good"].cert, "--tls-key", pki["good"].key)
    rc, out, err = run_check(["--host", f"localhost:{g.port}", "--tls", "--ca-cert", pki["ca"].cert, *PUBLIC,
                              "--check-wait", "0.2"], home)
    assert rc == 0, out + err
    tls = [s for s in steps(out) if s[1] == "TLS"][0]
    assert re.match(r"TLSv1\.[23], TLS(1-3)?-\S+; subject CN=localhost, issuer CN=Check Test CA, expires in [01] days?; "
                    r"verified for localhost; new session$", tls[3]), tls


def test_a_wrong_secret_fails_the_upgrade_with_otoroshis_message(gateway, service, home):
    sink = service(SinkServer)
    g = gateway([route("apikey", sink.addr, apikeys=["id:right"])])
    rc, out, err = run_check(["--host", g.addr, "--apikey-client-id", "id", "--apikey-client-secret", "not-it-Zq9"],
                             home)
    assert rc == 1
    fail = [s for s in steps(out) if s[0] == "FAIL"]
    assert len(fail) == 1 and fail[0][1] == "upgrade", out
    assert "HTTP 401" in fail[0][3] and "bad apikey" in fail[0][3], fail
    assert "not-it-Zq9" not in out + err
    assert out.rstrip().endswith("=> FAILED")


def test_an_unreachable_target_fails_the_target_step(gateway, home):
    g = gateway([public_route(f"127.0.0.1:{free_port()}")])
    rc, out, _ = run_check(["--host", g.addr, *PUBLIC], home)
    assert rc == 1
    last = steps(out)[-1]
    assert last[:2] == ("FAIL", "target") and "Close 1011" in last[3], out
    assert "could not reach the remote service" in last[3]


def test_an_expired_certificate_fails_the_tls_step(gateway, service, home, pki):
    sink = service(SinkServer)
    g = gateway([public_route(sink.addr, host="*")], "--tls-cert", pki["expired"].cert,
                "--tls-key", pki["expired"].key)
    rc, out, _ = run_check(["--host", f"localhost:{g.port}", "--tls", "--ca-cert", pki["ca"].cert, *PUBLIC], home)
    assert rc == 1
    last = steps(out)[-1]
    assert last[:2] == ("FAIL", "TLS") and "expired" in last[3], out
    assert len(g.records("request")) == 0


def test_a_dead_proxy_fails_the_tcp_step(gateway, home):
    g = gateway([public_route("127.0.0.1:1")])
    rc, out, _ = run_check(["--host", g.addr, *PUBLIC, "--proxy", f"http://127.0.0.1:{free_port()}"], home)
    assert rc == 1
    last = steps(out)[-1]
    assert last[:2] == ("FAIL", "TCP connection") and "proxy" in last[3] and "refused" in last[3], out


def test_a_name_that_does_not_resolve_fails_the_lookup(home):
    rc, out, _ = run_check(["--host", "no-such-gateway.invalid:8080", *PUBLIC], home)
    assert rc == 1
    got = steps(out)
    assert len(got) == 1 and got[0][:2] == ("FAIL", "name lookup"), out
    assert "no-such-gateway.invalid" in got[0][3] and "check --host" in got[0][3]


def test_json_steps_and_one_tunnel_per_forward(gateway, service, home):
    sink = service(SinkServer)
    g = gateway([public_route("${req.query.remoteHost}:${req.query.remotePort}")])
    rc, out, err = run_check(["--host", g.addr, *PUBLIC, "--log-format", "json", "--check-wait", "0.2",
                              "-L", f"0:127.0.0.1:{sink.port}", "-L", f"0:127.0.0.1:{free_port()}"], home)
    assert rc == 1, out + err
    objs = [json.loads(line) for line in out.splitlines()]
    assert all({"forward", "step", "ok", "ms", "detail"} <= set(o) for o in objs), objs
    forwards = sorted({o["forward"] for o in objs})
    assert len(forwards) == 2
    by = {f: [o for o in objs if o["forward"] == f] for f in forwards}
    good = [f for f in forwards if all(o["ok"] for o in by[f])]
    bad = [f for f in forwards if f not in good]
    assert len(good) == 1 and len(bad) == 1, objs
    assert [o["step"] for o in by[good[0]]] == ["name lookup", "TCP connection", "upgrade", "target"]
    assert by[good[0]][0]["addresses"] == ["127.0.0.1"]
    assert by[good[0]][2]["http_status"] == 101
    assert by[bad[0]][-1]["step"] == "target" and by[bad[0]][-1]["close_code"] == 1011
    assert len(g.records("request")) == 2
    assert err == ""


@pytest.mark.parametrize("args,want", [
    (["--stdio"], "--check opens its own tunnels and reads no input"),
    (["--check-wait", "x"], "--check-wait: 'x' is not a number of seconds"),
    (["--check-wait", "61"], "from 0 to 60"),
])
def test_check_usage_errors(home, args, want):
    rc, _, err = run_check(["--host", "gw", *PUBLIC, *args], home)
    assert rc == 2 and want in err, err


def test_check_wait_needs_check(home):
    r = subprocess.run([binary(), "tcp-tunnel", "--host", "gw", *PUBLIC, "--check-wait", "1"],
                       capture_output=True, timeout=10, env=clean_env(home))
    assert r.returncode == 2 and b"--check-wait only applies with --check" in r.stderr


def test_data_then_a_close_in_one_read_is_a_reached_target(home):
    # A target that speaks and is gone at once (Otoroshi's Close 1000 on its EOF):
    # reached, whatever the order the bytes come in.
    from hostile import HostileServer, frame, response_101
    h = HostileServer(lambda c: c.send(response_101(c.key) + frame(0x2, b"banner") + frame(0x8, b"\x03\xe8")))
    try:
        rc, out, err = run_check(["--host", h.addr, *PUBLIC], home)
    finally:
        h.close()
    assert rc == 0, out + err
    last = steps(out)[-1]
    assert last[:2] == ("ok", "target") and "it spoke first (6 bytes" in last[3], out


def test_connect_to_failures_name_the_address_and_the_flag(home):
    rc, out, _ = run_check(["--host", "gw.example.com", *PUBLIC, "--connect-to", "nosuch.invalid:8443"], home)
    assert rc == 1
    fail = steps(out)[-1]
    assert fail[:2] == ("FAIL", "name lookup") and "'nosuch.invalid'" in fail[3] and "check --connect-to" in fail[3], out
    port = free_port()
    rc, out, _ = run_check(["--host", "gw.example.com", *PUBLIC, "--connect-to", f"127.0.0.1:{port}"], home)
    fail = steps(out)[-1]
    assert fail[:2] == ("FAIL", "TCP connection"), out
    assert f"127.0.0.1:{port} (--connect-to, for gw.example.com)" in fail[3] and "check --connect-to" in fail[3], out
