"""Several forwards in one process: -L, profile sets, forward lines, the logs that
name each forward, a bind failure, SIGUSR1's report, systemd socket activation and
sd_notify (read from a NOTIFY_SOCKET the test makes), and the systemd units."""

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from helpers import (LISTEN_RE, READY, Transfer, TunnelProcess, binary, clean_env, echo_once,
                     public_route, route, run_cli, wait_until)
from hops import sshd  # noqa: F401  (fixture)
from services import EchoServer, free_port, random_bytes, sha256
from test_redis import redis, redis_ping  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[2]
DYNAMIC = "${req.query.remoteHost}:${req.query.remotePort}"


def listening(t):
    """Every forward's (addr, port, remote) from the startup lines, in order."""
    t.wait_for(re.escape(READY))
    out = []
    for line in t.text().splitlines():
        m = LISTEN_RE.search(line)
        if m:
            out.append((m.group("addr"), int(m.group("port")), m.group("remote")))
    return out


@pytest.fixture
def spawn(home):
    """spawn(args, env=None, **kw) -> TunnelProcess, killed at teardown if still running."""
    made = []

    def make(args, env=None, **kw):
        t = TunnelProcess(args, env or clean_env(home), **kw)
        made.append(t)
        return t

    yield make
    for t in reversed(made):
        t.close()


def write_ini(path, text):
    path.write_text(text)
    path.chmod(0o600)
    return path


