"""Defects of the tunnel's former core, each with the test that guards it: standard
output on a file with --stdio (the stdio pair was freed while its handle's close was
pending), a handshake that hangs at any step (the message blamed the upgrade
whatever hung), and the credential's copies left in memory once written (wipes the
compiler removed, pooled chunks and TLS plaintext kept as they were)."""

import base64
import re
import socket
import subprocess
import threading
import time

import pytest

import sanitizer
from helpers import binary, clean_env, public_route, route
from pki import Pki

PUBLIC = ["--access-type", "public"]


# --- --stdio with a file on standard output ---------------------------------------------------

@pytest.mark.parametrize("where", ["stdout-file", "stdin-file", "stdout-devnull"])
def test_stdio_with_a_file_is_refused_cleanly(home, tmp_path, where):
    # (sleep 1) | otoroshictl tcp-tunnel --stdio ... > out.file
    out_file = tmp_path / "out.file"
    in_file = tmp_path / "in.file"
    in_file.write_bytes(b"some input\n")
    args = [binary(), "tcp-tunnel", "--stdio", "--host", "127.0.0.1:9", *PUBLIC]
    stdout = open(out_file, "wb") if where == "stdout-file" else (
        open("/dev/null", "wb") if where == "stdout-devnull" else subprocess.PIPE)
    stdin = open(in_file, "rb") if where == "stdin-file" else subprocess.PIPE
    try:
        p = subprocess.Popen(args, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                             env=clean_env(home))
        try:
            _, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    finally:
        for f in (stdin, stdout):
            if f is not subprocess.PIPE:
                f.close()
    err = err.decode()
    assert p.returncode == 1, err
    assert "--stdio needs pipes, sockets or a terminal on standard input and output" in err, err
    assert "use a pipe" in err, err
    report = sanitizer.valgrind_report(p.pid) or sanitizer.find_report(err)
    assert report is None, report


# --- a handshake that hangs names the step ------------------------------------------------------

class Silent:
    """Accepts connections and reads what comes, never answering."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            c.settimeout(0.2)
            self.conns.append(c)
            threading.Thread(target=self._drain, args=(c,), daemon=True).start()

    def _drain(self, c):
        while not self.stop:
            try:
                if not c.recv(65536):
                    return
            except socket.timeout:
                continue
            except OSError:
                return

    def close(self):
        self.stop = True
        self.thread.join(5)
        for c in self.conns:
            c.close()
        self.sock.close()


class Unreachable:
    """A listening socket whose accept queue is full and never served: a connect to it
    stays in SYN_SENT, as through a firewall that drops packets."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fill = []
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            self.fill.append(c)
        # The queue is full once a plain connect no longer completes.
        probe = socket.socket()
        probe.settimeout(0.5)
        try:
            probe.connect(("127.0.0.1", self.port))
            full = False
        except socket.timeout:
            full = True
        finally:
            probe.close()
        if not full:
            self.close()
            pytest.skip("cannot make a connect hang on this loopback")

    def close(self):
        for c in self.fill:
            c.close()
        self.sock.close()


@pytest.fixture
def hung():
    made = []

    def make(kind):
        h = kind()
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def test_each_hung_step_is_named(tunnel, hung, tmp_path):
    silent_gw = hung(Silent)
    silent_proxy = hung(Silent)
    silent_tls = hung(Silent)
    silent_proxy_tls = hung(Silent)
    unreachable = hung(Unreachable)
    unreachable_proxy = hung(Unreachable)
    cases = [
        ("the upgrade", tunnel(f"127.0.0.1:{silent_gw.port}", *PUBLIC),
         rf"Otoroshi at 127\.0\.0\.1:{silent_gw.port} timed out: no answer to the WebSocket upgrade "
         r"within 10 s"),
        ("the CONNECT", tunnel("127.0.0.1:9", *PUBLIC, "--proxy", f"http://127.0.0.1:{silent_proxy.port}"),
         rf"the proxy 127\.0\.0\.1:{silent_proxy.port} did not answer CONNECT to 127\.0\.0\.1:9 within 10 s"),
        ("TLS to the gateway", tunnel(f"127.0.0.1:{silent_tls.port}", *PUBLIC, "--tls", "--insecure"),
         rf"the TLS handshake with Otoroshi at 127\.0\.0\.1:{silent_tls.port} did not finish within 10 s"),
        ("TLS to the proxy", tunnel("127.0.0.1:9", *PUBLIC, "--proxy",
                                    f"https://127.0.0.1:{silent_proxy_tls.port}", "--proxy-insecure"),
         r"the TLS handshake with the proxy 127\.0\.0\.1 did not finish within 10 s"),
        ("the TCP connect", tunnel(f"127.0.0.1:{unreachable.port}", *PUBLIC),
         rf"the TCP connection to Otoroshi at 127\.0\.0\.1:{unreachable.port} did not open within 10 s"),
        ("the TCP connect to the proxy", tunnel("127.0.0.1:9", *PUBLIC, "--proxy",
                                                f"http://127.0.0.1:{unreachable_proxy.port}"),
         r"the TCP connection to the proxy 127\.0\.0\.1 did not open within 10 s"),
    ]
    socks = []
    for _, t, _ in cases:
        s = t.connect()
        s.settimeout(30)
        socks.append(s)
    started = time.monotonic()
    try:
        for (what, t, pattern), s in zip(cases, socks):
            line = t.wait_for(r"^\[ERROR ", 30).string
            assert re.search(pattern, line), f"{what}: {line}"
            # The local client is told: its connection closes with the tunnel.
            assert s.recv(1) == b"", what
        # All at once: the 10 s ran in parallel.
        assert time.monotonic() - started < 28
    finally:
        for s in socks:
            s.close()


