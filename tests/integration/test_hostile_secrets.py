"""No secret in standard error or standard output, at any log level (error to trace),
with every access type and with proxy credentials; none on the command line
(/proc/PID/cmdline) when it came from the environment or a file; none in the error
messages of refused, broken or mistyped runs.

Each run goes through what logs the most: a good exchange, a refusal (the route
changes its mind), a broken answer (a hostile gateway whose 101 carries a wrong
Sec-WebSocket-Accept, then an invalid frame), and the graceful stop (SIGTERM).
"""

import base64
import os
import signal
import socket
from urllib.parse import quote

import pytest

import sanitizer  # noqa: F401  (installs the sanitizer-report check)
from helpers import TunnelProcess, echo_once, expect_closed, public_route, route, run_cli
from hops import env_for, tinyproxy  # noqa: F401  (tinyproxy is a fixture)
from hostile import HostileServer, accept_for, frame, response_101, wait_listening

LEVELS = ["error", "warn", "info", "debug", "trace"]
SOURCES = ["flag", "env", "file"]


def b64(text):
    return base64.b64encode(text.encode()).decode()


# access type -> (route fields given the secret, how the secret is given)
ACCESS = {
    "apikey": dict(flag="--apikey-client-secret", env="OTOROSHI_APIKEY_CLIENT_SECRET",
                   file="--apikey-client-secret-file", extra=["--apikey-client-id", "cid-shown"]),
    "bearer": dict(flag="--bearer-token", env="OTOROSHI_BEARER_TOKEN", file="--bearer-token-file",
                   extra=[]),
    "jwt": dict(flag="--bearer-token", env="OTOROSHI_BEARER_TOKEN", file="--bearer-token-file",
                extra=[]),
    "session": dict(flag="--session-token", env="OTOROSHI_SESSION_TOKEN", file="--session-token-file",
                    extra=[]),
}


def secret_for(access, level, source):
    # Distinct per run, with characters that get encoded (session: percent-encoding).
    return f"Sx9-{access}-{level}-{source}-SECRET/+=&%"


def forms(access, secret):
    """Every spelling of the secret that must never show: raw, percent-encoded (once
    and twice), the Basic credential, its pieces."""
    out = {secret, quote(secret, safe=""), quote(quote(secret, safe=""), safe=""),
           secret.split("/")[0]}
    if access == "apikey":
        out.add(b64(f"cid-shown:{secret}"))
    return out


def route_for(access, secret, target):
    if access == "apikey":
        return route("apikey", target, apikeys=[f"cid-shown:{secret}"])
    if access == "session":
        return route("session", target, tokens=[secret])
    return route("bearer", target, tokens=[secret])


def refusing_route(access, target):
    if access == "apikey":
        return route("apikey", target, apikeys=["cid-shown:another"])
    return route("session" if access == "session" else "bearer", target, tokens=["another"])


def start(args, env):
    args = [str(a) for a in args]
    # A short linger: each run ends a tunnel with a half-close, and the
    # linger is not what is tested here.
    return TunnelProcess(args + ["--local-port", "0", "--linger", "0.2"], env, wait_ready=False)


def exercise(t, g, access, secret, target):
    t.port = wait_listening(t)
    g.set_routes([route_for(access, secret, target)])
    with t.connect() as s:
        assert echo_once(s, b"with the secret") == b"with the secret"
        s.shutdown(socket.SHUT_WR)
        expect_closed(s, 5)
    g.set_routes([refusing_route(access, target)])
    with t.connect() as s:
        expect_closed(s, 5)
    t.wait_for(r"^\[ERROR .*HTTP (303|40[01])", 5)


def check_clean(t, access, secret, cmdline_too):
    text = t.text() + "\n" + "\n".join(t.stdout_lines)
    for f in forms(access, secret):
        assert f not in text, f"{f!r} in the output:\n" + "\n".join(
            line for line in text.splitlines() if f in line)
    if cmdline_too:
        cmdline = open(f"/proc/{t.pid}/cmdline", "rb").read()
        for f in forms(access, secret):
            assert f.encode() not in cmdline, f"{f!r} in /proc/{t.pid}/cmdline"