def exchange(port, payload, timeout=30):
    """Sends payload on a fresh connection, half-closes, returns all that comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        tr = Transfer(s, payload, timeout=timeout)
        tr.wait()
        return tr.received


def redis_roundtrip(port, key, value, timeout=30):
    """SET then GET of value on one connection: the value that came back."""
    cmd = (f"*3\r\n$3\r\nSET\r\n${len(key)}\r\n{key}\r\n${len(value)}\r\n".encode() + value +
           f"\r\n*2\r\n$3\r\nGET\r\n${len(key)}\r\n{key}\r\n".encode())
    want_tail = f"${len(value)}\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(cmd)
        got = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
            at = got.find(want_tail)
            if at >= 0 and len(got) >= at + len(want_tail) + len(value) + 2:
                return got[at + len(want_tail):at + len(want_tail) + len(value)]
        raise AssertionError(f"redis answered {got[:200]!r}")


# --- several forwards, real services -------------------------------------------------

def test_three_forwards_echo_redis_sshd_fifty_connections(gateway, tunnel, echo, redis, sshd,
                                                          tmp_path, home):
    g = gateway([public_route(DYNAMIC)])
    t = tunnel(g, "--access-type", "public",
               "-L", f"0:127.0.0.1:{echo.port}",
               "-L", f"127.0.0.1:0:127.0.0.1:{redis}",
               "--forward", f"0:127.0.0.1:{sshd.port}")
    fwd = listening(t)
    assert [f[2] for f in fwd] == [f"127.0.0.1:{echo.port}", f"127.0.0.1:{redis}",
                                   f"127.0.0.1:{sshd.port}"], t.text()
    echo_port, redis_port, ssh_port = (f[1] for f in fwd)
    assert len({echo_port, redis_port, ssh_port}) == 3

    results, errors = {}, []

    def run(kind, i):
        try:
            if kind == "echo":
                data = random_bytes(256 * 1024 + i, seed=100 + i)
                results[(kind, i)] = sha256(exchange(echo_port, data)) == sha256(data)
            elif kind == "redis":
                value = random_bytes(64 * 1024 + i, seed=200 + i)
                results[(kind, i)] = sha256(redis_roundtrip(redis_port, f"k{i}", value)) == sha256(value)
            else:
                data = random_bytes(128 * 1024 + i, seed=300 + i)
                r = subprocess.run(ssh_direct(sshd, ssh_port, "sha256sum"), input=data,
                                   capture_output=True, timeout=60)
                results[(kind, i)] = (r.returncode == 0 and
                                      r.stdout.decode().split()[0] == sha256(data))
                if r.returncode != 0:
                    errors.append(r.stderr.decode(errors="replace"))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"{kind} {i}: {e!r}")

    jobs = [("echo", i) for i in range(30)] + [("redis", i) for i in range(14)] + \
           [("ssh", i) for i in range(6)]
    threads = [threading.Thread(target=run, args=j, daemon=True) for j in jobs]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not any(th.is_alive() for th in threads), "a connection did not finish in 120 s"
    assert not errors, errors[:3]
    assert len(results) == 50 and all(results.values()), \
        [k for k, v in results.items() if not v]
    # Each tunnel asked for its own forward's remote.
    reqs = g.wait_records("request", 50, timeout=30)
    targets = [r["target"] for r in reqs]
    assert targets.count(f"127.0.0.1:{echo.port}") == 30
    assert targets.count(f"127.0.0.1:{redis}") == 14
    assert targets.count(f"127.0.0.1:{sshd.port}") == 6
    # With several forwards, the summaries name theirs.
    wait_until(lambda: t.text().count("closed after") >= 50, 30, message="50 summaries")
    names = {f"127.0.0.1:{p} \u2192 {r}" for _, p, r in fwd}
    summaries = [ln for ln in t.text().splitlines() if "closed after" in ln]
    for ln in summaries:
        m = re.search(r"Tunnel from \S+ \[(.+?)\] closed after", ln)
        assert m and m.group(1) in names, ln


def ssh_direct(sshd, port, command):
    return ["ssh", "-F", "/dev/null", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20",
            "-i", str(sshd.client_key), "-p", str(port), f"{sshd.user}@127.0.0.1", command]


def test_a_failing_tunnel_never_touches_another_forward(gateway, tunnel, echo):
    dead = free_port()  # nothing listens there: Otoroshi answers Close 1011
    g = gateway([public_route(DYNAMIC)])
    t = tunnel(g, "--access-type", "public", "-L", f"0:127.0.0.1:{echo.port}",
               "-L", f"0:127.0.0.1:{dead}")
    (_, good, _), (_, bad, _) = listening(t)
    with socket.create_connection(("127.0.0.1", good), timeout=10) as keep:
        assert echo_once(keep, b"before\n") == b"before\n"
        with socket.create_connection(("127.0.0.1", bad), timeout=10) as s:
            s.settimeout(10)
            assert s.recv(100) == b""  # the failed tunnel ends its own connection
        t.wait_for("could not reach the remote service")
        assert echo_once(keep, b"after\n") == b"after\n"
    assert exchange(good, b"fresh") == b"fresh"


# --- profile sets ---------------------------------------------------------------------

def test_two_profiles_with_different_credentials_in_one_process(gateway, service, spawn, tmp_path):
    a = service(EchoServer, greeting=b"A:")
    b = service(EchoServer, greeting=b"B:")
    g = gateway([route("apikey", a.addr, host="127.0.0.1", apikeys=["alpha:s3cret-a"]),
                 route("bearer", b.addr, host="localhost", tokens=["tok-b"])])
    ini = write_ini(tmp_path / "t.ini", f"""
[alpha]
host = 127.0.0.1:{g.port}
apikey-client-id = alpha
apikey-client-secret = s3cret-a
local-port = 0

[beta]
host = localhost:{g.port}
access-type = bearer
bearer-token = tok-b
forward = 0
keepalive = 5
""")
    t = spawn(["--config", ini, "-p", "alpha", "-p", "beta"])
    fwd = listening(t)
    assert len(fwd) == 2, t.text()
    assert "[alpha]" in t.text() and "[beta]" in t.text()
    assert t.text().count(READY) == 1
    assert exchange(fwd[0][1], b"one") == b"A:one"
    assert exchange(fwd[1][1], b"two") == b"B:two"
    reqs = g.wait_records("request", 2)
    assert sorted(r["status"] for r in reqs) == [101, 101]
    wait_until(lambda: t.text().count("closed after") >= 2, 10, message="two summaries")
    assert re.search(r"Tunnel from \S+ \[alpha\] closed after", t.text())
    assert re.search(r"Tunnel from \S+ \[beta\] closed after", t.text())
    assert "s3cret-a" not in t.text() and "tok-b" not in t.text()
    assert t.stop() == 0


def test_profile_forward_lines_and_list_profiles(gateway, spawn, home, tmp_path, echo):
    g = gateway([public_route(DYNAMIC)])
    ini = write_ini(tmp_path / "t.ini", f"""
