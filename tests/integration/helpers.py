"""Helpers for driving the real otoroshictl binary in integration tests.

TunnelProcess runs `otoroshictl tcp-tunnel ...`, collects its stderr lines in a
background thread, learns the bound port from the `TCP tunnel listening on ...` line
(or, with --log-format json, from that JSON line's message), and stops or kills the
process on close(). The transfer helpers move bytes through a
local connection with separate sender and receiver threads and hard deadlines.
"""

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gateway"))

from services import wait_until  # noqa: E402

LOGGER = "otoroshictl::tunnels::tcp"
LINE_RE = re.compile(r"^\[(INFO |ERROR|WARN |DEBUG|TRACE) " + re.escape(LOGGER) + r"\] (.*)$")
LISTEN_RE = re.compile(
    r"TCP tunnel listening on (?P<addr>\S+):(?P<port>\d+) \u2192 (?P<remote>.+) "
    r"via Otoroshi \((?P<host>[^)]+)\)(?: \[(?P<name>[^\]]+)\])?$"
)
READY = "TCP tunnel ready, waiting for connections ..."


def json_message(line):
    """The message of a JSON log line (--log-format json), or None for any other line."""
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    message = obj.get("message") if isinstance(obj, dict) else None
    return message if isinstance(message, str) else None


def binary():
    return os.environ.get("OTOROSHICTL_BIN", "")


def clean_env(home, level="info", extra=None):
    """The environment for a tunnel: no proxies, no user config, no trust store
    override (SSL_CERT_FILE/SSL_CERT_DIR), a chosen log level."""
    env = {k: v for k, v in os.environ.items()
           if not k.lower().endswith("_proxy") and not k.startswith("OTOROSHICTL")
           and k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(Path(home) / ".config"), OTOROSHICTL=level)
    if level is None:
        del env["OTOROSHICTL"]
    env.update(extra or {})
    return env


