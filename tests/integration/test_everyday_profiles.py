"""Profiles (INI files read with inih), secrets from the environment and from files,
their precedence (flag, then environment, then profile), and that no secret reaches
the command line or the logs."""

import base64
import os
import re
import signal
import socket
import subprocess
from urllib.parse import quote

import pytest

from helpers import Transfer, TunnelProcess, echo_once, expect_closed, public_route, route, run_cli
from hops import env_for
from pki import Pki
from services import EchoServer

PUBLIC = ["--access-type", "public"]


def b64(text):
    return base64.b64encode(text.encode()).decode()


def header(rec, name):
    values = [v for k, v in rec["headers"] if k.lower() == name.lower()]
    assert len(values) <= 1, rec["headers"]
    return values[0] if values else None


def write_ini(path, text, mode=0o600):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    return path


def line_of(text, needle):
    """1-based number of the last line of `text` that contains `needle`."""
    found = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert found, f"{needle!r} not in the file"
    return found[-1]


def start(args, env, **kw):
    """A tunnel process with exactly these args (--local-port 0 added)."""
    args = [str(a) for a in args]
    if "--local-port" not in args:
        args += ["--local-port", "0"]
    return TunnelProcess(args, env, **kw)


@pytest.fixture
def procs():
    made = []

    def make(args, env, **kw):
        t = start(args, env, **kw)
        made.append(t)
        return t

    yield make
    for t in reversed(made):
        t.close()


def one_request(g, t, payload=b"via profile"):
    with t.connect() as s:
        assert echo_once(s, payload) == payload
    return g.wait_records("request", 1)[-1]


# --- where the profile file is found -------------------------------------------------

def profile_text(g, name="db", remote_port=5432, extra=""):
    return (f"# tunnels for the tests\n[other]\nhost = other.invalid:1\n\n"
            f"[{name}]\nhost = {g.addr}\naccess-type = public\n"
            f"remote-host = db.internal\nremote-port = {remote_port}\n{extra}")


def test_profile_from_config_flag(gateway, procs, echo, home, tmp_path):
    g = gateway([public_route(echo.addr)])
    ini = write_ini(tmp_path / "elsewhere" / "my.ini", profile_text(g))
    t = procs(["--config", ini, "-p", "db"], env_for(home))
    assert t.listen.group("host") == g.addr
    assert t.listen.group("remote") == "db.internal:5432"
    rec = one_request(g, t)
    assert dict(rec["params"]) == {"transport": "tcp", "remoteHost": "db.internal",
                                   "remotePort": "5432"}


def test_profile_from_xdg_config_home(gateway, procs, echo, home, tmp_path):
    g = gateway([public_route(echo.addr)])
    xdg = tmp_path / "xdg"
    write_ini(xdg / "otoroshictl" / "tunnels.ini", profile_text(g, remote_port=1001))
    # A decoy where $HOME would put it: XDG_CONFIG_HOME wins.
    write_ini(home / ".config" / "otoroshictl" / "tunnels.ini", profile_text(g, remote_port=2002))
    t = procs(["--profile", "db"], env_for(home, extra={"XDG_CONFIG_HOME": str(xdg)}))
    assert t.listen.group("remote") == "db.internal:1001"
    assert dict(one_request(g, t)["params"])["remotePort"] == "1001"


@pytest.mark.parametrize("xdg", [None, ""], ids=["xdg-unset", "xdg-empty"])
def test_profile_from_home_config(gateway, procs, echo, home, xdg):
    g = gateway([public_route(echo.addr)])
    write_ini(home / ".config" / "otoroshictl" / "tunnels.ini", profile_text(g, remote_port=3003))
    env = env_for(home)
    del env["XDG_CONFIG_HOME"]
    if xdg is not None:
        env["XDG_CONFIG_HOME"] = xdg
    t = procs(["--profile=db"], env)
    assert t.listen.group("remote") == "db.internal:3003"
    assert dict(one_request(g, t)["params"])["remotePort"] == "3003"