# --- no copy of the credential is left in memory --------------------------------------------------

HUGE_MAPPING = 1 << 34
PIECE = 16 << 20


def process_memory_has(pid, needles):
    """Which of `needles` (bytes) are anywhere in the writable memory of `pid` (as root,
    or as the parent of a child process: /proc/PID/mem)."""
    found = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            addr, perms = fields[0], fields[1]
            if "r" not in perms or "w" not in perms:
                continue
            name = fields[5] if len(fields) > 5 else ""
            if name.startswith("[v"):  # [vvar], [vsyscall]
                continue
            start, end = (int(x, 16) for x in addr.split("-"))
            if end - start > HUGE_MAPPING:
                continue  # a sanitizer's shadow: reserved, not the heap
            # In pieces, overlapping by a needle's length, so that a needle
            # across two pieces is still seen.
            overlap = max(len(n) for n in needles) - 1
            pos = start
            while pos < end:
                try:
                    mem.seek(pos)
                    data = mem.read(min(PIECE + overlap, end - pos))
                except OSError:
                    break
                for n in needles:
                    if n in data:
                        found.add(n)
                pos += PIECE
    return found


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    p = Pki(tmp_path_factory.mktemp("core-pki"))
    ca = p.ca("Core CA")
    return ca, ca.issue("core-gateway", dns=["localhost"], ips=["127.0.0.1"], cn="localhost")


@pytest.mark.skipif(sanitizer.under_valgrind(), reason="valgrind's memory is not the process's alone")
@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
@pytest.mark.parametrize("access", ["apikey", "bearer"])
def test_request_head_is_wiped_once_written(gateway, tunnel, echo, certs, tls, access):
    ca, leaf = certs
    client_id, secret, token = "core-id", "core-secret-4c1f0e", "core-token-9b7d2a"
    host = "localhost" if tls else "127.0.0.1"
    if access == "apikey":
        r = route("apikey", echo.addr, host=host, apikeys=[f"{client_id}:{secret}"])
        env = dict(OTOROSHI_APIKEY_CLIENT_ID=client_id, OTOROSHI_APIKEY_CLIENT_SECRET=secret)
        args = []
        # The credential as the request head carries it, and nowhere else.
        header = b"Authorization: Basic " + base64.b64encode(f"{client_id}:{secret}".encode())
    else:
        r = route("bearer", echo.addr, host=host, tokens=[token])
        env = {}
        args = ["--access-type", "bearer", "--bearer-token", token]
        header = b"Authorization: Bearer " + token.encode()
    gw_args = ["--tls-cert", leaf.cert, "--tls-key", leaf.key] if tls else []
    g = gateway([r], *gw_args)
    targs = ["--tls", "--ca-cert", ca.cert] if tls else []
    t = tunnel(f"{host}:{g.port}", *args, *targs, env=env)
    with t.connect() as s:
        s.settimeout(10)
        s.sendall(b"ping\n")
        assert s.recv(64) == b"ping\n"
        # The head is written and answered: no copy of it is left while the tunnel
        # carries data...
        assert g.wait_records("request", 1)[0]["status"] == 101
        assert header not in process_memory_has(t.proc.pid, [header]), "while the tunnel is open"
    # ... nor once it has ended.
    t.wait_for(r"Tunnel from .* closed after", 10)
    assert header not in process_memory_has(t.proc.pid, [header]), "after the tunnel ended"
    # The scan itself sees what is there: the secret the configuration holds.
    raw = secret.encode() if access == "apikey" else token.encode()
    assert raw in process_memory_has(t.proc.pid, [raw])