class TunnelProcess:
    def __init__(self, args, env, wait_ready=True, ready_timeout=10, command="tcp-tunnel"):
        self.args = [binary(), command, *map(str, args)]
        self.lines = []
        self.stdout_lines = []
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(
            self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env,
        )
        self.readers = [
            threading.Thread(target=self._collect, args=(self.proc.stderr, self.lines), daemon=True),
            threading.Thread(target=self._collect, args=(self.proc.stdout, self.stdout_lines),
                             daemon=True),
        ]
        for t in self.readers:
            t.start()
        self.port = None
        if wait_ready:
            m = self.wait_for(LISTEN_RE, ready_timeout)
            self.listen = m
            self.port = int(m.group("port"))
            self.wait_for(re.escape(READY), ready_timeout)

    def _collect(self, stream, sink):
        for raw in iter(stream.readline, b""):
            with self.cond:
                sink.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    @property
    def pid(self):
        return self.proc.pid

    def text(self):
        with self.cond:
            return "\n".join(self.lines)

    def wait_for(self, pattern, timeout=10, start=0):
        """The first stderr line at index >= start matching `pattern` (re.search); a JSON
        log line matches when its message does."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines[start:]:
                    m = rx.search(line)
                    if not m and (message := json_message(line)) is not None:
                        m = rx.search(message)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if self.proc.poll() is not None and all(not t.is_alive() for t in self.readers):
                    break
                self.cond.wait(min(left, 0.1))
        raise AssertionError(
            f"no stderr line matching {rx.pattern!r} within {timeout}s "
            f"(exit={self.proc.poll()}); stderr so far:\n{self.text()[-6000:]}"
        )

    def mark(self):
        with self.cond:
            return len(self.lines)

    def connect(self, timeout=10):
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self, sig=signal.SIGTERM, timeout=5):
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def wait_exit(self, timeout):
        rc = self.proc.wait(timeout)
        for t in self.readers:
            t.join(2)
        return rc

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for t in self.readers:
            t.join(2)
        for s in (self.proc.stdout, self.proc.stderr):
            if s:
                s.close()


def run_cli(args, env, timeout=10, command="tcp-tunnel"):
    """Run the binary to completion (for usage errors); returns CompletedProcess."""
    return subprocess.run([binary(), command, *map(str, args)], stdin=subprocess.DEVNULL,
                          capture_output=True, env=env, timeout=timeout)


class Transfer:
    """Send `data` on `sock` (then SHUT_WR if asked) while reading until EOF."""

    def __init__(self, sock, data=b"", half_close=True, keep=True, timeout=60):
        self.sock = sock
        self.data = data
        self.half_close = half_close
        self.keep = keep
        self.timeout = timeout
        self.received = bytearray()
        self.nreceived = 0
        self.sha = hashlib.sha256()
        self.error = None
        self.send_error = None
        self.sent_at = None
        self.eof_at = None
        self.last_at = None  # when the last bytes arrived
        self.t0 = time.monotonic()
        sock.settimeout(timeout)
        self.sender = threading.Thread(target=self._send, daemon=True)
        self.receiver = threading.Thread(target=self._recv, daemon=True)
        self.sender.start()
        self.receiver.start()

    def _send(self):
        try:
            if self.data:
                self.sock.sendall(self.data)
            if self.half_close:
                self.sock.shutdown(socket.SHUT_WR)
            self.sent_at = time.monotonic()
        except OSError as exc:
            self.send_error = exc

    def _recv(self):
        try:
            while True:
                chunk = self.sock.recv(262144)
                if not chunk:
                    break
                self.nreceived += len(chunk)
                self.last_at = time.monotonic()
                self.sha.update(chunk)
                if self.keep:
                    self.received += chunk
            self.eof_at = time.monotonic()
        except OSError as exc:
            self.error = exc

    def wait(self, timeout=None):
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        self.sender.join(max(0, deadline - time.monotonic()))
        self.receiver.join(max(0, deadline - time.monotonic()))
        if self.sender.is_alive() or self.receiver.is_alive():
            raise AssertionError(
                f"transfer not finished in {timeout}s: sent_done={self.sent_at is not None} "
                f"received={self.nreceived}")
        if self.send_error:
            raise AssertionError(f"send failed: {self.send_error!r}")
        if self.error:
            raise AssertionError(f"receive failed after {self.nreceived} bytes: {self.error!r}")
        return self

    @property
    def digest(self):
        return self.sha.hexdigest()


def expect_closed(sock, timeout):
    """Wait for EOF or reset on `sock`, discarding data; return seconds taken."""
    t0 = time.monotonic()
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except socket.timeout:
        raise AssertionError(f"local connection still open after {timeout}s") from None
    return time.monotonic() - t0


def echo_once(sock, payload=b"hello through the tunnel\n", timeout=10):
    """Write `payload` and read the same number of bytes back (no half-close)."""
    sock.settimeout(timeout)
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"EOF after {len(got)} of {len(payload)} echoed bytes")
        got += chunk
    return got


class RssSampler:
    """Samples a process's VmRSS (kB) every `interval` seconds in a thread."""

    def __init__(self, tunnel, interval=0.02):
        self.tunnel = tunnel
        self.interval = interval
        self.max_kb = tunnel.rss_kb()
        self.samples = 0
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop_flag.is_set():
            try:
                self.max_kb = max(self.max_kb, self.tunnel.rss_kb())
                self.samples += 1
            except (OSError, RuntimeError, ValueError):
                return
            self.stop_flag.wait(self.interval)

    def stop(self):
        self.stop_flag.set()
        self.thread.join(2)
        return self.max_kb


def public_route(target, host="127.0.0.1", **knobs):
    return dict(host=host, access="public", target=target, **knobs)


def route(access, target, host="127.0.0.1", **fields):
    return dict(host=host, access=access, target=target, **fields)


__all__ = [
    "public_route", "route",
    "LINE_RE", "LISTEN_RE", "READY", "RssSampler", "Transfer", "TunnelProcess", "binary",
    "clean_env", "echo_once", "expect_closed", "json_message", "run_cli", "wait_until",
]