def test_short_and_long_profile_flags_and_flags_win(gateway, procs, echo, home, service):
    other = service(EchoServer, greeting=b"OTHER ")
    g = gateway([public_route(echo.addr),
                 public_route("${req.query.remoteHost}:${req.query.remotePort}", host="localhost")])
    ini = write_ini(home / ".config" / "otoroshictl" / "tunnels.ini",
                    f"[p]\nhost = 127.0.0.1:{g.port}\naccess-type = apikey\n"
                    "apikey-client-id = nobody\napikey-client-secret = nothing\n"
                    "remote-host = 127.0.0.1\nremote-port = 9\nkeepalive = 7\n"
                    "local-host = 127.0.0.1\ntls = false\nverbose = no\n")
    # -p NAME, then flags over the profile's values: host, access type, remote port.
    t = procs(["-p", "p", "--host", f"localhost:{g.port}", "--access-type", "public",
               "--remote-port", other.port], env_for(home))
    assert t.listen.group("host") == f"localhost:{g.port}"
    assert t.listen.group("remote") == f"127.0.0.1:{other.port}"
    with t.connect() as s:
        s.sendall(b"hi")
        s.shutdown(socket.SHUT_WR)
        # Already half-closed: the transfer only reads.
        assert Transfer(s, half_close=False).wait(10).received == b"OTHER hi"  # the other target's greeting
    rec = g.wait_records("request", 1)[0]
    assert header(rec, "Authorization") is None  # public won over the profile's apikey
    assert dict(rec["params"]) == {"transport": "tcp", "remoteHost": "127.0.0.1",
                                   "remotePort": str(other.port)}
    assert ini.stat().st_size > 0


def test_profile_with_tls_keys(gateway, procs, echo, home, tmp_path):
    # Boolean and file keys: `tls = true` and `ca-cert = FILE` reach a wss:// gateway.
    p = Pki(tmp_path / "pki")
    ca = p.ca("Profile Test CA")
    leaf = ca.issue("localhost", dns=["localhost"], ips=["127.0.0.1"])
    g = gateway([public_route(echo.addr, host="localhost")], "--tls-cert", leaf.cert,
                "--tls-key", leaf.key)
    ini = write_ini(tmp_path / "tls.ini", f"[secure]\nhost = localhost:{g.port}\ntls = yes\n"
                    f"ca-cert = {ca.cert}\naccess-type = public\n")
    t = procs(["--config", ini, "-p", "secure"], env_for(home))
    one_request(g, t)
    tls = g.wait_records("tls", 1)[0]
    assert tls["ok"] and tls["sni"] == "localhost", tls


def test_list_profiles(home, tmp_path):
    text = ("[db]\nhost = gw.example.com:8443\ntls = true\nremote-host = db.internal\n"
            "remote-port = 5432\n\n[redis]\nhost = 10.0.0.1\nremote-port = 6379\n\n"
            "[bare]\naccess-type = public\napikey-client-secret = L1st-Secret\n")
    ini = write_ini(tmp_path / "list.ini", text)
    want = ("db\tgw.example.com:8443\tdb.internal:5432\n"
            "redis\t10.0.0.1\t(target's host):6379\n"
            "bare\t-\t(defined in otoroshi target)\n")
    r = run_cli(["--config", ini, "--list-profiles"], env_for(home))
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == want
    assert r.stderr == b""  # no permission warning either: nothing secret is shown
    assert b"L1st-Secret" not in r.stdout
    # The default location, and the `tt` alias.
    write_ini(home / ".config" / "otoroshictl" / "tunnels.ini", text)
    r = run_cli(["--list-profiles"], env_for(home), command="tt")
    assert r.returncode == 0 and r.stdout.decode() == want
    for line in want.splitlines():
        assert len(line.split("\t")) == 3


def test_list_profiles_without_a_file(home, tmp_path):
    r = run_cli(["--list-profiles"], env_for(home))
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert str(home / ".config" / "otoroshictl" / "tunnels.ini") in err
    assert r.stdout == b""


# --- every profile error --------------------------------------------------------------

GOOD = "[ok]\nhost = 127.0.0.1:9\naccess-type = public\n\n"
# Each bad profile listens on a free port (local-port = 0) should it ever start.
P = GOOD + "[p]\nlocal-port = 0\nhost = 127.0.0.1:9\naccess-type = public\n"

