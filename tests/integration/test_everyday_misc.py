"""IPv6 on loopback, close summaries, the non-loopback warning, and shell completion."""

import re
import shutil
import socket
import subprocess
import time

import pytest

from helpers import (
    Transfer, binary, echo_once, expect_closed, public_route, route, run_cli,
)
from hops import env_for, stdio  # noqa: F401,F811  (a fixture)
from services import EchoServer, SourceServer, free_port, random_bytes, refused_port, sha256

PUBLIC = ["--access-type", "public"]
SUMMARY_RE = re.compile(
    r"^\[INFO  otoroshictl::tunnels::tcp\] Tunnel from (?P<peer>\S+) closed after "
    r"(?P<secs>\d+\.\d{3}) s: (?P<sent>\d+) bytes sent, (?P<received>\d+) bytes received "
    r"\((?P<reason>[^,()]+)(?:, Close (?P<close>\d+)|, HTTP (?P<http>\d+))?"
    r"(?:, after (?P<attempts>\d+) attempts)?\)$")
WARN_EXPOSED = r"^\[WARN  otoroshictl::tunnels::tcp\] listening on {where}: anyone who can reach"


def ipv6_available():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not ipv6_available(), reason="no ::1 on this machine")


def summaries(t, peer=None):
    out = []
    with t.cond:
        lines = list(t.lines)
    for line in lines:
        m = SUMMARY_RE.match(line)
        if m and (peer is None or m.group("peer") == peer):
            out.append(m)
    return out


def summary_for(t, peer, timeout=5):
    t.wait_for(r"Tunnel from " + re.escape(peer) + " closed after", timeout)
    found = summaries(t, peer)
    assert len(found) == 1, f"want one summary for {peer}:\n{t.text()}"
    return found[0]


def peer_of(sock):
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- IPv6 -----------------------------------------------------------------------------------

@needs_ipv6
def test_listen_on_ipv6_loopback(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC, "--local-host", "::1")
    assert t.listen.group("addr") == "[::1]"
    with socket.create_connection(("::1", t.port), timeout=5) as s:
        peer = peer_of(s)
        data = random_bytes(1 << 20, 61)
        tr = Transfer(s, data).wait(30)
        assert tr.digest == sha256(data)
    m = summary_for(t, peer)
    assert peer.startswith("[::1]:")
    assert (m.group("sent"), m.group("received")) == (str(len(data)), str(len(data)))
    assert "[WARN" not in t.text()


@needs_ipv6
def test_listen_on_every_ipv6_address_warns(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC, "--local-host", "::")
    assert t.listen.group("addr") == "[::]"
    t.wait_for(WARN_EXPOSED.format(where=re.escape(f"[::]:{t.port}")), 2)
    with socket.create_connection(("::1", t.port), timeout=5) as s:
        assert echo_once(s, b"over [::1]") == b"over [::1]"


@needs_ipv6
def test_gateway_on_ipv6_loopback_with_a_transfer(gateway, tunnel, stdio):
    echo6 = EchoServer(host="::1")
    try:
        g = gateway([public_route(echo6.addr, host="[::1]")], listen="[::1]:0")
        t = tunnel(f"[::1]:{g.port}", *PUBLIC, "--local-host", "::1")
        data = random_bytes(2 << 20, 62)
        with socket.create_connection(("::1", t.port), timeout=5) as s:
            tr = Transfer(s, data, keep=False).wait(30)
        assert tr.digest == sha256(data)
        assert g.requests()[0]["headers"][0] == ["Host", f"[::1]:{g.port}"]
        assert g.requests()[0]["peer"][0] == "::1"
        # And --stdio to the same gateway.
        r = stdio(["--host", f"[::1]:{g.port}", *PUBLIC], data=data)
        assert r.wait(30) == 0, r.err_text()
        assert r.digest == sha256(data)
    finally:
        echo6.close()


def v6_only_name():
    for name in ("localhost", "ip6-localhost", "ip6-loopback"):
        try:
            infos = socket.getaddrinfo(name, 1, socket.AF_INET6, socket.SOCK_STREAM)
        except OSError:
            continue
        if any(info[4][0] == "::1" for info in infos):
            return name
    return None


