"""Test-side control of the stand-in gateway process (tests/gateway/gateway.py).

GatewayProcess starts the gateway on an ephemeral loopback port, learns the port
from its `LISTENING <port>` line, lets a test rewrite its routes while it runs (the
gateway re-reads them on every connection), reads its JSON-lines record, and stops
it (SIGTERM, then SIGKILL) on close().
"""

import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path

from services import wait_until

PYTHON = "/usr/bin/python3"
GATEWAY = Path(__file__).resolve().parent / "gateway.py"


def read_line(stream, timeout):
    """One line from a pipe, or TimeoutError; never blocks past `timeout`."""
    fd = stream.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no line within {timeout}s (got {buf!r})")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 1)
            if not chunk:
                raise EOFError(f"stream closed (got {buf!r})")
            buf += chunk
    return buf.decode()


class GatewayProcess:
    counter = 0

    def __init__(self, workdir, routes, *args, listen="127.0.0.1:0"):
        GatewayProcess.counter += 1
        n = GatewayProcess.counter
        self.workdir = Path(workdir)
        self.routes_path = self.workdir / f"gateway{n}-routes.json"
        self.record_path = self.workdir / f"gateway{n}-record.jsonl"
        self.log_path = self.workdir / f"gateway{n}-stderr.log"
        self.tls = {}
        self.set_routes(routes)
        self.record_path.touch()
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [PYTHON, str(GATEWAY), "--listen", listen, "--routes", str(self.routes_path),
             "--record", str(self.record_path), *map(str, args)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log_file,
        )
        try:
            line = read_line(self.proc.stdout, 15)
        except (TimeoutError, EOFError) as exc:
            self.close()
            raise RuntimeError(f"gateway did not start: {exc}; stderr: {self.stderr()}")
        assert line.startswith("LISTENING "), line
        self.port = int(line.split()[1])
        host = listen.rpartition(":")[0]
        self.host = host
        self.addr = f"{host}:{self.port}"

    def set_routes(self, routes):
        self.routes = routes
        self._write_routes()

    def set_tls(self, **tls):
        """Replace the TLS settings for the next connections (cert, key, client_ca,
        tickets, max_version; each falls back to the command line's); set_tls() goes back to the
        command line's."""
        self.tls = {k: str(v) if isinstance(v, Path) else v for k, v in tls.items()}
        self._write_routes()

    def _write_routes(self):
        tmp = self.routes_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"routes": self.routes, "tls": self.tls}, indent=1))
        os.replace(tmp, self.routes_path)

    def stderr(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def records(self, event=None):
        """The records written so far. The file is read while the gateway appends to
        it: a last line that does not parse yet is one caught mid-write and left for
        the next read; a bad line before it is an error."""
        with open(self.record_path, encoding="utf-8") as f:
            lines = [line for line in f if line.endswith("\n")]
        out = []
        for i, line in enumerate(lines):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if i == len(lines) - 1:
                    break
                raise
            if event is None or rec.get("event") == event:
                out.append(rec)
        return out

    def requests(self):
        return self.records("request")

    def wait_records(self, event, count, timeout=10, where=lambda r: True):
        """Wait until at least `count` records of `event` satisfy `where`; return them."""
        def enough():
            recs = [r for r in self.records(event) if where(r)]
            return recs if len(recs) >= count else None
        try:
            return wait_until(enough, timeout, message=f"{count} {event!r} records")
        except TimeoutError:
            raise TimeoutError(
                f"{count} {event!r} records not seen in {timeout}s; have: "
                f"{json.dumps(self.records(), indent=1)[-4000:]}\nstderr: {self.stderr()[-2000:]}"
            ) from None

    def closed_for(self, conn_id, timeout=10):
        return self.wait_records("closed", 1, timeout, where=lambda r: r["id"] == conn_id)[0]

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log_file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def make_certificate(workdir, name="localhost"):
    """A self-signed certificate for `name` and 127.0.0.1: (cert path, key path)."""
    workdir = Path(workdir)
    cert, key = workdir / f"{name}-cert.pem", workdir / f"{name}-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name},IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key