@pytest.mark.parametrize("access", list(ACCESS))
def test_no_secret_at_any_level(gateway, echo, home, tmp_path, access):
    g = gateway([public_route(echo.addr)])
    spec = ACCESS[access]
    shift = list(ACCESS).index(access)
    for i, level in enumerate(LEVELS):
        # Every level once, the sources in turn: over the four access types each
        # (access, source) pair comes up at least once.
        for source in [SOURCES[(i + shift) % len(SOURCES)]]:
            secret = secret_for(access, level, source)
            args = ["--host", g.addr, "--access-type", access, *spec["extra"]]
            extra_env = {}
            if source == "flag":
                args += [spec["flag"], secret]
            elif source == "env":
                extra_env[spec["env"]] = secret
            else:
                path = tmp_path / f"{access}-{level}.secret"
                path.write_text(secret + "\n")
                os.chmod(path, 0o600)
                args += [spec["file"], path]
            t = start(args, env_for(home, level, extra_env))
            try:
                exercise(t, g, access, secret, echo.addr)
                if source != "flag":
                    check_clean(t, access, secret, cmdline_too=True)
                t.stop(signal.SIGTERM)
                assert t.wait_exit(5) == 0
                check_clean(t, access, secret, cmdline_too=False)
                if level == "trace":
                    assert "[TRACE" in t.text()
                if level == "error":
                    assert all(line.startswith("[ERROR") for line in t.lines), t.text()
            finally:
                t.close()