@needs_ipv6
@pytest.mark.skipif(v6_only_name() is None, reason="no name resolves to ::1 here (/etc/hosts)")
def test_gateway_name_with_an_ipv6_address(gateway, tunnel):
    name = v6_only_name()
    echo6 = EchoServer(host="::1")
    try:
        g = gateway([public_route(echo6.addr, host=name)], listen="[::1]:0")
        t = tunnel(f"{name}:{g.port}", *PUBLIC)
        with t.connect() as s:
            assert echo_once(s, b"by name") == b"by name"
    finally:
        echo6.close()


# --- the non-loopback warning ---------------------------------------------------------------

def test_non_loopback_listener_warns_at_startup(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC, "--local-host", "0.0.0.0")
    line = t.wait_for(WARN_EXPOSED.format(where=re.escape(f"0.0.0.0:{t.port}")), 2).string
    assert g.addr in line and "credential" in line, line
    # At startup: before the ready line.
    text = t.text()
    assert text.index(line) < text.index("TCP tunnel ready")
    with t.connect() as s:
        assert echo_once(s) == b"hello through the tunnel\n"


@pytest.mark.parametrize("local", ["127.0.0.1", "localhost",
                                   pytest.param("::1", marks=needs_ipv6),
                                   pytest.param("[::1]", marks=needs_ipv6)])
def test_loopback_listener_does_not_warn(gateway, tunnel, echo, local):
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC, "--local-host", local)
    assert "[WARN" not in t.text(), t.text()


# --- close summaries ----------------------------------------------------------------------------

def test_summary_local_close_exact_counts_and_duration(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC)
    data = random_bytes(1234567, 63)
    t0 = time.monotonic()
    with t.connect() as s:
        peer = peer_of(s)
        assert echo_once(s, b"warm up") == b"warm up"
        time.sleep(1.1)  # a duration worth measuring
        tr = Transfer(s, data, keep=False).wait(30)
    m = summary_for(t, peer)
    wall = time.monotonic() - t0
    assert tr.digest == sha256(data)
    assert m.group("sent") == m.group("received") == str(len(data) + 7)
    assert m.group("reason") == "local close"
    assert m.group("close") == "1000"
    assert 1.1 <= float(m.group("secs")) <= wall + 0.05, (m.group("secs"), wall)


def test_summary_gateway_close(gateway, tunnel, service):
    src = service(SourceServer, 2345678, seed=64)
    g = gateway([public_route(src.addr)])
    t = tunnel(g, *PUBLIC)
    with t.connect() as s:
        peer = peer_of(s)
        tr = Transfer(s, b"", half_close=False, keep=False).wait(30)
    assert tr.digest == src.sha256
    m = summary_for(t, peer)
    assert (m.group("sent"), m.group("received")) == ("0", "2345678")
    assert m.group("reason") == "gateway closed" and m.group("close") == "1000"


def test_summary_refusal(gateway, tunnel, echo):
    g = gateway([route("apikey", echo.addr, apikeys=["id:right"], revoked=["gone"])])
    t = tunnel(g, "--apikey-client-id", "id", "--apikey-client-secret", "wrong")
    with t.connect() as s:
        peer = peer_of(s)
        s.sendall(b"never carried")
        expect_closed(s, 5)
    m = summary_for(t, peer)
    assert m.group("reason") == "refused" and m.group("http") == "401"
    assert (m.group("sent"), m.group("received")) == ("0", "0")
    t2 = tunnel(g, "--apikey-client-id", "gone", "--apikey-client-secret", "x")
    g.set_routes([route("apikey", echo.addr, apikeys=["gone:x"], revoked=["gone"])])
    with t2.connect() as s:
        peer = peer_of(s)
        expect_closed(s, 5)
    m = summary_for(t2, peer)
    assert m.group("reason") == "refused" and m.group("http") == "401"


def test_summary_close_code_from_the_gateway(gateway, tunnel):
    g = gateway([public_route(f"127.0.0.1:{free_port()}")])  # nothing listens there
    t = tunnel(g, *PUBLIC)
    with t.connect() as s:
        peer = peer_of(s)
        expect_closed(s, 10)
    m = summary_for(t, peer)
    assert m.group("close") == "1011", m.group(0)
    assert m.group("reason") == "gateway could not reach the remote service"


