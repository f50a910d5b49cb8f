"""Everything a shell can hand the process: values with control characters, closed or
blocked standard streams, shared pipes, long profile lines, odd secret files, pasted
URLs, and a gateway that floods. Each case was a real way to break the tunnel or leak
through it."""

import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

import sanitizer

from helpers import (
    RssSampler, TunnelProcess, binary, clean_env, echo_once, expect_closed, public_route, route,
    run_cli,
)
from hostile import HostileServer, OP_PING, frame, response_101, serve_echo
from hops import env_for, stdio  # noqa: F401,F811  (a fixture)
from services import free_port, random_bytes, wait_until

PUBLIC = ["--access-type", "public"]


def cli(home, *args, env=None, command="tcp-tunnel"):
    return run_cli(list(args), clean_env(home, "info", env), command=command)


def usage_error(r, *fragments):
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 2, f"exit {r.returncode}: {err}"
    for f in fragments:
        assert f in err, f"{f!r} not in {err!r}"
    return err


# --- values that go into the request head ------------------------------------------------

@pytest.fixture
def raw_gateway():
    """A raw socket 'gateway' that records whatever connects (nothing should)."""
    h = HostileServer(serve_echo)
    yield h
    h.close()


INJECTED = "btok\r\nX-Injected: yes"


@pytest.mark.parametrize("how", ["flag", "env", "multiline-env", "file", "profile"])
def test_injected_header_never_reaches_the_gateway(raw_gateway, home, tmp_path, how):
    args = ["--host", raw_gateway.addr, "--access-type", "bearer", "--local-port", "0"]
    env = {}
    label = {"flag": "--bearer-token", "env": "OTOROSHI_BEARER_TOKEN",
             "multiline-env": "OTOROSHI_BEARER_TOKEN", "file": "--bearer-token-file",
             "profile": "tunnels.ini:3"}[how]
    if how == "flag":
        args += ["--bearer-token", INJECTED]
    elif how == "env":
        env["OTOROSHI_BEARER_TOKEN"] = INJECTED
    elif how == "multiline-env":
        env["OTOROSHI_BEARER_TOKEN"] = "s3cret-line-1\nuser: alice\nurl: https://x"  # $(pass show ...)
    elif how == "file":
        f = tmp_path / "token"
        f.write_bytes(b"btok\rX-Injected: yes\n")  # a bare CR inside the first line
        f.chmod(0o600)
        args += ["--bearer-token-file", str(f)]
    else:
        ini = tmp_path / "tunnels.ini"
        ini.write_text("[p]\naccess-type = bearer\nbearer-token = btok\x0bX-Injected: yes\n")
        ini.chmod(0o600)
        args += ["--config", str(ini), "-p", "p"]
    r = run_cli(args, clean_env(home, "trace", env))
    err = usage_error(r, label)
    assert re.search(r"holds (a line break|the control character 0x0B) at byte \d+: it cannot go into "
                     r"the request head", err), err
    assert "X-Injected" not in err and "s3cret" not in err
    assert raw_gateway.conns == [], "the tunnel connected to the gateway"


@pytest.mark.parametrize("args,fragment", [
    (["--host", "gw\r\nX-Injected: yes"], "--host"),
    (["--host", "127.0.0.1:1", "--remote-host", "db\nX-Injected: yes"], "--remote-host"),
    (["--host", "127.0.0.1:1", "--proxy", "http://u:p%0d%0aX-Injected:%20yes@127.0.0.1:3128"], "--proxy"),
    (["--host", "127.0.0.1:1", "--tls", "--tls-server-name", "gw\tx"], "--tls-server-name"),
])
def test_other_head_values_with_control_characters(home, args, fragment):
    usage_error(cli(home, *args, *PUBLIC, "--local-port", "0"), fragment)


