"""Logs for machines: --log-format json (and OTOROSHICTL_LOG_FORMAT), one JSON object a
line with the summary's and the refusal's fields; --log-timestamps on human lines; no
secret in either; the usage errors of a bad format."""

import base64
import json
import re
import signal
import socket
import time
from datetime import datetime, timezone

from helpers import LINE_RE, LOGGER, Transfer, clean_env, echo_once, route, run_cli
from services import random_bytes, sha256

CID = "cid-json-logs"
SECRET = "Sx9-json-logs-SECRET/+=&%"
APIKEY = ["--apikey-client-id", CID, "--apikey-client-secret", SECRET]
TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
LEVELS = {"ERROR", "WARN", "INFO", "DEBUG", "TRACE"}
SUMMARY_RE = re.compile(
    r"^Tunnel from (?P<label>\S+) closed after (?P<secs>\d+)\.(?P<ms>\d{3}) s: (?P<sent>\d+) bytes sent, "
    r"(?P<received>\d+) bytes received \((?P<reason>[^,()]+)(?:, Close (?P<close>\d+)|, HTTP (?P<http>\d+))?\)$")
STAMPED_RE = re.compile(
    r"^\[(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (INFO |ERROR|WARN |DEBUG|TRACE) "
    + re.escape(LOGGER) + r"\] (.*)$")


def secret_forms():
    return [SECRET, base64.b64encode(f"{CID}:{SECRET}".encode()).decode(), "SECRET"]