[hops]
host = 127.0.0.1:{g.port}
access-type = public
forward = 0:127.0.0.1:{echo.port}
forward = 127.0.0.1:0:127.0.0.1:{echo.port}
""")
    listed = run_cli(["--config", ini, "--list-profiles"], clean_env(home))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.decode().splitlines() == [
        f"hops\t127.0.0.1:{g.port}\tforward 0:127.0.0.1:{echo.port}",
        f"hops\t127.0.0.1:{g.port}\tforward 127.0.0.1:0:127.0.0.1:{echo.port}",
    ]
    t = spawn(["--config", ini, "-p", "hops"])
    fwd = listening(t)
    assert len(fwd) == 2
    for _, port, _ in fwd:
        assert exchange(port, b"x" * 1000) == b"x" * 1000


def test_profile_errors_name_the_profile_file_line_and_key(home, tmp_path):
    ini = write_ini(tmp_path / "t.ini", """
[good]
host = gw:8080
access-type = public

[bad]
host = gw:8080
access-type = public
forward = 5432:db:5432
local-port = 7
""")
    r = run_cli(["--config", ini, "-p", "good", "-p", "bad"], clean_env(home))
    err = r.stderr.decode()
    assert r.returncode == 2
    assert err.startswith(f"error: profile 'bad': {ini}:10: 'local-port' cannot go with the profile's "
                          "forward lines"), err
    ini.write_text(ini.read_text().replace("local-port = 7", "forward = 5432:db:0"))
    r = run_cli(["--config", ini, "-p", "good", "-p", "bad"], clean_env(home))
    assert r.returncode == 2
    assert f"profile 'bad': {ini}:10: -L '5432:db:0': '0' is not a remote port" in r.stderr.decode()


# --- usage errors ---------------------------------------------------------------------

USAGE = [
    (["-L", "1:2:3:4:5"], "-L '1:2:3:4:5' has more than four parts: put an IPv6 address in brackets"),
    (["-L", "::1:5432:db:5432"], "has more than four parts"),
    (["-L", "x"], "-L 'x': 'x' is not a port number to listen on"),
    (["-L", "70000"], "'70000' is not a port number to listen on"),
    (["-L", "5432:db"], "'db' is not a port number to listen on"),
    (["-L", "5432:db:0"], "'0' is not a remote port (1 to 65535)"),
    (["-L", "5432::5432"], "'' is not a remote host"),
    (["-L", "[::1:5432"], "unbalanced brackets"),
    (["-L", ":5432"], "'' is not an address to listen on"),
    (["-L", "1:db:2", "--local-port", "3"], "--local-port cannot go with -L/--forward"),
    (["-L", "1:db:2", "--remote-host", "x"], "--remote-host cannot go with -L/--forward"),
    (["-L", "1:db:2", "--local-host", "::1"], "--local-host cannot go with -L/--forward"),
    (["-L", "1:db:2", "--remote-port", "9"], "--remote-port cannot go with -L/--forward"),
    (["-L", "1:db:2", "--stdio"], "--stdio carries one tunnel without a listener"),
    (["-L"], "--forward needs a value"),
    (["-p", "a", "-p", "a"], "-p a is given twice"),
    (["-p", "a", "-p", "b", "--stdio"], "--stdio carries one tunnel: give it one profile"),
    (["-p", "a", "-p", "b", "-L", "1"], "-L/--forward goes with one profile at most"),
]


@pytest.mark.parametrize("args,want", USAGE, ids=[" ".join(a) for a, _ in USAGE])
def test_each_usage_error(home, args, want):
    r = run_cli(["--host", "gw:8080", "--access-type", "public", *args], clean_env(home))
    assert r.returncode == 2, r
    err = r.stderr.decode()
    assert err.startswith("error: ") and want in err, err
    assert err.count("\n") == 1


def test_a_bind_failure_on_the_second_forward_is_a_startup_error(gateway, spawn):
    g = gateway([public_route(DYNAMIC)])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        free = free_port()
        t = spawn(["--host", g.addr, "--access-type", "public", "-L", f"{free}:a:1",
                   "-L", f"{port}:b:2", "-L", "0:c:3"], wait_ready=False)
        assert t.wait_exit(10) == 1
        text = t.text()
        assert (f"Failed to bind to 127.0.0.1:{port} (forward 2 of 3, {port}:b:2): address already "
                "in use") in text, text
        assert "listening on" not in text and READY not in text
        # Nothing listens: the first forward's port was let go.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", free), timeout=2).close()


# --- status on demand -----------------------------------------------------------------

def test_sigusr1_reports_each_tunnel_with_exact_byte_counts(gateway, tunnel, echo):
    g = gateway([public_route(DYNAMIC)])
    t = tunnel(g, "--access-type", "public", "-L", f"0:127.0.0.1:{echo.port}", "-L", "0:nowhere:1")
    fwd = listening(t)
    with socket.create_connection(("127.0.0.1", fwd[0][1]), timeout=10) as a, \
            socket.create_connection(("127.0.0.1", fwd[0][1]), timeout=10) as b:
        for s, n in ((a, 12345), (b, 777)):
            data = random_bytes(n, seed=n)
            s.sendall(data)
            got = b""
            while len(got) < n:
                chunk = s.recv(65536)
                assert chunk
                got += chunk
            assert got == data
        mark = t.mark()
        t.proc.send_signal(signal.SIGUSR1)
        total = t.wait_for(r"Status: 2 tunnels open \(--max-connections 1024\); 2 carried since start, "
                           r"(\d+) bytes sent, (\d+) bytes received", start=mark)
        assert total.group(1) == total.group(2) == str(12345 + 777)
        lines = t.text().splitlines()[mark:]
        name = re.escape(f"127.0.0.1:{fwd[0][1]} \u2192 127.0.0.1:{echo.port}")
        for n in (12345, 777):
            rx = re.compile(r"Tunnel from 127\.0\.0\.1:\d+ \[" + name + r"\]: open, open for \d+\.\d{3} s, "
                            + f"{n} bytes sent, {n} bytes received$")
            assert any(rx.search(ln) for ln in lines), "\n".join(lines)
    # The process is still there and serving.
    assert exchange(fwd[0][1], b"still") == b"still"
    mark = t.mark()
    t.proc.send_signal(signal.SIGUSR1)
    t.wait_for(r"Status: 0 tunnels open .*; 3 carried since start, "
               + f"{12345 + 777 + 5} bytes sent, {12345 + 777 + 5} bytes received", start=mark)


def test_sigusr1_with_stdio(gateway, echo, home):
    g = gateway([public_route(echo.addr)])
    p = subprocess.Popen([binary(), "tcp-tunnel", "--host", g.addr, "--access-type", "public", "--stdio"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=clean_env(home, None))
    try:
        p.stdin.write(b"ping\n")
        p.stdin.flush()
        assert p.stdout.read(5) == b"ping\n"
        p.send_signal(signal.SIGUSR1)
        # Asked for, the report shows even where --stdio keeps quiet.
        line = p.stderr.readline()
        assert re.search(rb"Tunnel from stdio: open, open for \d+\.\d{3} s, 5 bytes sent, 5 bytes received",
                         line), line
        assert b"Status: 1 tunnel open" in p.stderr.readline()
        p.stdin.close()
        assert p.wait(20) == 0
        assert p.stderr.read() == b""
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)


# --- systemd ---------------------------------------------------------------------------

class NotifySocket:
    """A NOTIFY_SOCKET of the test's own: the datagrams sd_notify sends."""

    def __init__(self, tmp_path):
        self.path = str(tmp_path / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages = []

    def wait(self, predicate, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.messages:
                if predicate(m):
                    return m
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass
        raise AssertionError(f"no such notification within {timeout}s: {self.messages}")

    def close(self):
        self.sock.close()


def test_sd_notify_ready_status_stopping_and_watchdog(gateway, echo, home, spawn, tmp_path):
    ns = NotifySocket(tmp_path)
    try:
        g = gateway([public_route(DYNAMIC)])
        env = clean_env(home, extra={"NOTIFY_SOCKET": ns.path, "WATCHDOG_USEC": "400000"})
        t = spawn(["--host", g.addr, "--access-type", "public", "-L", f"0:127.0.0.1:{echo.port}",
                   "-L", f"0:127.0.0.1:{echo.port}"], env)
        fwd = listening(t)
        ready = ns.wait(lambda m: "READY=1" in m)
        assert "STATUS=listening on 2 addresses" in ready
        ns.wait(lambda m: m == "WATCHDOG=1", timeout=3)
        with socket.create_connection(("127.0.0.1", fwd[1][1]), timeout=10) as s:
            assert echo_once(s, b"abc") == b"abc"
            ns.wait(lambda m: m.startswith("STATUS=1 tunnel open; 1 carried since start"))
        ns.wait(lambda m: m == "STATUS=0 tunnels open; 1 carried since start, 3 bytes sent, 3 bytes received")
        t.proc.send_signal(signal.SIGTERM)
        ns.wait(lambda m: m == "STOPPING=1")
        assert t.wait_exit(10) == 0
    finally:
        ns.close()


def have_socket_activate():
    return shutil.which("systemd-socket-activate") is not None


class SocketActivate:
    """systemd-socket-activate listening on `addrs` (named `names`), which starts the
    tunnel on the first connection and hands it the sockets; its stderr (and the
    tunnel's) collected."""

    def __init__(self, addrs, args, env, names=None, notify=None):
        cmd = ["systemd-socket-activate"]
        for a in addrs:
            cmd += ["-l", a]
        if names:
            cmd.append("--fdname=" + ":".join(names))
        # It passes on only the variables it is told to.
        for k in ("OTOROSHICTL", "HOME", "XDG_CONFIG_HOME", "PATH"):
            if k in env:
                cmd += ["-E", f"{k}={env[k]}"]
        if notify:
            cmd += ["-E", f"NOTIFY_SOCKET={notify}"]
        cmd += [binary(), "tcp-tunnel", *map(str, args)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=env)
        self.lines, self.cond = [], threading.Condition()
        self.reader = threading.Thread(target=self._collect, daemon=True)
        self.reader.start()
        wait_until(lambda: sum("Listening on" in ln for ln in self.snapshot()) == len(addrs)
                   or self.proc.poll() is not None, 10, message="the sockets")
        assert self.proc.poll() is None, self.text()

    def _collect(self):
        for raw in iter(self.proc.stderr.readline, b""):
            with self.cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def snapshot(self):
        with self.cond:
            return list(self.lines)

    def text(self):
        return "\n".join(self.snapshot())

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(10)
        self.reader.join(2)
        return rc

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.reader.join(2)


@pytest.mark.skipif(not have_socket_activate(), reason="needs systemd-socket-activate (systemd)")
def test_socket_activation_two_sockets_two_forwards(gateway, service, home, tmp_path):
    a = service(EchoServer, greeting=b"db:")
    b = service(EchoServer, greeting=b"cache:")
    g = gateway([route("public", a.addr, host="127.0.0.1"), route("public", b.addr, host="localhost")])
    ini = write_ini(tmp_path / "t.ini", f"""
[db]
host = 127.0.0.1:{g.port}
access-type = public
local-port = 1

[cache]
host = localhost:{g.port}
access-type = public
local-port = 2
""")
    ns = NotifySocket(tmp_path)
    p1, p2 = free_port(), free_port()
    sa = SocketActivate([f"127.0.0.1:{p1}", f"127.0.0.1:{p2}"],
                        ["--config", ini, "-p", "db", "-p", "cache"], clean_env(home),
                        names=["cache", "db"], notify=ns.path)
    try:
        # The first connection starts the tunnel, which takes both sockets: the
        # one named db serves the profile db, whatever the order.
        assert exchange(p2, b"hello") == b"db:hello"
        assert exchange(p1, b"hi") == b"cache:hi"
        ns.wait(lambda m: "READY=1" in m)
        text = sa.text()
        assert f"listening on 127.0.0.1:{p2} \u2192 (defined in otoroshi target) via Otoroshi " \
               f"(127.0.0.1:{g.port}) [db]" in text, text
        assert f"listening on 127.0.0.1:{p1} \u2192 (defined in otoroshi target) via Otoroshi " \
               f"(localhost:{g.port}) [cache]" in text, text
        assert sa.stop() == 0
        ns.wait(lambda m: m == "STOPPING=1")
    finally:
        sa.close()
        ns.close()


@pytest.mark.skipif(not have_socket_activate(), reason="needs systemd-socket-activate (systemd)")
def test_socket_activation_matches_forwards_by_address(gateway, echo, home, tmp_path):
    g = gateway([public_route(DYNAMIC)])
    p1, p2, spare = free_port(), free_port(), free_port()
    sa = SocketActivate([f"127.0.0.1:{p2}", f"127.0.0.1:{spare}", f"127.0.0.1:{p1}"],
                        ["--host", g.addr, "--access-type", "public",
                         "-L", f"{p1}:127.0.0.1:{echo.port}", "-L", f"{p2}:localhost:{echo.port}"],
                        clean_env(home))
    try:
        assert exchange(p1, b"one") == b"one"
        assert exchange(p2, b"two") == b"two"
        targets = [r["target"] for r in g.wait_records("request", 2)]
        assert targets == [f"127.0.0.1:{echo.port}", f"localhost:{echo.port}"]
        text = sa.text()
        assert re.search(rf"systemd passed the socket 127\.0\.0\.1:{spare} \((unnamed|unknown)\) that no "
                         "forward listens on: closing it", text), text
        # A socket that serves no forward is closed, not left to queue.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", spare), timeout=2).close()
        assert sa.stop() == 0
    finally:
        sa.close()


def test_units_install_and_verify(tmp_path):
    build = Path(os.environ.get("OTOROSHICTL_BUILD_DIR") or Path(binary()).resolve().parent)
    if not (build / "build.ninja").is_file():
        pytest.skip(f"{build} is not a meson build directory (set OTOROSHICTL_BUILD_DIR)")
    dest = tmp_path / "dest"
    r = subprocess.run(["meson", "install", "-C", str(build), "--destdir", str(dest), "--no-rebuild",
                        "--quiet"], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode() + r.stdout.decode()
    units = {p.name: p for p in dest.rglob("otoroshictl-tunnel@*")}
    assert set(units) == {"otoroshictl-tunnel@.service", "otoroshictl-tunnel@.socket"}, units
    assert all(p.parent.parts[-2:] == ("systemd", "user") for p in units.values())
    service_text = units["otoroshictl-tunnel@.service"].read_text()
    exec_line = next(ln for ln in service_text.splitlines() if ln.startswith("ExecStart="))
    assert exec_line.endswith("/otoroshictl tcp-tunnel -p %i") and "@" not in exec_line.split("=", 1)[1]
    assert "Type=notify" in service_text
    assert "FileDescriptorName=%i" in units["otoroshictl-tunnel@.socket"].read_text()
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # An instance, with the drop-in the documentation shows; verify checks that
    # ExecStart's program exists, so the copy points to the installed one.
    unitdir = tmp_path / "units"
    unitdir.mkdir()
    installed_bin = exec_line.split("=", 1)[1].split()[0]
    staged_bin = dest / installed_bin.lstrip("/")
    assert staged_bin.is_file()
    for name, p in units.items():
        (unitdir / name).write_text(p.read_text().replace(installed_bin, str(staged_bin)))
    (unitdir / "otoroshictl-tunnel@db.socket.d").mkdir()
    (unitdir / "otoroshictl-tunnel@db.socket.d" / "listen.conf").write_text(
        "[Socket]\nListenStream=127.0.0.1:15432\n")
    r = subprocess.run([analyze, "verify", "--man=no", str(unitdir / "otoroshictl-tunnel@db.socket"),
                        str(unitdir / "otoroshictl-tunnel@db.service")],
                       capture_output=True, timeout=60, env={**os.environ, "SYSTEMD_UNIT_PATH": f"{unitdir}:"})
    out = (r.stdout + r.stderr).decode()
    if r.returncode != 0 and ("Failed to initialize manager" in out or "Failed to setup" in out):
        pytest.skip(f"systemd-analyze verify cannot run here: {out.strip()[:300]}")
    assert r.returncode == 0, out
    assert "otoroshictl-tunnel" not in out, out


def test_a_secret_from_a_fifo_serves_every_profile(gateway, service, spawn, tmp_path):
    # The secret file is read once, however many profiles take it.
    a = service(EchoServer, greeting=b"A:")
    b = service(EchoServer, greeting=b"B:")
    g = gateway([route("bearer", a.addr, host="127.0.0.1", tokens=["fifo-tok"]),
                 route("bearer", b.addr, host="localhost", tokens=["fifo-tok"])])
    ini = write_ini(tmp_path / "t.ini", f"[a]\nhost = 127.0.0.1:{g.port}\naccess-type = bearer\nlocal-port = 0\n"
                                        f"[b]\nhost = localhost:{g.port}\naccess-type = bearer\nlocal-port = 0\n")
    fifo = tmp_path / "token.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(b"fifo-tok\n"), daemon=True)
    writer.start()
    t = spawn(["--config", ini, "-p", "a", "-p", "b", "--bearer-token-file", fifo])
    fwd = listening(t)
    assert exchange(fwd[0][1], b"1") == b"A:1"
    assert exchange(fwd[1][1], b"2") == b"B:2"
    writer.join(5)


def test_address_flags_and_stdio_replace_a_profiles_forward_lines(gateway, spawn, tmp_path, echo, home):
    g = gateway([public_route(DYNAMIC)])
    ini = write_ini(tmp_path / "t.ini", f"[p]\nhost = {g.addr}\naccess-type = public\n"
                                        f"forward = 0:127.0.0.1:{echo.port}\nforward = 0:127.0.0.1:1\n")
    t = spawn(["--config", ini, "-p", "p", "--local-port", "0", "--remote-host", "127.0.0.1",
               "--remote-port", echo.port])
    fwd = listening(t)
    assert len(fwd) == 1 and fwd[0][2] == f"127.0.0.1:{echo.port}"
    assert exchange(fwd[0][1], b"one forward") == b"one forward"
    r = subprocess.run([binary(), "tcp-tunnel", "--config", str(ini), "-p", "p", "--stdio", "--remote-host",
                        "127.0.0.1", "--remote-port", str(echo.port)], input=b"over stdio",
                       capture_output=True, timeout=20, env=clean_env(home, None))
    assert r.returncode == 0 and r.stdout == b"over stdio", r


def test_tunnel_numbers_are_unique_across_forwards(gateway, tunnel, echo):
    g = gateway([public_route(DYNAMIC)])
    t = tunnel(g, "--access-type", "public", "-L", f"0:127.0.0.1:{echo.port}", "-L", f"0:127.0.0.1:{echo.port}",
               level="debug")
    fwd = listening(t)
    for _, port, _ in fwd + fwd:
        assert exchange(port, b"n") == b"n"
    numbers = re.findall(r"tunnel (\d+): connected to Otoroshi", t.text())
    assert sorted(map(int, numbers)) == [1, 2, 3, 4], numbers


@pytest.mark.skipif(bool(os.environ.get("OTOROSHICTL_VALGRIND_LOGS")),
                    reason="valgrind catches every signal itself, so /proc cannot tell when the tunnel took it")
def test_sigusr1_during_startup_does_not_end_the_process(gateway, home):
    # A report asked for before the listeners are up is not the signal's
    # default (the end of the process).
    g = gateway([public_route(DYNAMIC)])
    p = subprocess.Popen([binary(), "tcp-tunnel", "--host", g.addr, "--access-type", "public", "-L", "0:a:1"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env=clean_env(home))
    try:
        # Once the process has taken SIGUSR1 over (ignored or caught; before
        # main() runs, nothing can), no number of them ends it.
        def taken():
            try:
                fields = dict(ln.split(":\t", 1) for ln in Path(f"/proc/{p.pid}/status").read_text().splitlines()
                              if ":\t" in ln)
            except OSError:
                return False
            bit = 1 << (signal.SIGUSR1 - 1)
            return bool((int(fields.get("SigIgn", "0"), 16) | int(fields.get("SigCgt", "0"), 16)) & bit)
        wait_until(taken, 10, interval=0.001, message="SIGUSR1 taken over")
        for _ in range(20):
            p.send_signal(signal.SIGUSR1)
        line = p.stderr.readline()
        while b"TCP tunnel ready" not in line:
            assert line, "the process ended"
            line = p.stderr.readline()
        p.send_signal(signal.SIGUSR1)
        assert b"Status: 0 tunnels open" in p.stderr.readline()
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