def test_summary_gateway_connection_lost(gateway, tunnel, service):
    src = service(SourceServer, 500000, seed=65)
    g = gateway([public_route(src.addr, abort_after_bytes=100000, abort_how="fin")])
    t = tunnel(g, *PUBLIC)
    with t.connect() as s:
        peer = peer_of(s)
        tr = Transfer(s, b"", half_close=False, keep=False).wait(15)
    assert tr.nreceived == 100000
    m = summary_for(t, peer)
    assert (m.group("sent"), m.group("received")) == ("0", "100000")
    assert m.group("reason") == "gateway connection lost" and m.group("close") is None


def test_summary_gateway_unreachable(tunnel):
    held, port = refused_port()  # refused for the 10 s of retries, taken by nothing else
    t = tunnel(f"127.0.0.1:{port}", *PUBLIC)
    with held, t.connect() as s:
        peer = peer_of(s)
        expect_closed(s, 12)  # refused is tried again for the handshake's 10 s
    m = summary_for(t, peer)
    assert m.group("reason") == "gateway unreachable" and int(m.group("attempts")) >= 3


def test_one_summary_per_tunnel(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, *PUBLIC, "--linger", "0.2")
    peers = []
    for i in range(6):
        with t.connect() as s:
            peers.append(peer_of(s))
            n = 1000 * (i + 1) + i
            tr = Transfer(s, b"z" * n).wait(10)
            assert tr.nreceived == n
    for i, peer in enumerate(peers):
        m = summary_for(t, peer)
        assert m.group("sent") == m.group("received") == str(1000 * (i + 1) + i)
    assert len(summaries(t)) == 6


# --- shell completion -------------------------------------------------------------------------------