def records(t, since=None):
    """Every stderr line as a JSON object, checked for the four keys of every line."""
    with t.cond:
        lines = list(t.lines)
    out = []
    for line in lines:
        obj = json.loads(line)
        assert isinstance(obj, dict), line
        assert list(obj)[:4] == ["timestamp", "level", "target", "message"], line
        assert TIMESTAMP_RE.match(obj["timestamp"]), line
        stamp = datetime.strptime(obj["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        if since is not None:
            assert since - 5 <= stamp.timestamp() <= time.time() + 5, line
        assert obj["level"] in LEVELS, line
        assert obj["target"] == LOGGER, line
        assert isinstance(obj["message"], str), line
        out.append(obj)
    return out


def summaries(recs):
    return [r for r in recs if r["message"].startswith("Tunnel from ")]


def peer_of(sock):
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def assert_no_secret(t):
    text = t.text()
    for form in secret_forms():
        assert form not in text, f"{form!r} in stderr:\n{text}"


def test_json_lines_and_the_summary_fields(gateway, tunnel, echo):
    g = gateway([route("apikey", echo.addr, apikeys=[f"{CID}:{SECRET}"])])
    started = time.time()
    t = tunnel(g, *APIKEY, "--log-format", "json", "--linger", "0.2")
    assert t.port  # learnt from the JSON message
    data = random_bytes(300_000, 71)
    with socket.create_connection(("127.0.0.1", t.port), timeout=5) as s:
        peer = peer_of(s)
        t0 = time.monotonic()
        tr = Transfer(s, data).wait(30)
        took_ms = (time.monotonic() - t0) * 1000
    assert tr.digest == sha256(data)
    t.wait_for(r"^Tunnel from " + re.escape(peer) + " closed after", 10)
    assert t.stop(signal.SIGTERM, 10) == 0
    t.wait_exit(5)

    recs = records(t, since=started)
    messages = [r["message"] for r in recs]
    assert any(m.startswith("TCP tunnel listening on 127.0.0.1:") for m in messages), messages
    assert "TCP tunnel ready, waiting for connections ..." in messages
    (summary,) = summaries(recs)
    assert summary["level"] == "INFO"
    m = SUMMARY_RE.match(summary["message"])
    assert m, summary
    assert summary["peer"] == peer == m.group("label")
    assert "forward" not in summary  # a run of one forward
    assert summary["bytes_sent"] == len(data) == int(m.group("sent"))
    assert summary["bytes_received"] == len(data) == int(m.group("received"))
    assert summary["duration_ms"] == int(m.group("secs")) * 1000 + int(m.group("ms"))
    assert 0 < summary["duration_ms"] <= took_ms + 5000
    assert summary["reason"] == m.group("reason")
    assert summary["reason"] == "local close"
    if m.group("close"):
        assert summary["close_code"] == int(m.group("close"))
    else:
        assert "close_code" not in summary
    assert "http_status" not in summary
    assert all(isinstance(summary[k], int) for k in ("bytes_sent", "bytes_received", "duration_ms"))
    assert_no_secret(t)


def test_a_refusal_has_its_status(gateway, tunnel, echo):
    g = gateway([route("apikey", echo.addr, apikeys=[f"{CID}:another"])])
    t = tunnel(g, *APIKEY, "--log-format", "json")
    with socket.create_connection(("127.0.0.1", t.port), timeout=5) as s:
        peer = peer_of(s)
        s.settimeout(10)
        assert s.recv(100) == b""
    t.wait_for(r"^Tunnel from " + re.escape(peer) + " closed after", 10)
    recs = records(t)
    (refusal,) = [r for r in recs if r["message"].startswith("Otoroshi refused the tunnel for ")]
    assert refusal["level"] == "ERROR"
    assert refusal["peer"] == peer
    assert refusal["http_status"] == 401
    assert refusal["otoroshi_message"] == "bad apikey"
    assert "forward" not in refusal
    assert "HTTP 401" in refusal["message"]
    (summary,) = summaries(recs)
    assert summary["reason"] == "refused"
    assert summary["http_status"] == 401
    assert summary["bytes_sent"] == summary["bytes_received"] == 0
    assert "close_code" not in summary
    assert_no_secret(t)


def test_the_environment_variable_and_the_flag_that_wins(gateway, tunnel, echo):
    g = gateway([route("public", echo.addr)])
    t = tunnel(g, "--access-type", "public", env={"OTOROSHICTL_LOG_FORMAT": "json"})
    with socket.create_connection(("127.0.0.1", t.port), timeout=5) as s:
        assert echo_once(s, b"json by the environment") == b"json by the environment"
    t.wait_for(r"^Tunnel from .* closed after", 10)
    assert len(summaries(records(t))) == 1

    # The flag wins over the variable.
    h = tunnel(g, "--access-type", "public", "--log-format", "human", env={"OTOROSHICTL_LOG_FORMAT": "JSON"})
    with socket.create_connection(("127.0.0.1", h.port), timeout=5) as s:
        assert echo_once(s, b"human by the flag") == b"human by the flag"
    h.wait_for(r"^\[INFO  " + re.escape(LOGGER) + r"\] Tunnel from .* closed after", 10)
    with h.cond:
        lines = list(h.lines)
    assert lines and all(LINE_RE.match(line) for line in lines), lines


def test_an_unknown_value_of_the_variable_warns(gateway, tunnel, echo):
    g = gateway([route("public", echo.addr)])
    t = tunnel(g, "--access-type", "public", env={"OTOROSHICTL_LOG_FORMAT": "yaml"})
    t.wait_for(r"^\[WARN  " + re.escape(LOGGER) + r"\] OTOROSHICTL_LOG_FORMAT holds an unknown format "
               r"\(use human or json\)", 5)
    with t.cond:
        assert all(LINE_RE.match(line) for line in t.lines), t.text()
    # With the flag, the warning is JSON too: every line is.
    j = tunnel(g, "--access-type", "public", "--log-format", "json",
               env={"OTOROSHICTL_LOG_FORMAT": "yaml", "OTOROSHICTL_LOG_STYLE": "rainbow"})
    recs = records(j)
    assert recs[0]["level"] == "WARN" and recs[0]["message"].startswith("OTOROSHICTL_LOG_STYLE holds")
    assert recs[1]["level"] == "WARN" and recs[1]["message"].startswith("OTOROSHICTL_LOG_FORMAT holds")


def test_timestamps_on_human_lines(gateway, tunnel, echo):
    g = gateway([route("public", echo.addr)])
    before = time.time()
    t = tunnel(g, "--access-type", "public", "--log-timestamps")
    with socket.create_connection(("127.0.0.1", t.port), timeout=5) as s:
        assert echo_once(s, b"stamped") == b"stamped"
    t.wait_for(r"\] Tunnel from .* closed after", 10)
    with t.cond:
        lines = list(t.lines)
    assert len(lines) >= 4, lines
    for line in lines:
        m = STAMPED_RE.match(line)
        assert m, line
        stamp = datetime.strptime(m.group("ts"), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        assert before - 5 <= stamp.timestamp() <= time.time() + 5, line
    # With json it changes nothing: every JSON line has its timestamp.
    j = tunnel(g, "--access-type", "public", "--log-timestamps", "--log-format", "json")
    assert len(records(j)) >= 2


def test_profile_keys(gateway, tunnel, echo, home):
    g = gateway([route("public", echo.addr)])
    cfg = home / ".config" / "otoroshictl"
    cfg.mkdir(parents=True)
    (cfg / "tunnels.ini").write_text(
        "[machine]\naccess-type = public\nlog-format = json\n"
        "[stamped]\naccess-type = public\nlog-timestamps = true\n"
        "[bad]\naccess-type = public\nlog-format = xml\n")
    t = tunnel(g, "-p", "machine")
    assert len(records(t)) >= 2
    s = tunnel(g, "-p", "stamped")
    with s.cond:
        assert s.lines and all(STAMPED_RE.match(line) for line in s.lines), s.text()
    r = run_cli(["--host", g.addr, "-p", "bad"], clean_env(home))
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert "tunnels.ini" in err and "'xml' is not a log format (human or json)" in err, err


def test_usage_errors_stay_plain(home):
    for value in ("xml", "JSONL", ""):
        r = run_cli(["--host", "127.0.0.1:1", "--access-type", "public", "--log-format", value], clean_env(home))
        err = r.stderr.decode()
        assert r.returncode == 2, err
        if value:
            assert err == f"error: --log-format: '{value}' is not a log format (human or json)\n"
        else:
            assert err == "error: --log-format needs a non-empty value\n"
    # A usage error is plain text in the JSON format too.
    r = run_cli(["--host", "127.0.0.1:1", "--log-format", "json", "--access-type", "nope"], clean_env(home))
    assert r.returncode == 2
    assert r.stderr.decode().startswith("error: --access-type: 'nope'")
    r = run_cli(["--log-timestamps=yes"], clean_env(home))
    assert r.returncode == 2
    assert r.stderr.decode() == "error: --log-timestamps takes no value (got 'yes')\n"


def test_completions_offer_the_formats(home):
    out = {sh: run_cli([sh], clean_env(home), command="completions").stdout.decode()
           for sh in ("bash", "zsh", "fish")}
    assert '--log-format) COMPREPLY=($(compgen -W "human json" -- "$cur")); return ;;' in out["bash"]
    assert "--log-timestamps" in out["bash"]
    assert "'--log-format[log-format]:log format:(human json)'" in out["zsh"]
    assert "-l log-format -x -a 'human json'" in out["fish"]


def test_forward_names_the_forward_of_a_run_of_several(gateway, tunnel, echo):
    g = gateway([route("public", echo.addr)])
    t = tunnel(g, "--access-type", "public", "--log-format", "json", "-L", "0:alpha:1", "-L", "0:beta:2",
               wait_ready=False)
    t.wait_for(r"^TCP tunnel ready", 10)
    ports = [int(re.search(r"^TCP tunnel listening on 127\.0\.0\.1:(\d+) ", r["message"]).group(1))
             for r in records(t) if r["message"].startswith("TCP tunnel listening on ")]
    assert len(ports) == 2, t.text()
    peers = []
    for port in ports:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            peers.append(peer_of(s))
            assert echo_once(s, b"which forward") == b"which forward"
    for peer in peers:
        t.wait_for(r"^Tunnel from " + re.escape(peer) + r" .*closed after", 10)
    found = {r["peer"]: r for r in summaries(records(t))}
    assert sorted(found) == sorted(peers)
    names = [found[p]["forward"] for p in peers]
    assert "alpha:1" in names[0] and "beta:2" in names[1], names
    for peer, name in zip(peers, names):
        assert found[peer]["message"].startswith(f"Tunnel from {peer} ") and name in found[peer]["message"]
