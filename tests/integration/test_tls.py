"""--tls (wss://) and the default gateway ports."""

import re
import socket

import pytest

from harness import make_certificate
from helpers import echo_once, expect_closed, public_route

APIKEY = ["--access-type", "apikey", "--apikey-client-id", "tls-id",
          "--apikey-client-secret", "tls-secret-Qw8"]


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