PROFILE_ERRORS = [
    pytest.param(P + "frobnicate = 1\n", "p", "frobnicate", "unknown key", id="unknown-key"),
    pytest.param(P + "remote-port = abc\n", "p", "remote-port", "abc", id="bad-remote-port"),
    pytest.param(GOOD + "[p]\nhost = 127.0.0.1:9\naccess-type = public\nlocal-port = 70000\n", "p",
                 "local-port", "70000", id="bad-local-port"),
    pytest.param(P + "tls = maybe\n", "p", "tls", "maybe", id="bad-boolean"),
    pytest.param(GOOD + "[p]\nlocal-port = 0\nhost = 127.0.0.1:9\naccess-type = kerberos\n", "p",
                 "access-type", "kerberos", id="bad-access-type"),
    pytest.param(P + "keepalive = -1\n", "p", "keepalive", "-1", id="bad-keepalive"),
    pytest.param(P + "keepalive = 86401\n", "p", "keepalive", "86401", id="keepalive-too-big"),
    pytest.param(P + "remote-host =\n", "p", "remote-host", "non-empty", id="empty-value"),
    pytest.param(P + "stdio = true\n", "p", "stdio", "unknown key", id="command-line-only-key"),
    pytest.param(P + "profile = ok\n", "p", "profile", "unknown key", id="profile-inside-profile"),
    pytest.param(P + "host = 127.0.0.1:10\n", "p", "host", "earlier", id="duplicate-key"),
    pytest.param(P + "bearer-token = a\nbearer-token-file = /nonexistent/token\n", "p",
                 "bearer-token-file", "earlier", id="secret-and-its-file"),
    pytest.param(P + "bearer-token-file = /nonexistent/token\n", "p", "bearer-token-file",
                 "/nonexistent/token", id="missing-secret-file"),
    pytest.param(P + "this line is not ini\n", "p", "this line is not ini", "not an INI line",
                 id="malformed-line"),
    pytest.param(GOOD + "[p\nhost = 127.0.0.1:9\n", "p", "[p", "not an INI line",
                 id="unclosed-section"),
]


@pytest.mark.parametrize("text,name,key,what", PROFILE_ERRORS)
def test_profile_errors_exit_2_naming_file_line_and_key(home, tmp_path, text, name, key, what):
    ini = write_ini(tmp_path / "bad.ini", text)
    r = run_cli(["--config", ini, "-p", name], env_for(home))
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 2, f"exit {r.returncode}: {err}"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    line_no = line_of(text, key)
    assert lines[0].startswith(f"error: {ini}:{line_no}: "), f"want file:line {ini}:{line_no}: {err}"
    if not key.startswith(("this", "[")):
        assert key in lines[0], f"the key {key!r} is not named: {err}"
    assert what in lines[0], err
    assert "listening" not in err.lower()


@pytest.mark.parametrize("key,bad,flag", [("remote-port", "abc", ["--remote-port", "5"]),
                                          ("local-port", "70000", ["--local-port", "0"]),
                                          ("keepalive", "soon", ["--keepalive", "0"])])
def test_bad_profile_value_is_an_error_even_under_a_flag(home, tmp_path, key, bad, flag):
    # The profile is wrong whatever the command line says: the mistake is reported
    # now, not the day the flag is left out.
    text = f"[p]\nhost = 127.0.0.1:9\naccess-type = public\n{key} = {bad}\n"
    ini = write_ini(tmp_path / "bad.ini", text)
    args = ["--config", ini, "-p", "p", *flag]
    if "--local-port" not in flag:
        args += ["--local-port", "0"]
    t = TunnelProcess(args, env_for(home), wait_ready=False)
    try:
        rc = t.wait_exit(3)
    except subprocess.TimeoutExpired:
        rc = None
    finally:
        t.close()
    err = t.text()
    assert rc == 2, f"exit {rc} (None: still running a tunnel after 3 s): {err}"
    assert err.startswith(f"error: {ini}:4: ") and key in err and bad in err, err


def test_missing_profile_lists_the_existing_ones(home, tmp_path):
    ini = write_ini(tmp_path / "few.ini", GOOD + "[db]\nhost = a:1\n[redis]\nhost = b:2\n")
    r = run_cli(["--config", ini, "--profile", "nope"], env_for(home))
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert err.startswith(f"error: {ini}: ") and "'nope'" in err, err
    assert "ok, db, redis" in err, err


def test_missing_profile_file(home, tmp_path):
    missing = tmp_path / "no" / "such.ini"
    r = run_cli(["--config", missing, "-p", "x"], env_for(home))
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert str(missing) in err and "No such file" in err, err
    # And the default location when nothing is there.
    r = run_cli(["-p", "x"], env_for(home))
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert str(home / ".config" / "otoroshictl" / "tunnels.ini") in err, err


# --- file permissions -------------------------------------------------------------------

WARN_RE = r"^\[WARN  otoroshictl::tunnels::tcp\] .*{file}.*chmod 600"


