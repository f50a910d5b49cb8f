"""--stdio: a real ssh through a real sshd with the tunnel as its ProxyCommand, and
--stdio alone with hash-checked transfers, exit statuses and a quiet standard error."""

import re
import shlex
import socket
import subprocess
import time

from helpers import LINE_RE, Transfer, binary, public_route, route
from hops import (  # noqa: F401,F811  (fixtures)
    PYTHON, env_for, read_rc, sshd, stdio, write_rc_wrapper,
)
from services import SinkServer, SourceServer, free_port, random_bytes, sha256

MIB = 1 << 20


def proxy_command(tmp_path, name, *args):
    """A ProxyCommand running the tunnel under RC_WRAPPER; returns (command, rc file)."""
    wrapper = write_rc_wrapper(tmp_path)
    rc_path = tmp_path / f"{name}.rc"
    cmd = " ".join(shlex.quote(str(a)) for a in
                   [PYTHON, wrapper, rc_path, binary(), "tcp-tunnel", "--stdio", *args])
    return cmd, rc_path


def run_ssh(sshd, home, proxy, remote, data=b"", user_host=None, port=22, timeout=60):
    return subprocess.run(sshd.ssh_args(proxy, remote, user_host=user_host, port=port),
                          input=data, capture_output=True, env=env_for(home, None),
                          timeout=timeout)


def test_ssh_proxycommand_runs_commands_and_moves_data(gateway, sshd, tmp_path, home):
    g = gateway([public_route(f"127.0.0.1:{sshd.port}")])
    proxy, rc_path = proxy_command(tmp_path, "up", "--host", f"127.0.0.1:{g.port}",
                                   "--access-type", "public")
    upload = random_bytes(4 * MIB + 17, seed=22)
    r = run_ssh(sshd, home, proxy, "echo hello; sha256sum", data=upload)
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 0, f"ssh exit {r.returncode}: {err}\nsshd: {sshd.log()[-2000:]}"
    assert r.stdout.decode() == f"hello\n{sha256(upload)}  -\n"
    assert err == "", f"the tunnel (or ssh) wrote to stderr at the default level: {err!r}"
    rec = g.wait_records("request", 1)[0]
    assert rec["status"] == 101 and rec["target"] == f"127.0.0.1:{sshd.port}"
    closed = g.wait_records("closed", 1)[0]
    assert closed["bytes_from_client"] > len(upload) > 0
    read_rc(rc_path)  # the tunnel is gone (its status: the next test)

    # And the other way: sshd reads a file and sends it down through the tunnel.
    blob = tmp_path / "blob.bin"
    download = random_bytes(3 * MIB + 5, seed=23)
    blob.write_bytes(download)
    proxy2, rc2 = proxy_command(tmp_path, "down", "--host", f"127.0.0.1:{g.port}",
                                "--access-type", "public")
    r = run_ssh(sshd, home, proxy2, f"cat {shlex.quote(str(blob))}")
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert len(r.stdout) == len(download) and sha256(r.stdout) == sha256(download)
    assert r.stderr == b""
    read_rc(rc2)


def test_tunnel_ends_cleanly_when_ssh_is_done(gateway, sshd, tmp_path, home):
    # ssh closes the ProxyCommand's pipes and, right after, sends it SIGHUP (OpenSSH's
    # ssh_kill_proxy_command). The tunnel must still end as a clean end does: its
    # Close 1000 to the gateway and exit status 0.
    g = gateway([public_route(f"127.0.0.1:{sshd.port}")])
    proxy, rc_path = proxy_command(tmp_path, "end", "--host", f"127.0.0.1:{g.port}",
                                   "--access-type", "public")
    r = run_ssh(sshd, home, proxy, "echo bye")
    assert r.returncode == 0 and r.stdout == b"bye\n", r.stderr.decode(errors="replace")
    rc, signals = read_rc(rc_path)
    closed = g.wait_records("closed", 1)[0]
    assert closed["client_close_code"] == 1000, (
        f"the gateway saw no Close from the tunnel (outcome {closed['outcome']!r}; tunnel exit "
        f"status {rc}, signals ssh sent it: {signals})")
    assert rc == 0, f"tunnel exit status {rc} (signals ssh sent it: {signals})"