def test_client_id_with_a_colon_is_refused(home, tmp_path):
    usage_error(cli(home, "--host", "h", "--apikey-client-id", "a:b", "--apikey-client-secret", "s"),
                "--apikey-client-id holds ':'")
    usage_error(cli(home, "--host", "h", "--apikey-client-secret", "s",
                    env={"OTOROSHI_APIKEY_CLIENT_ID": "a:b"}), "OTOROSHI_APIKEY_CLIENT_ID holds ':'")


# --- a gateway that floods --------------------------------------------------------------

def ping_flood(conn):
    """A 101, then 125-byte Pings as fast as the socket takes them; never reads."""
    if not conn.send(response_101(conn.key)):
        return
    ping = frame(OP_PING, b"p" * 125) * 512
    deadline = time.monotonic() + 6
    conn.sock.settimeout(0.2)
    while time.monotonic() < deadline and not conn.server.stopping:
        try:
            conn.sock.send(ping)
        except socket.timeout:
            continue
        except OSError:
            return
    conn.reset()


def test_ping_flood_from_a_gateway_that_never_reads_stays_bounded(tunnel):
    h = HostileServer(ping_flood)
    try:
        t = tunnel(h.addr, *PUBLIC)
        rss0 = t.rss_kb()
        s = t.connect()
        sampler = RssSampler(t)
        with open(f"/proc/{t.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks0 = int(fields[11]) + int(fields[12])
        time.sleep(4)  # the flood runs for 6 s: measure in the middle of it
        with open(f"/proc/{t.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12]) - ticks0
        peak = sampler.stop()
        s.close()
        # Unbounded, it grew by hundreds of MiB in this time. ASan keeps freed
        # blocks in its quarantine (16 MiB in .ci/run): the Pongs' turn over
        # that, and its shadow and size-class caches grow with it.
        margin = 4096 + (44 * 1024 if sanitizer.binary_is_sanitized() else 0)
        assert peak - rss0 < margin, f"VmRSS went from {rss0} kB to {peak} kB under a Ping flood"
        # Once the gateway stops reading, so does the tunnel: no spinning.
        hz = os.sysconf("SC_CLK_TCK")
        assert ticks / hz < 1.5, f"{ticks / hz:.2f} s of CPU in 4 s of flood"
    finally:
        h.close()


# --- closed or blocked standard streams ----------------------------------------------------

@pytest.mark.parametrize("redir", ["2>&-", "<&-", ">&-", "<&- >&- 2>&-"])
def test_closed_standard_streams_exit_cleanly(gateway, echo, home, redir):
    g = gateway([public_route(echo.addr)])
    port = free_port()
    cmd = f"exec {binary()} tcp-tunnel --host {g.addr} --access-type public --local-port {port} {redir}"
    p = subprocess.Popen(["/bin/sh", "-c", cmd], env=clean_env(home, "info"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        s = wait_until(lambda: connected(port), 10, message="the tunnel to listen")
        assert echo_once(s, b"with closed streams") == b"with closed streams"
        s.close()
        p.send_signal(signal.SIGINT)
        assert p.wait(10) == 0
    finally:
        stop_or_kill(p)


def test_stdio_with_closed_stdin_says_so(home):
    r = subprocess.run(["/bin/sh", "-c", f"exec {binary()} tt --stdio --host 127.0.0.1:1 --access-type public <&-"],
                       capture_output=True, env=clean_env(home, None), timeout=10)
    assert r.returncode == 1
    assert "standard input is closed (as with <&-)" in r.stderr.decode(), r.stderr


def connected(port):
    """A connection to the local port, or None while nothing listens there."""
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=1)
    except OSError:
        return None


def start_into_a_pipe(g, home, level, *extra):
    """The tunnel on a free port with its stderr the write end of a pipe that no one
    reads (yet): (process, port, read end)."""
    port = free_port()
    rfd, wfd = os.pipe()
    p = subprocess.Popen([binary(), "tcp-tunnel", "--host", g.addr, *PUBLIC, "--local-port", str(port), *extra],
                         env=clean_env(home, level), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=wfd)
    os.close(wfd)
    wait_until(lambda: connected(port), 10, message="the tunnel to listen").close()
    return p, port, rfd


def stop_or_kill(p):
    if p.poll() is None:
        p.kill()
        p.wait(5)


def test_a_stderr_pipe_nobody_reads_blocks_nothing(gateway, echo, home):
    g = gateway([public_route(echo.addr)])
    p, port, rfd = start_into_a_pipe(g, home, "debug", "--linger", "0.2")
    try:
        # 500 tunnels, ten at a time, logging at debug level into a pipe that holds
        # 64 KiB: it is full after a few dozen.
        for batch in range(50):
            socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(10)]
            for i, s in enumerate(socks):
                payload = b"tunnel %d.%d" % (batch, i)
                assert echo_once(s, payload) == payload
            for s in socks:
                s.close()
        # Now read the pipe: the lines that were kept, then the count of the others.
        got = bytearray()
        reader = threading.Thread(target=drain_pipe, args=(rfd, got), daemon=True)
        reader.start()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # one more line to write
            assert echo_once(s, b"once it drains") == b"once it drains"
        wait_until(lambda: b"log lines were dropped while standard error could take no more" in got, 10,
                   message="the count of dropped lines")
        p.send_signal(signal.SIGINT)
        assert p.wait(10) == 0
    finally:
        stop_or_kill(p)


def drain_pipe(fd, into):
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            os.close(fd)
            return
        into.extend(chunk)


def test_sigint_works_while_stderr_is_full(gateway, echo, home):
    g = gateway([public_route(echo.addr)])
    p, port, rfd = start_into_a_pipe(g, home, "trace")
    try:
        for _ in range(300):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.close()
        p.send_signal(signal.SIGINT)
        assert p.wait(10) == 0
    finally:
        os.close(rfd)
        stop_or_kill(p)


def test_stdio_gives_a_shared_pipe_back_blocking(gateway, echo, home):
    # The tunnel and `head` share the pipe to `wc`: libuv makes it non-blocking, and
    # head would then fail with EAGAIN, unless the tunnel puts its flags back.
    g = gateway([public_route(echo.addr)])
    script = (f"echo hi | {{ {binary()} tt --stdio --host {g.addr} --access-type public --linger 0.5; "
              f"head -c 3000000 /dev/zero; }} | (sleep 1; wc -c)")
    r = subprocess.run(["/bin/bash", "-c", script], capture_output=True, env=clean_env(home, None),
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().strip() == str(3000000 + 3), (r.stdout, r.stderr)
    assert b"Resource temporarily unavailable" not in r.stderr, r.stderr


# --- profiles and secret files -----------------------------------------------------------

JWT = "eyJhbGciOiJSUzI1NiJ9." + "a" * 700 + "." + "b" * 90


def test_profile_lines_of_any_reasonable_length(gateway, tunnel, echo, tmp_path):
    g = gateway([route("bearer", echo.addr, tokens=[JWT])])
    long_remote = "r" * 240 + ".internal"
    ini = tmp_path / "tunnels.ini"
    ini.write_text(f"[long]\nhost = {g.addr}\naccess-type = bearer\nbearer-token = {JWT}   ; an 800-char JWT\n"
                   f"remote-host = {long_remote}\n; {'x' * 9000}\nremote-port = 22\n")
    ini.chmod(0o600)
    t = tunnel(None, "--config", ini, "-p", "long")
    with t.connect() as s:
        assert echo_once(s, b"long lines") == b"long lines"
    rec = g.wait_records("request", 1)[0]
    assert dict(rec["headers"])["Authorization"] == f"Bearer {JWT}"
    assert dict(rec["params"])["remoteHost"] == long_remote


def test_profile_section_given_twice(home, tmp_path):
    ini = tmp_path / "tunnels.ini"
    ini.write_text("[p]\nhost = a\n[q]\nhost = b\n[p]\nhost = c\n")
    want = f"{ini}:5: the profile [p] is already defined at line 1"
    usage_error(cli(home, "--config", ini, "-p", "p", *PUBLIC), want)
    usage_error(cli(home, "--config", ini, "-p", "q", *PUBLIC), want)
    r = cli(home, "--config", ini, "--list-profiles")
    usage_error(r, want)
    assert r.stdout == b"", "profiles listed from a broken file"


def test_profile_indented_line_is_refused_as_documented(home, tmp_path):
    ini = tmp_path / "tunnels.ini"
    ini.write_text("[p]\nhost = a.example\n  .com\naccess-type = public\n")
    usage_error(cli(home, "--config", ini, "-p", "p"),
                f"{ini}:3: an indented line continues the value above it in INI, and profile values are one line")


def test_secret_file_of_5000_bytes_is_read_whole(gateway, tunnel, echo, tmp_path):
    token = "t" * 5000
    g = gateway([route("bearer", echo.addr, tokens=[token])])
    f = tmp_path / "token"
    f.write_text(token + "\n")
    f.chmod(0o600)
    t = tunnel(g, "--access-type", "bearer", "--bearer-token-file", f)
    with t.connect() as s:
        assert echo_once(s) == b"hello through the tunnel\n"


def test_secret_file_bom_and_crlf_are_removed(gateway, tunnel, echo, tmp_path):
    g = gateway([route("bearer", echo.addr, tokens=["btok"])])
    f = tmp_path / "token"
    f.write_bytes(b"\xef\xbb\xbfbtok\r\nsecond line\r\n")
    f.chmod(0o600)
    t = tunnel(g, "--access-type", "bearer", "--bearer-token-file", f)
    with t.connect() as s:
        assert echo_once(s) == b"hello through the tunnel\n"
    assert dict(g.wait_records("request", 1)[0]["headers"])["Authorization"] == "Bearer btok"


def test_fifo_secret_is_read_to_its_first_line(tunnel, gateway, echo, tmp_path):
    g = gateway([route("bearer", echo.addr, tokens=["from-a-fifo"])])
    fifo = tmp_path / "token.fifo"
    os.mkfifo(fifo, 0o600)
    done = threading.Event()

    def writer():
        with open(fifo, "w") as w:  # opens once the tunnel opens it for reading
            w.write("from-a-fifo\n")
            w.flush()
            done.wait(20)  # and keeps it open: the tunnel must not wait for EOF

    threading.Thread(target=writer, daemon=True).start()
    try:
        t = tunnel(g, "--access-type", "bearer", "--bearer-token-file", fifo)
        with t.connect() as s:
            assert echo_once(s) == b"hello through the tunnel\n"
        assert "chmod" not in t.text()
    finally:
        done.set()


@pytest.mark.parametrize("content,fragment", [
    pytest.param(None, "is a directory, not a file", id="directory"),
    pytest.param("/dev/urandom", "is a device, not a file", id="urandom"),
    pytest.param("/dev/zero", "is a device, not a file", id="zero"),
    pytest.param(b"", "is empty", id="empty"),
    pytest.param(b"\nsecret on the second line\n", "starts with an empty line", id="newline-first"),
    pytest.param(b"\r\nsecret\n", "starts with an empty line", id="crlf-first"),
    pytest.param(b"tok\x00en\n", "holds a NUL byte", id="nul"),
    pytest.param(b"x" * 70000, "longer than 64 KiB", id="70000-bytes"),
])
def test_secret_file_errors(home, tmp_path, content, fragment):
    if content is None:
        path = tmp_path / "a-directory"
        path.mkdir()
    elif isinstance(content, str):
        path = content
    else:
        path = tmp_path / "token"
        path.write_bytes(content)
        path.chmod(0o600)
    r = cli(home, "--host", "h", "--access-type", "bearer", "--bearer-token-file", path)
    err = usage_error(r, f"--bearer-token-file: '{path}' " if "longer" not in fragment and "NUL" not in fragment
                      else "--bearer-token-file: the first line of", fragment)
    assert "chmod" not in err


# --- messages that name the fix -----------------------------------------------------------

@pytest.mark.parametrize("host,fragment", [
    ("ws://gw.example:8080", "give HOST[:PORT], without a scheme"),
    ("wss://gw.example:8443", "without a scheme, and add --tls for wss://"),
    ("https://gw.example:8443/path", "without a scheme, and add --tls for wss://"),
    ("gw.example:8080/", "without a path"),
    ("::1:38127", "an IPv6 address goes in brackets: [ADDRESS] or [ADDRESS]:PORT"),
    ("::1", "an IPv6 address goes in brackets"),
])
def test_pasted_host_values(home, host, fragment):
    usage_error(cli(home, "--host", host, *PUBLIC), f"--host: '{host}': ", fragment)


def test_local_host_with_a_port(home):
    usage_error(cli(home, "--host", "h", *PUBLIC, "--local-host", "127.0.0.1:2241"),
                "--local-host: '127.0.0.1:2241' holds a port: give the address alone, and the port with --local-port")


def test_tls_against_a_plain_port_says_to_leave_it_out(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC, "--tls", "--insecure")
    with t.connect() as s:
        expect_closed(s, 5)
    line = t.wait_for(r"cannot open TLS to Otoroshi", 5).string
    assert "this port does not answer in TLS (a plain HTTP port?): leave out --tls" in line, line


def test_plain_against_a_tls_port_says_to_add_tls(gateway, tunnel, echo, tmp_path):
    from harness import make_certificate
    cert, key = make_certificate(tmp_path)
    g = gateway([public_route(echo.addr)], "--tls-cert", cert, "--tls-key", key)
    t = tunnel(g, *PUBLIC)
    with t.connect() as s:
        expect_closed(s, 5)
    line = t.wait_for(r"Otoroshi (closed the connection during|'s answer to) the WebSocket upgrade", 5).string
    assert "add --tls" in line or "wants --tls" in line, line


def broken_text(conn):
    conn.send(response_101(conn.key) + frame(0x1, b"caf\xc3\x28 au lait"))


def test_broken_text_frame_says_what_broke(tunnel):
    h = HostileServer(broken_text)
    try:
        t = tunnel(h.addr, *PUBLIC)
        with t.connect() as s:
            s.sendall(b"x")
            expect_closed(s, 5)
        line = t.wait_for(r"invalid WebSocket frame", 5).string
        assert "a text message that is not UTF-8 (at its byte 5)" in line, line
    finally:
        h.close()


def http10_101(conn):
    conn.send(response_101(conn.key).replace(b"HTTP/1.1", b"HTTP/1.0", 1))


def test_http_1_0_101_is_refused(tunnel):
    h = HostileServer(http10_101)
    try:
        t = tunnel(h.addr, *PUBLIC)
        with t.connect() as s:
            expect_closed(s, 5)
        line = t.wait_for(r"is not usable", 5).string
        assert "HTTP/1.0, which cannot switch protocols" in line, line
    finally:
        h.close()


@pytest.mark.parametrize("files", [[], ["junk.pem"], ["sub/"]])
def test_ssl_cert_dir_without_certificates_is_a_usage_error(home, tmp_path, files):
    d = tmp_path / "certs"
    d.mkdir()
    for name in files:
        if name.endswith("/"):
            (d / name).mkdir()
        else:
            (d / name).write_text("not a certificate\n")
    r = run_cli(["--host", "h", "--tls", *PUBLIC], clean_env(home, "info", {"SSL_CERT_DIR": str(d)}))
    usage_error(r, f"SSL_CERT_DIR: cannot load trusted certificates from '{d}': no certificate found")


def test_extra_arguments_are_usage_errors(home, tmp_path):
    usage_error(cli(home, "--list-profiles", "--host", "x"), "--list-profiles goes with --config alone, not with --host")
    r = run_cli(["bash", "extra"], clean_env(home), command="completions")
    usage_error(r, "completions takes one shell, not 'extra'")