@pytest.mark.parametrize("mode,who", [(0o644, "anyone"), (0o640, "group"), (0o604, "anyone")],
                         ids=["0644", "0640", "0604"])
def test_readable_profile_with_a_secret_warns(gateway, procs, echo, home, tmp_path, mode, who):
    g = gateway([route("apikey", echo.addr, apikeys=["pid:psecret"])])
    ini = write_ini(tmp_path / "open.ini",
                    f"[p]\nhost = {g.addr}\napikey-client-id = pid\napikey-client-secret = psecret\n",
                    mode)
    t = procs(["--config", ini, "-p", "p"], env_for(home))
    line = t.wait_for(WARN_RE.format(file=re.escape(str(ini))), 5).string
    assert f"chmod 600 {ini}" in line and who in line, line
    one_request(g, t)  # a warning, not an error: the tunnel works


def test_private_profile_and_profile_without_secret_do_not_warn(gateway, procs, echo, home, tmp_path):
    g = gateway([route("apikey", echo.addr, apikeys=["pid:psecret"])])
    private = write_ini(tmp_path / "private.ini",
                        f"[p]\nhost = {g.addr}\napikey-client-id = pid\napikey-client-secret = psecret\n",
                        0o600)
    # Readable by all, but the secret comes from the environment.
    public = write_ini(tmp_path / "public.ini", f"[p]\nhost = {g.addr}\napikey-client-id = pid\n", 0o644)
    for ini in (private, public):
        t = procs(["--config", ini, "-p", "p"],
                  env_for(home, extra={"OTOROSHI_APIKEY_CLIENT_SECRET": "psecret"}))
        one_request(g, t)
        t.stop()
        t.wait_exit(5)
        assert "[WARN" not in t.text(), t.text()


def test_readable_secret_file_warns(gateway, procs, echo, home, tmp_path):
    g = gateway([route("bearer", echo.addr, tokens=["file-token"])])
    token = write_ini(tmp_path / "token.txt", "file-token\n", 0o644)
    ini = write_ini(tmp_path / "p.ini",
                    f"[p]\nhost = {g.addr}\naccess-type = bearer\nbearer-token-file = {token}\n", 0o600)
    t = procs(["--config", ini, "-p", "p"], env_for(home))
    t.wait_for(WARN_RE.format(file=re.escape(str(token))), 5)
    assert header(one_request(g, t), "Authorization") == "Bearer file-token"


# --- secrets from files -------------------------------------------------------------------

FILE_CASES = [
    pytest.param("apikey-client-secret-file", "apikey",
                 dict(access="apikey", apikeys=["fid:F1le-Secret"]), "apikey-client-id = fid\n",
                 "F1le-Secret", lambda rec: header(rec, "Authorization") == f"Basic {b64('fid:F1le-Secret')}",
                 id="apikey-client-secret-file"),
    pytest.param("bearer-token-file", "bearer", dict(access="bearer", tokens=["F1le.Bearer"]), "",
                 "F1le.Bearer", lambda rec: header(rec, "Authorization") == "Bearer F1le.Bearer",
                 id="bearer-token-file"),
    pytest.param("session-token-file", "session", dict(access="session", tokens=["F1le Session&"]), "",
                 "F1le Session&",
                 lambda rec: dict(rec["params"]).get("pappsToken") == "F1le Session&",
                 id="session-token-file"),
]


@pytest.mark.parametrize("key,access,fields,more,secret,check", FILE_CASES)
@pytest.mark.parametrize("where", ["profile", "flag"])
def test_secret_read_from_a_file(gateway, procs, echo, home, tmp_path, key, access, fields, more,
                                 secret, check, where):
    g = gateway([route(access, echo.addr, **{k: v for k, v in fields.items() if k != "access"})])
    secret_file = write_ini(tmp_path / "secret", secret + "\nsecond line ignored\n")
    if where == "profile":
        ini = write_ini(tmp_path / "p.ini", f"[p]\nhost = {g.addr}\naccess-type = {access}\n{more}"
                        f"{key} = {secret_file}\n")
        args = ["--config", ini, "-p", "p"]
    else:
        args = ["--host", g.addr, "--access-type", access, f"--{key}", secret_file]
        if more:
            args += ["--apikey-client-id", "fid"]
    t = procs(args, env_for(home, "trace"))
    assert secret.encode() not in open(f"/proc/{t.pid}/cmdline", "rb").read()
    rec = one_request(g, t)
    assert check(rec), rec["headers"]
    assert "second line" not in rec["head"]
    t.stop()
    t.wait_exit(5)
    assert secret not in t.text() and quote(secret, safe="") not in t.text()