def completion_script(shell):
    r = subprocess.run([binary(), "completions", shell], capture_output=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert r.stderr == b""
    assert b"otoroshictl" in r.stdout
    return r.stdout.decode()


@pytest.fixture
def completion_env(tmp_path):
    """An environment whose PATH has `otoroshictl` and whose HOME has two profiles."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "otoroshictl").symlink_to(binary())
    home = tmp_path / "chome"
    ini = home / ".config" / "otoroshictl" / "tunnels.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text("[db-prod]\nhost = a:1\n\n[redis-cache]\nhost = b:2\n")
    ini.chmod(0o600)
    env = env_for(home, None)
    env.pop("XDG_CONFIG_HOME")
    env["PATH"] = f"{bindir}:/usr/bin:/bin"
    return env


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_parse(shell, tmp_path):
    script = tmp_path / f"otoroshictl.{shell}"
    script.write_text(completion_script(shell))
    exe = shutil.which(shell)
    if exe is None:
        pytest.skip(f"{shell} is not installed")
    r = subprocess.run([exe, "-n", str(script)], capture_output=True, timeout=20)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stderr == b""


def test_completions_for_an_unknown_shell_exit_2():
    for args in (["completions", "nope"], ["completions"]):
        r = subprocess.run([binary(), *args], capture_output=True, timeout=10)
        assert r.returncode == 2, r
        assert b"bash, zsh or fish" in r.stderr
        assert r.stdout == b""


BASH_DRIVER = r'''
source "$1"; shift
complete -p otoroshictl >/dev/null || { echo "not registered" >&2; exit 3; }
COMP_WORDS=("$@")
COMP_CWORD=$(( $# - 1 ))
COMP_LINE="$*"
COMP_POINT=${#COMP_LINE}
COMPREPLY=()
_otoroshictl
printf '%s\n' "${COMPREPLY[@]}"
'''

BASH_CASES = [
    pytest.param([""], {"tcp-tunnel", "tt", "help", "completions"}, "subset", id="subcommands"),
    pytest.param(["t"], {"tcp-tunnel", "tt"}, "exact", id="subcommand-prefix"),
    pytest.param(["tcp-tunnel", "--re"], {"--remote-host", "--remote-port"}, "exact", id="options"),
    pytest.param(["tt", "--host", "gw:1", "--"],
                 {"--stdio", "--profile", "--config", "--list-profiles", "--keepalive", "--proxy",
                  "--apikey-client-secret-file", "--bearer-token-file", "--session-token-file",
                  "--tls", "--access-type"}, "subset", id="new-options"),
    pytest.param(["tcp-tunnel", "--access-type", ""], {"apikey", "bearer", "jwt", "session", "public"},
                 "exact", id="access-types"),
    pytest.param(["tcp-tunnel", "--access-type", "p"], {"public"}, "exact", id="access-type-prefix"),
    pytest.param(["tcp-tunnel", "-p", ""], {"db-prod", "redis-cache"}, "exact", id="profiles"),
    pytest.param(["tt", "--profile", "r"], {"redis-cache"}, "exact", id="profile-prefix"),
    pytest.param(["completions", ""], {"bash", "zsh", "fish"}, "exact", id="shells"),
    pytest.param(["tcp-tunnel", "--host", ""], set(), "exact", id="no-guess-for-values"),
]


@pytest.mark.parametrize("words,want,how", BASH_CASES)
def test_bash_completion(completion_env, tmp_path, words, want, how):
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    script = tmp_path / "otoroshictl.bash"
    script.write_text(completion_script("bash"))
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", BASH_DRIVER, "driver", str(script),
                        "otoroshictl", *words], capture_output=True, env=completion_env, timeout=20)
    assert r.returncode == 0, r.stderr.decode()
    got = {w for w in r.stdout.decode().split("\n") if w}
    if how == "exact":
        assert got == want
    else:
        assert want <= got, want - got


def test_bash_completion_of_file_options(completion_env, tmp_path):
    script = tmp_path / "otoroshictl.bash"
    script.write_text(completion_script("bash"))
    (tmp_path / "my-tunnels.ini").write_text("")
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", BASH_DRIVER, "driver", str(script),
                        "otoroshictl", "tt", "--config", str(tmp_path / "my-t")],
                       capture_output=True, env=completion_env, timeout=20)
    assert r.stdout.decode().split() == [str(tmp_path / "my-tunnels.ini")], r.stderr


FISH_CASES = [
    pytest.param("otoroshictl ", {"tcp-tunnel", "tt", "help", "completions"}, id="subcommands"),
    pytest.param("otoroshictl tcp-tunnel --access-type ", {"apikey", "bearer", "jwt", "session", "public"},
                 id="access-types"),
    pytest.param("otoroshictl tt -p ", {"db-prod", "redis-cache"}, id="profiles"),
    pytest.param("otoroshictl tt --rem", {"--remote-host", "--remote-port"}, id="options"),
]


@pytest.mark.parametrize("line,want", FISH_CASES)
def test_fish_completion(completion_env, tmp_path, line, want):
    if shutil.which("fish") is None:
        pytest.skip("fish is not installed")
    script = tmp_path / "otoroshictl.fish"
    script.write_text(completion_script("fish"))
    r = subprocess.run(["fish", "--no-config", "-c", f"source {script}; complete -C '{line}'"],
                       capture_output=True, env=completion_env, timeout=20)
    assert r.returncode == 0, r.stderr.decode()
    got = {row.split("\t")[0] for row in r.stdout.decode().splitlines() if row}
    assert got == want


def test_zsh_completion_lists_profiles_and_access_types(completion_env, tmp_path):
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed")
    text = completion_script("zsh")
    assert text.startswith("#compdef otoroshictl")
    assert "(apikey bearer jwt session public)" in text
    script = tmp_path / "_otoroshictl"
    # Everything but the last line, which starts a completion (needs compinit).
    body = text.rstrip("\n").rsplit("\n", 1)
    assert body[1] == '_otoroshictl "$@"'
    script.write_text(body[0] + "\n")
    r = subprocess.run(["zsh", "-f", "-c",
                        f'_describe() {{ print -l -- "${{(@P)2}}"; }}; source {script}; '
                        "_otoroshictl_profiles"],
                       capture_output=True, env=completion_env, timeout=20)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().split() == ["db-prod", "redis-cache"]


def test_list_profiles_feeds_completion_without_stderr_noise(completion_env):
    # The completion scripts call `otoroshictl tcp-tunnel --list-profiles`; with no
    # profile file it must print nothing on stdout (its error goes to stderr).
    env = dict(completion_env, HOME="/nonexistent-home")
    r = run_cli(["--list-profiles"], env)
    assert r.returncode == 2 and r.stdout == b""
