"""Real programs for the everyday-hops tests: an OpenSSH server, tinyproxy, and a
`tcp-tunnel --stdio` run driven through pipes.

Sshd starts `/usr/sbin/sshd -D -e -f CONFIG` on a free loopback port with its own host
key and an authorized key made for the test (Debian `openssh-server`); ssh_args()
builds an `ssh` command line (Debian `openssh-client`) that reaches it through a
ProxyCommand. Tinyproxy starts `tinyproxy -d -c CONFIG` (Debian `tinyproxy`) on a
free loopback port, with its log in the test's directory, optionally demanding Basic
credentials; TlsFront puts `socat OPENSSL-LISTEN` (Debian `socat`) in front of it, which
makes it an https:// proxy. StdioRun runs the binary with --stdio, feeds its standard input from a
thread and hashes its standard output, with deadlines everywhere.

Each class stops what it started on close() (SIGTERM, then SIGKILL) and waits for
readiness by polling, never by sleeping a fixed time.
"""

import hashlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from helpers import binary, clean_env
from services import free_port, wait_until

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH = shutil.which("ssh") or "/usr/bin/ssh"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
TINYPROXY = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
SOCAT = shutil.which("socat") or "/usr/bin/socat"
PYTHON = "/usr/bin/python3"


def have(path):
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _stop(proc, timeout=5):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def _listening(host, port):
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


# --- OpenSSH server ------------------------------------------------------------------

SSHD_CONFIG = """\
Port {port}
ListenAddress {host}
HostKey {dir}/host_key
AuthorizedKeysFile {dir}/authorized_keys
PidFile none
UsePAM no
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding no
X11Forwarding no
PrintMotd no
LogLevel VERBOSE
"""


class Sshd:
    """An sshd of its own on a free loopback port; .port, .user, .client_key."""

    def __init__(self, workdir, host="127.0.0.1"):
        self.dir = Path(workdir) / "sshd"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        self.proc = None
        for name in ("host_key", "client_key"):
            subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", f"test-{name}",
                            "-f", str(self.dir / name)], check=True, capture_output=True, timeout=30)
        self.client_key = self.dir / "client_key"
        (self.dir / "authorized_keys").write_bytes((self.dir / "client_key.pub").read_bytes())
        if os.geteuid() == 0:
            # sshd started as root insists on its privilege separation directory,
            # which Debian's service unit makes at boot (RuntimeDirectory=sshd).
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.log_path = self.dir / "sshd.log"
        last = ""
        for _ in range(5):  # a free port may be taken between choosing and binding it
            self.port = free_port(host)
            config = self.dir / "sshd_config"
            config.write_text(SSHD_CONFIG.format(port=self.port, host=host, dir=self.dir))
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                             stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            ok = wait_until(lambda: self.proc.poll() is not None
                            or "Server listening on" in self.log(), 15,
                            message="sshd to listen")
            if ok and self.proc.poll() is None:
                return
            last = self.log()
            _stop(self.proc)
            if "Address already in use" not in last and "Cannot bind" not in last:
                break
        raise RuntimeError(f"sshd did not start: {last}")

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def ssh_args(self, proxy_command, remote_command, user_host=None, port=22):
        """ssh through `proxy_command` to this server, running `remote_command`."""
        return [SSH, "-F", "/dev/null",
                "-o", f"ProxyCommand={proxy_command}",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
                "-o", "ConnectTimeout=20",
                "-i", str(self.client_key), "-p", str(port),
                user_host or f"{self.user}@whatever", remote_command]

    def close(self):
        _stop(self.proc)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# A ProxyCommand wrapper that records the tunnel's exit status: ssh runs the
# ProxyCommand with `exec` and sends it SIGHUP when it is done with it, so the
# wrapper passes SIGHUP (and SIGTERM/SIGINT) on to the tunnel, as if ssh had sent
# it there, and writes the tunnel's status (negative: killed by that signal).
RC_WRAPPER = r'''
import signal, subprocess, sys
rc_path, argv = sys.argv[1], sys.argv[2:]
child = subprocess.Popen(argv)
got = []
def forward(signum, frame):
    got.append(signum)
    try:
        child.send_signal(signum)
    except ProcessLookupError:
        pass
for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
    signal.signal(s, forward)
rc = child.wait()
with open(rc_path, "w") as f:
    f.write(f"{rc} {' '.join(str(s) for s in got)}\n")
'''


def write_rc_wrapper(workdir):
    path = Path(workdir) / "rc_wrapper.py"
    path.write_text(RC_WRAPPER)
    return path