def test_empty_secret_file_is_an_error(home, tmp_path):
    empty = write_ini(tmp_path / "empty", "")
    r = run_cli(["--host", "127.0.0.1:9", "--access-type", "bearer", "--bearer-token-file", empty],
                env_for(home))
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert "--bearer-token-file" in err and str(empty) in err and "empty" in err, err


# --- secrets from the environment ------------------------------------------------------------

ENV_CASES = [
    pytest.param({"OTOROSHI_APIKEY_CLIENT_ID": "env-id", "OTOROSHI_APIKEY_CLIENT_SECRET": "Env-S3cret"},
                 [], dict(access="apikey", apikeys=["env-id:Env-S3cret"]),
                 lambda rec: header(rec, "Authorization") == f"Basic {b64('env-id:Env-S3cret')}",
                 id="apikey-both"),
    pytest.param({"OTOROSHI_APIKEY_CLIENT_SECRET": "Env-S3cret"}, ["--apikey-client-id", "flag-id"],
                 dict(access="apikey", apikeys=["flag-id:Env-S3cret"]),
                 lambda rec: header(rec, "Authorization") == f"Basic {b64('flag-id:Env-S3cret')}",
                 id="apikey-secret-only"),
    pytest.param({"OTOROSHI_APIKEY_CLIENT_ID": "env-id"}, ["--apikey-client-secret", "flag-secret"],
                 dict(access="apikey", apikeys=["env-id:flag-secret"]),
                 lambda rec: header(rec, "Authorization") == f"Basic {b64('env-id:flag-secret')}",
                 id="apikey-id-only"),
    pytest.param({"OTOROSHI_BEARER_TOKEN": "Env.Bearer.T0k"}, ["--access-type", "bearer"],
                 dict(access="bearer", tokens=["Env.Bearer.T0k"]),
                 lambda rec: header(rec, "Authorization") == "Bearer Env.Bearer.T0k", id="bearer"),
    pytest.param({"OTOROSHI_BEARER_TOKEN": "Env.Jwt.T0k"}, ["--access-type", "jwt"],
                 dict(access="bearer", tokens=["Env.Jwt.T0k"]),
                 lambda rec: header(rec, "Authorization") == "Bearer Env.Jwt.T0k", id="jwt"),
    pytest.param({"OTOROSHI_SESSION_TOKEN": "Env Sess/T0k&"}, ["--access-type", "session"],
                 dict(access="session", tokens=["Env Sess/T0k&"]),
                 lambda rec: dict(rec["params"]).get("pappsToken") == "Env Sess/T0k&"
                 and "Authorization" not in rec["head"], id="session"),
]


@pytest.mark.parametrize("env,args,fields,check", ENV_CASES)
def test_secret_from_the_environment(gateway, procs, echo, home, env, args, fields, check):
    g = gateway([route(fields["access"], echo.addr, **{k: v for k, v in fields.items() if k != "access"})])
    t = procs(["--host", g.addr, *args], env_for(home, extra=env))
    rec = one_request(g, t)
    assert rec["status"] == 101
    assert check(rec), rec["head"]


def test_environment_secret_unused_by_another_access_type(gateway, procs, echo, home):
    # OTOROSHI_BEARER_TOKEN set, --access-type public: nothing goes to the gateway.
    g = gateway([public_route(echo.addr)])
    t = procs(["--host", g.addr, *PUBLIC], env_for(home, extra={"OTOROSHI_BEARER_TOKEN": "unused"}))
    rec = one_request(g, t)
    assert "unused" not in rec["head"]


# Flag, then environment, then profile, for one setting (the bearer token), in every
# combination; the *-file form of a flag or a profile key counts as that flag or key.
PRECEDENCE = [
    pytest.param(dict(profile="P"), "P", id="profile"),
    pytest.param(dict(profile="P", env="E"), "E", id="env>profile"),
    pytest.param(dict(profile="P", flag="F"), "F", id="flag>profile"),
    pytest.param(dict(env="E", flag="F"), "F", id="flag>env"),
    pytest.param(dict(profile="P", env="E", flag="F"), "F", id="flag>env>profile"),
    pytest.param(dict(profile_file="PF", env="E"), "E", id="env>profile-file"),
    pytest.param(dict(profile="P", env="E", flag_file="FF"), "FF", id="flag-file>env>profile"),
    pytest.param(dict(env="E"), "E", id="env"),
]