def test_no_secret_from_a_hostile_gateway_run(hostile_server, home):
    """Broken answers (wrong accept, an invalid frame, a reset) at trace level with a
    credential of each kind: the error lines name the problem, never the secret."""
    h = hostile_server
    answers = [
        lambda c: c.send(response_101(accept=accept_for("not-the-key=="))),
        lambda c: c.send(response_101(c.key) + frame(0x3, b"")),
        lambda c: c.send(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 11\r\n\r\nunexpected!"),
        lambda c: c.reset(),
    ]
    for access, spec in ACCESS.items():
        secret = secret_for(access, "trace", "env")
        t = start(["--host", h.addr, "--access-type", access, *spec["extra"]],
                  env_for(home, "trace", {spec["env"]: secret}))
        try:
            t.port = wait_listening(t)
            for answer in answers:
                h.set_script(answer)
                with t.connect() as s:
                    expect_closed(s, 5)
            t.wait_for(r"HTTP 401", 5)
            check_clean(t, access, secret, cmdline_too=True)
            t.stop(signal.SIGTERM)
            t.wait_exit(5)
            check_clean(t, access, secret, cmdline_too=False)
        finally:
            t.close()


@pytest.fixture
def hostile_server():
    h = HostileServer()
    yield h
    h.close()


def test_no_proxy_credentials_at_any_level(gateway, echo, home, tinyproxy):  # noqa: F811
    password = "Pr0xy.pw-secret"  # tinyproxy takes [-a-z0-9._] in BasicAuth
    proxy = tinyproxy(basic_auth=("puser", password))
    g = gateway([public_route(echo.addr)])
    url = f"http://puser:{quote(password, safe='')}@127.0.0.1:{proxy.port}"
    wrong = f"http://puser:Wr0ng-pw-secret@127.0.0.1:{proxy.port}"
    secret = "Ak7-apikey-SECRET"
    leaks = {password, quote(password, safe=""), b64(f"puser:{password}"), "Wr0ng-pw-secret",
             b64("puser:Wr0ng-pw-secret"), secret, b64(f"cid-shown:{secret}")}
    g.set_routes([route("apikey", echo.addr, apikeys=[f"cid-shown:{secret}"])])
    for i, level in enumerate(LEVELS):
        for how, purl in (("env", url), ("flag", url), ("env", wrong)):
            env = {"OTOROSHI_APIKEY_CLIENT_SECRET": secret}
            args = ["--host", g.addr, "--apikey-client-id", "cid-shown"]
            if how == "env":
                env["HTTP_PROXY"] = purl
            else:
                args += ["--proxy", purl]
            t = start(args, env_for(home, level, env))
            try:
                t.port = wait_listening(t)
                with t.connect() as s:
                    if purl == url:
                        assert echo_once(s, b"via the proxy") == b"via the proxy"
                    else:
                        expect_closed(s, 10)
                if purl == wrong:
                    t.wait_for(r"^\[ERROR .*proxy", 5)
                cmdline = open(f"/proc/{t.pid}/cmdline", "rb").read()
                if how == "env":
                    assert not any(x.encode() in cmdline for x in leaks), cmdline
                t.stop(signal.SIGTERM)
                assert t.wait_exit(5) == 0
                text = t.text() + "\n".join(t.stdout_lines)
                for x in leaks:
                    assert x not in text, f"{x!r} at level {level} ({how}):\n{text}"
            finally:
                t.close()


# --- usage errors -----------------------------------------------------------------------

USAGE_CASES = [
    pytest.param(["--access-type", "bogus", "--apikey-client-secret", "{s}"], id="bad-access-type"),
    pytest.param(["--apikey-client-secret", "{s}", "--bearer-token", "{s}"], id="no-host"),
    pytest.param(["--host", "gw:notaport", "--bearer-token", "{s}", "--access-type", "bearer"],
                 id="bad-host"),
    pytest.param(["--host", "gw:1", "--session-token", "{s}", "--remote-port", "0"],
                 id="bad-remote-port"),
    pytest.param(["--host", "gw:1", "--apikey-client-secret", "{s}"], id="apikey-without-id"),
    pytest.param(["--host", "gw:1", "--bearer-token", "{s}", "--unknown"], id="unknown-option"),
    pytest.param(["--host", "gw:1", "--bearer-token", "{s}", "--tls", "--insecure", "--ca-cert", "x"],
                 id="insecure-with-ca"),
    pytest.param(["--host", "gw:1", "--proxy", "ftp://u:{s}@p:1", "--access-type", "public"],
                 id="proxy-scheme"),
    pytest.param(["--host", "gw:1", "--proxy", "http://u:{s}@p:99999", "--access-type", "public"],
                 id="proxy-port"),
    pytest.param(["--host", "gw:1", "--proxy", "http://u:{s}@", "--access-type", "public"],
                 id="proxy-no-host"),
]


@pytest.mark.parametrize("args", USAGE_CASES)
def test_usage_errors_do_not_repeat_secrets(home, args):
    secret = "Uq4-usage-SECRET"
    r = run_cli([a.format(s=secret) for a in args], env_for(home, "trace"))
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.startswith(b"error: "), r.stderr
    assert secret.encode() not in r.stderr + r.stdout, r.stderr


def test_profile_errors_do_not_repeat_secrets(home, tmp_path):
    secret = "Pf8-profile-SECRET"
    cases = [
        f"[p]\nhost = gw:1\napikey-client-secret = {secret}\napikey-client-secret = again\n",
        f"[p]\nhost = gw:1\nbearer-token = {secret}\naccess-type = nonsense\n",
        f"[p]\nhost = gw:1\nsession-token = {secret}\nno-such-key = {secret}\n",
        f"[p]\nhost = gw:1\nproxy = ftp://u:{secret}@p:1\naccess-type = public\n",
    ]
    for i, text in enumerate(cases):
        ini = tmp_path / f"p{i}.ini"
        ini.write_text(text)
        os.chmod(ini, 0o600)
        r = run_cli(["--config", ini, "-p", "p"], env_for(home, "trace"))
        out = r.stderr + r.stdout
        assert r.returncode == 2, (i, r.returncode, r.stderr)
        assert secret.encode() not in out, (i, out)