def test_ssh_proxycommand_with_h_and_p(gateway, sshd, tmp_path, home):
    # The ssh_config way: %h and %p become --remote-host/--remote-port, and a
    # ${req.query.*} route sends the tunnel where ssh asked.
    g = gateway([route("apikey", "${req.query.remoteHost}:${req.query.remotePort}",
                       apikeys=["ssh-id:ssh-secret"])])
    proxy, rc_path = proxy_command(tmp_path, "hp", "--host", f"127.0.0.1:{g.port}",
                                   "--remote-host", "%h", "--remote-port", "%p")
    env_secret = {"OTOROSHI_APIKEY_CLIENT_ID": "ssh-id", "OTOROSHI_APIKEY_CLIENT_SECRET": "ssh-secret"}
    r = subprocess.run(sshd.ssh_args(proxy, "echo via-ssh; whoami", user_host=f"{sshd.user}@127.0.0.1",
                                     port=sshd.port),
                       capture_output=True, env=env_for(home, None, env_secret), timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert r.stdout.decode() == f"via-ssh\n{sshd.user}\n"
    rec = g.wait_records("request", 1)[0]
    assert dict(rec["params"]) == {"transport": "tcp", "remoteHost": "127.0.0.1",
                                   "remotePort": str(sshd.port)}
    assert rec["target"] == f"127.0.0.1:{sshd.port}"
    read_rc(rc_path)


def test_ssh_fails_cleanly_when_the_gateway_refuses(gateway, sshd, tmp_path, home):
    g = gateway([route("apikey", f"127.0.0.1:{sshd.port}", apikeys=["id:right"])])
    proxy, rc_path = proxy_command(tmp_path, "refused", "--host", f"127.0.0.1:{g.port}",
                                   "--apikey-client-id", "id", "--apikey-client-secret-file",
                                   tmp_path / "wrong-secret")
    (tmp_path / "wrong-secret").write_text("Wr0ng-S3cret\n")
    (tmp_path / "wrong-secret").chmod(0o600)
    r = run_ssh(sshd, home, proxy, "echo never")
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 255, err
    assert r.stdout == b""
    assert re.search(r"^\[ERROR otoroshictl::tunnels::tcp\] Otoroshi refused the tunnel .*HTTP 401",
                     err, re.M), err
    rc, _ = read_rc(rc_path)
    assert rc not in (0, None) and rc > 0, rc
    assert "Wr0ng-S3cret" not in err


# --- --stdio alone ----------------------------------------------------------------------

def test_stdio_echo_hash_checked_both_ways_and_silent(gateway, stdio, echo):
    g = gateway([public_route(echo.addr)])
    data = random_bytes(6 * MIB + 3, seed=31)
    t0 = time.monotonic()
    r = stdio(["--host", g.addr, "--access-type", "public"], data=data)
    rc = r.wait(60)
    assert rc == 0, r.err_text()
    assert r.nout == len(data) and r.digest == sha256(data)
    assert r.stderr == b"", f"stderr at the default level: {r.err_text()!r}"
    assert r.write_error is None
    assert time.monotonic() - t0 < 30
    closed = g.wait_records("closed", 1)[0]
    assert closed["client_close_code"] == 1000
    assert closed["sha256_from_client"] == sha256(data)
    assert closed["sha256_to_client"] == sha256(data)


def test_stdio_upload_to_sink_and_download_from_source(gateway, stdio, service):
    sink = service(SinkServer)
    src = service(SourceServer, 5 * MIB + 11, seed=32)
    g = gateway([public_route(sink.addr)])
    up = random_bytes(5 * MIB + 7, seed=33)
    r = stdio(["--host", g.addr, "--access-type", "public"], data=up)
    assert r.wait(60) == 0, r.err_text()
    assert r.nout == 0
    assert sink.wait_results(1, 10)[0][1:] == (len(up), sha256(up))
    assert r.stderr == b""

    g.set_routes([public_route(src.addr)])
    r = stdio(["--host", g.addr, "--access-type", "public"])  # stdin closed at once: half-close
    assert r.wait(60) == 0, r.err_text()
    assert r.nout == len(src.data) and r.digest == src.sha256
    assert r.stderr == b""


def test_stdio_ends_when_the_gateway_closes_with_stdin_still_open(gateway, stdio, service):
    # The target sends its bytes and closes: the tunnel is over, even though nobody
    # closed standard input (a ProxyCommand whose server hung up).
    src = service(SourceServer, 200000, seed=34)
    g = gateway([public_route(src.addr)])
    r = stdio(["--host", g.addr, "--access-type", "public"], keep_stdin=True)
    try:
        rc = r.wait(8)
    finally:
        r.close_stdin()
    assert r.nout == len(src.data) and r.digest == src.sha256
    assert rc == 0, r.err_text()
    assert r.stdout_eof_at is not None


def test_stdio_refusal_exits_non_zero_with_an_error_line(gateway, stdio, echo):
    g = gateway([route("apikey", echo.addr, apikeys=["good:secret"])])
    r = stdio(["--host", g.addr, "--apikey-client-id", "good", "--apikey-client-secret", "nope"],
              data=b"never delivered", keep_stdin=True)
    t0 = time.monotonic()
    rc = r.wait(10)
    took = time.monotonic() - t0
    err = r.err_text()
    assert rc != 0, err
    lines = [line for line in err.splitlines() if line]
    assert lines, "no reason given on stderr"
    assert all(LINE_RE.match(line) for line in lines), err
    assert any(line.startswith("[ERROR ") and "HTTP 401" in line and "refused" in line
               for line in lines), err
    assert not any(line.startswith("[INFO ") for line in lines), err
    assert r.nout == 0
    assert took < 5, f"exit took {took:.1f}s"


def test_stdio_unreachable_gateway_exits_non_zero(stdio):
    r = stdio(["--host", f"127.0.0.1:{free_port()}", "--access-type", "public"], keep_stdin=True)
    rc = r.wait(10)
    assert rc != 0
    assert re.search(r"^\[ERROR .*connection refused", r.err_text(), re.M), r.err_text()


def test_stdio_info_level_when_asked(gateway, stdio, echo):
    # OTOROSHICTL=info overrides the quiet default of --stdio: the summary shows.
    g = gateway([public_route(echo.addr)])
    r = stdio(["--host", g.addr, "--access-type", "public"], data=b"x" * 1234, level="info")
    assert r.wait(20) == 0
    m = re.search(r"Tunnel from stdio closed after \d+\.\d{3} s: 1234 bytes sent, 1234 bytes "
                  r"received \(local close", r.err_text())
    assert m, r.err_text()
    assert "listening" not in r.err_text()


def test_stdio_over_a_socket_on_stdin_and_stdout(gateway, home, echo):
    # inetd/systemd-socket style: one socket is both standard input and output; the
    # end of the reply must reach the peer as a FIN on that socket.
    g = gateway([public_route(echo.addr)])
    mine, theirs = socket.socketpair()
    proc = subprocess.Popen([binary(), "tcp-tunnel", "--stdio", "--host", g.addr, "--access-type",
                             "public"], stdin=theirs, stdout=theirs, stderr=subprocess.PIPE,
                            env=env_for(home, None))
    theirs.close()
    try:
        data = random_bytes(2 * MIB + 9, seed=35)
        tr = Transfer(mine, data, keep=False).wait(30)
        assert tr.nreceived == len(data) and tr.digest == sha256(data)
        assert proc.wait(10) == 0
        assert proc.stderr.read() == b""
    finally:
        mine.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stderr.close()


def test_stdio_from_a_regular_file_fails_clearly(gateway, home, echo, tmp_path):
    g = gateway([public_route(echo.addr)])
    f = tmp_path / "input.bin"
    f.write_bytes(b"data in a file\n")
    with open(f, "rb") as stdin:
        r = subprocess.run([binary(), "tcp-tunnel", "--stdio", "--host", g.addr, "--access-type",
                            "public"], stdin=stdin, capture_output=True, env=env_for(home, None),
                           timeout=10)
    err = r.stderr.decode()
    assert r.returncode != 0
    assert re.search(r"^\[ERROR .*--stdio .*pipe", err, re.M), err
    assert g.requests() == []