@pytest.mark.parametrize("given,want", PRECEDENCE)
def test_precedence_flag_env_profile(gateway, procs, echo, home, tmp_path, given, want):
    tokens = ["P", "E", "F", "PF", "FF"]
    g = gateway([route("bearer", echo.addr, tokens=tokens)])
    lines = [f"host = {g.addr}", "access-type = bearer"]
    if "profile" in given:
        lines.append(f"bearer-token = {given['profile']}")
    if "profile_file" in given:
        lines.append(f"bearer-token-file = {write_ini(tmp_path / 'pf', given['profile_file'])}")
    ini = write_ini(tmp_path / "p.ini", "[p]\n" + "\n".join(lines) + "\n")
    args = ["--config", ini, "-p", "p"]
    if "flag" in given:
        args += ["--bearer-token", given["flag"]]
    if "flag_file" in given:
        args += ["--bearer-token-file", write_ini(tmp_path / "ff", given["flag_file"])]
    env = {"OTOROSHI_BEARER_TOKEN": given["env"]} if "env" in given else {}
    t = procs(args, env_for(home, extra=env))
    assert header(one_request(g, t), "Authorization") == f"Bearer {want}"


def test_precedence_per_setting_apikey(gateway, procs, echo, home, tmp_path):
    # Each setting is ranked on its own: the id from the environment over the
    # profile's, the secret from the flag over the environment's and the profile's.
    g = gateway([route("apikey", echo.addr, apikeys=["env-id:flag-secret"])])
    ini = write_ini(tmp_path / "p.ini", f"[p]\nhost = {g.addr}\napikey-client-id = prof-id\n"
                    "apikey-client-secret = prof-secret\n")
    env = {"OTOROSHI_APIKEY_CLIENT_ID": "env-id", "OTOROSHI_APIKEY_CLIENT_SECRET": "env-secret"}
    t = procs(["--config", ini, "-p", "p", "--apikey-client-secret", "flag-secret"],
              env_for(home, extra=env))
    rec = one_request(g, t)
    assert header(rec, "Authorization") == f"Basic {b64('env-id:flag-secret')}"


# --- no secret on the command line or in the logs ----------------------------------------------

SECRET_SOURCES = [
    pytest.param("env", id="environment"),
    pytest.param("file-flag", id="file-flag"),
    pytest.param("profile-file", id="profile-secret-file"),
]


@pytest.mark.parametrize("source", SECRET_SOURCES)
def test_no_secret_in_cmdline_or_trace_logs(gateway, procs, echo, home, tmp_path, source):
    secret = "Qz7-very-SECRET-value"
    bearer = "Bq2-bearer-SECRET-token"
    g = gateway([route("apikey", echo.addr, apikeys=[f"sid:{secret}"])])
    env = {}
    args = ["--host", g.addr, "--apikey-client-id", "sid"]
    if source == "env":
        env = {"OTOROSHI_APIKEY_CLIENT_SECRET": secret, "OTOROSHI_BEARER_TOKEN": bearer}
    elif source == "file-flag":
        args += ["--apikey-client-secret-file", write_ini(tmp_path / "s", secret + "\n")]
    else:
        sf = write_ini(tmp_path / "s", secret + "\n")
        ini = write_ini(tmp_path / "p.ini", f"[p]\nhost = {g.addr}\napikey-client-id = sid\n"
                        f"apikey-client-secret-file = {sf}\n")
        args = ["--config", ini, "-p", "p"]
    t = procs(args, env_for(home, "trace", env))
    cmdline = open(f"/proc/{t.pid}/cmdline", "rb").read()
    assert secret.encode() not in cmdline and bearer.encode() not in cmdline
    rec = one_request(g, t)
    assert header(rec, "Authorization") == f"Basic {b64('sid:' + secret)}"
    # A refusal too (the route changes its mind), which logs the most.
    g.set_routes([route("apikey", echo.addr, apikeys=["sid:other"])])
    with t.connect() as s:
        expect_closed(s, 5)
    t.wait_for(r"^\[ERROR .*HTTP 401", 5)
    t.stop(signal.SIGTERM)
    assert t.wait_exit(5) == 0
    text = t.text() + "\n".join(t.stdout_lines)
    assert "[TRACE" in text
    for s in (secret, b64("sid:" + secret), bearer):
        assert s not in text, f"{s!r} in the logs:\n{text}"