def read_rc(path, timeout=10):
    """(exit status, [signals forwarded]) written by RC_WRAPPER."""
    wait_until(lambda: path.exists() and path.read_text().endswith("\n"), timeout,
               message=f"{path} to be written")
    fields = path.read_text().split()
    return int(fields[0]), [int(s) for s in fields[1:]]


# --- tinyproxy -----------------------------------------------------------------------

TINYPROXY_CONFIG = """\
Port {port}
Listen 127.0.0.1
Allow 127.0.0.1
Timeout 60
MaxClients 100
LogFile "{dir}/tinyproxy.log"
LogLevel Info
PidFile "{dir}/tinyproxy.pid"
{extra}"""


class Tinyproxy:
    """tinyproxy in the foreground on a free loopback port; CONNECT to any port is
    allowed (no ConnectPort lines); `basic_auth=("user", "pass")` demands credentials.
    As root it runs as root (there is no User line), which it only warns about."""

    count = 0

    def __init__(self, workdir, basic_auth=None):
        Tinyproxy.count += 1
        self.dir = Path(workdir) / f"tinyproxy{Tinyproxy.count}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "tinyproxy.log"
        self.proc = None
        extra = f"BasicAuth {basic_auth[0]} {basic_auth[1]}\n" if basic_auth else ""
        last = ""
        for _ in range(5):
            self.port = free_port()
            config = self.dir / "tinyproxy.conf"
            config.write_text(TINYPROXY_CONFIG.format(port=self.port, dir=self.dir, extra=extra))
            self.stderr_path = self.dir / "stderr.log"
            with open(self.stderr_path, "wb") as err:
                self.proc = subprocess.Popen([TINYPROXY, "-d", "-c", str(config)],
                                             stdin=subprocess.DEVNULL, stdout=err, stderr=err)
            ok = wait_until(lambda: self.proc.poll() is not None
                            or "Accepting connections" in self.log(), 15,
                            message="tinyproxy to listen")
            if ok and self.proc.poll() is None and _listening("127.0.0.1", self.port):
                return
            last = self.log() + self.stderr_path.read_text(errors="replace")
            _stop(self.proc)
        raise RuntimeError(f"tinyproxy did not start: {last}")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def connects(self):
        """The targets of the CONNECT requests it logged, in order."""
        return re.findall(r"Request \(file descriptor \d+\): CONNECT (\S+) HTTP/", self.log())

    def wait_connects(self, count, timeout=10):
        try:
            return wait_until(lambda: self.connects() if len(self.connects()) >= count else None,
                              timeout, message=f"{count} CONNECT lines")
        except TimeoutError:
            raise AssertionError(f"{count} CONNECT lines not logged in {timeout}s:\n"
                                 f"{self.log()[-3000:]}") from None

    def close(self):
        _stop(self.proc)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- a TLS front (an https:// proxy out of tinyproxy) -----------------------------------

class TlsFront:
    """socat on a free loopback port: TLS with `cert` and `key`, each connection relayed
    in clear to 127.0.0.1:target_port (with `fork`, any number of them). Its log (-d -d)
    has a line per accepted connection and per failed handshake."""

    count = 0

    def __init__(self, workdir, target_port, cert, key):
        TlsFront.count += 1
        self.dir = Path(workdir) / f"tlsfront{TlsFront.count}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "socat.log"
        self.proc = None
        for _ in range(5):
            self.port = free_port()
            with open(self.log_path, "wb") as err:
                self.proc = subprocess.Popen(
                    [SOCAT, "-d", "-d",
                     f"OPENSSL-LISTEN:{self.port},bind=127.0.0.1,reuseaddr,fork,cert={cert},key={key},verify=0",
                     f"TCP:127.0.0.1:{target_port}"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
            ok = wait_until(lambda: self.proc.poll() is not None or "listening on" in self.log(), 15,
                            message="socat to listen")
            if ok and self.proc.poll() is None:
                return
            _stop(self.proc)
        raise RuntimeError(f"socat did not start: {self.log()}")

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def accepted(self):
        return len(re.findall(r"accepting connection from", self.log()))

    def close(self):
        _stop(self.proc)


# --- --stdio runs --------------------------------------------------------------------

class StdioRun:
    """`otoroshictl tcp-tunnel --stdio ARGS` with pipes: writes `data` to its standard
    input (then closes it unless keep_stdin), hashes what comes out of its standard
    output, and collects its standard error."""

    def __init__(self, args, env, data=b"", keep_stdin=False, chunk=65536):
        self.args = [binary(), "tcp-tunnel", "--stdio", *map(str, args)]
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self.data = data
        self.keep_stdin = keep_stdin
        self.chunk = chunk
        self.sha = hashlib.sha256()
        self.nout = 0
        self.out_head = bytearray()  # the first KiB, for failure messages
        self.stderr = b""
        self.write_error = None
        self.stdout_eof_at = None
        self.t0 = time.monotonic()
        self.threads = [threading.Thread(target=f, daemon=True)
                        for f in (self._write, self._read, self._read_err)]
        for t in self.threads:
            t.start()

    def _write(self):
        try:
            view = memoryview(self.data)
            for off in range(0, len(view), self.chunk):
                self.proc.stdin.write(view[off:off + self.chunk])
                self.proc.stdin.flush()
            if not self.keep_stdin:
                self.proc.stdin.close()
        except (BrokenPipeError, OSError, ValueError) as exc:
            self.write_error = exc

    def _read(self):
        while True:
            chunk = self.proc.stdout.read1(262144)
            if not chunk:
                break
            self.nout += len(chunk)
            self.sha.update(chunk)
            if len(self.out_head) < 1024:
                self.out_head += chunk[:1024 - len(self.out_head)]
        self.stdout_eof_at = time.monotonic()

    def _read_err(self):
        self.stderr = self.proc.stderr.read()

    @property
    def pid(self):
        return self.proc.pid

    @property
    def digest(self):
        return self.sha.hexdigest()

    def err_text(self):
        return self.stderr.decode("utf-8", "replace")

    def close_stdin(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def wait(self, timeout):
        """The exit status, after standard output and error reached EOF."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"--stdio run still going after {timeout}s; out {self.nout} bytes; "
                                 f"stderr so far: {self.stderr!r}") from None
        for t in self.threads[1:]:
            t.join(5)
        self.threads[0].join(1)
        return rc

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for t in self.threads:
            t.join(2)
        for s in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                s.close()
            except (OSError, ValueError):
                pass


def secret_free_env(env):
    """`env` without any OTOROSHI_* credential variable."""
    return {k: v for k, v in env.items() if not k.startswith("OTOROSHI_")}


def env_for(home, level="info", extra=None):
    """clean_env() (no proxies, HOME/XDG_CONFIG_HOME under `home`, a log level; None:
    OTOROSHICTL unset) without OTOROSHI_* credentials, plus `extra`."""
    env = secret_free_env(clean_env(home, level))
    env.update(extra or {})
    return env


# --- fixtures (imported by the test modules) ------------------------------------------

@pytest.fixture
def sshd(tmp_path):
    if not (have(SSHD) and have(SSH) and have(SSH_KEYGEN)):
        pytest.skip("needs openssh-server and openssh-client (sshd, ssh, ssh-keygen)")
    s = Sshd(tmp_path)
    yield s
    s.close()


@pytest.fixture
def tls_front(tmp_path):
    """tls_front(target_port, cert, key) -> a started TlsFront, stopped on teardown."""
    if not have(SOCAT):
        pytest.skip("needs socat")
    made = []

    def make(target_port, cert, key):
        f = TlsFront(tmp_path, target_port, cert, key)
        made.append(f)
        return f

    yield make
    for f in reversed(made):
        f.close()


@pytest.fixture
def tinyproxy(tmp_path):
    """tinyproxy(basic_auth=None) -> a started Tinyproxy, stopped on teardown."""
    if not have(TINYPROXY):
        pytest.skip("needs tinyproxy")
    made = []

    def make(**kw):
        p = Tinyproxy(tmp_path, **kw)
        made.append(p)
        return p

    yield make
    for p in reversed(made):
        p.close()


@pytest.fixture
def stdio(home):
    """stdio(args, data=b"", level=None, env=None, keep_stdin=False) -> StdioRun."""
    made = []

    def make(args, data=b"", level=None, env=None, keep_stdin=False):
        r = StdioRun(args, env_for(home, level, env), data=data, keep_stdin=keep_stdin)
        made.append(r)
        return r

    yield make
    for r in reversed(made):
        r.close()


__all__ = ["PYTHON", "SSH", "SSHD", "TINYPROXY", "Sshd", "StdioRun", "Tinyproxy", "env_for",
           "have", "read_rc", "secret_free_env", "sshd", "stdio", "tinyproxy", "write_rc_wrapper"]
