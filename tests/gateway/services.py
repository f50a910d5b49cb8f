"""Small loopback TCP services that tests put behind the stand-in gateway.

Each service listens on an ephemeral loopback port (``.port``), serves every
connection in its own thread, and stops with ``close()`` (also a context manager).
Blocking sockets with timeouts keep every thread bounded in time.

- EchoServer: writes back what it reads (after an optional greeting); on EOF it
  half-closes and closes.
- SinkServer: reads until EOF and records (byte count, sha256) per connection.
- SlowSinkServer: the same, reading at most `rate` bytes a second through a small
  receive buffer, so that the backpressure reaches the gateway and the tunnel.
- SourceServer: sends N seeded random bytes, half-closes, drains until EOF, closes.
- ReplyAfterEOFServer: reads until EOF, then writes a reply computed from what it
  read (a summary line plus the input reversed), then closes.
- StubbornServer: reads until EOF, then never closes its side (until close()).
- HangServer: accepts and reads, never writes (a gateway that never answers).
"""

import hashlib
import random
import socket
import threading
import time

IO_TIMEOUT = 60.0


def random_bytes(n, seed):
    return random.Random(seed).randbytes(n)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def reply_after_eof(data):
    """What ReplyAfterEOFServer answers to `data`."""
    return f"got {len(data)} bytes sha256={sha256(data)}\n".encode() + data[::-1]


def wait_until(predicate, timeout, interval=0.01, message="condition"):
    """Poll `predicate` until it returns a true value or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class Service:
    def __init__(self, host="127.0.0.1"):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, 0))
        self.listener.listen(128)
        self.host = host
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.conns = []
        self.threads = []
        self.accepted = 0
        self.closed = False
        self.stopped = threading.Event()
        self.errors = []
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    @property
    def addr(self):
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def _accept_loop(self):
        while not self.closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            conn.settimeout(IO_TIMEOUT)
            with self.lock:
                if self.closed:
                    conn.close()
                    return
                self.accepted += 1
                index = self.accepted
                self.conns.append(conn)
                t = threading.Thread(target=self._run, args=(conn, index), daemon=True)
                self.threads.append(t)
                t.start()

    def _run(self, conn, index):
        try:
            self.serve(conn, index)
        except OSError as exc:
            if not self.closed:
                self.errors.append(f"#{index}: {exc!r}")
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def serve(self, conn, index):  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self):
        self.closed = True
        self.stopped.set()
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.conns)
            threads = list(self.threads)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in threads:
            t.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def drain_until_eof(conn):
    n = 0
    while True:
        data = conn.recv(65536)
        if not data:
            return n
        n += len(data)


class EchoServer(Service):
    def __init__(self, greeting=b"", host="127.0.0.1"):
        self.greeting = greeting
        self.bytes_echoed = 0
        super().__init__(host)

    def serve(self, conn, index):
        if self.greeting:
            conn.sendall(self.greeting)
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
            with self.lock:
                self.bytes_echoed += len(data)
        conn.shutdown(socket.SHUT_WR)


class SinkServer(Service):
    def __init__(self, host="127.0.0.1", rate=None, rcvbuf=None):
        self.results = []  # (index, nbytes, sha256 hex), in completion order
        self.received = 0  # live byte count, all connections
        self.rate = rate   # bytes a second at most, or None
        self.chunk = min(16384, rcvbuf) if rcvbuf else 65536
        super().__init__(host)
        if rcvbuf:
            # Set on the listener so that accepted sockets start with it (the
            # window scale is agreed at the SYN).
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)

    def serve(self, conn, index):
        h = hashlib.sha256()
        n = 0
        t0 = time.monotonic()
        while True:
            data = conn.recv(self.chunk)
            if not data:
                break
            h.update(data)
            n += len(data)
            with self.lock:
                self.received += len(data)
            if self.rate:
                ahead = n / self.rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        with self.lock:
            self.results.append((index, n, h.hexdigest()))
        conn.shutdown(socket.SHUT_WR)

    def wait_results(self, count, timeout):
        wait_until(lambda: len(self.results) >= count, timeout, message=f"{count} sink results")
        return list(self.results)


class SlowSinkServer(SinkServer):
    """A sink that reads `rate` bytes a second through a 64 KiB receive buffer."""

    def __init__(self, rate, host="127.0.0.1", rcvbuf=65536):
        super().__init__(host, rate=rate, rcvbuf=rcvbuf)


class SourceServer(Service):
    def __init__(self, size, seed=1, host="127.0.0.1"):
        self.data = random_bytes(size, seed)
        self.sha256 = sha256(self.data)
        self.sent = 0  # live byte count, all connections
        self.finished = 0
        super().__init__(host)

    def serve(self, conn, index):
        view = memoryview(self.data)
        off = 0
        while off < len(view):
            n = conn.send(view[off : off + 65536])
            off += n
            with self.lock:
                self.sent += n
        conn.shutdown(socket.SHUT_WR)
        with self.lock:
            self.finished += 1
        # Read until the peer's EOF so that closing never resets unread input.
        drain_until_eof(conn)


class ReplyAfterEOFServer(Service):
    def __init__(self, host="127.0.0.1"):
        self.inputs = []
        super().__init__(host)

    def serve(self, conn, index):
        chunks = []
        while True:
            data = conn.recv(65536)
            if not data:
                break
            chunks.append(data)
        data = b"".join(chunks)
        with self.lock:
            self.inputs.append(data)
        conn.sendall(reply_after_eof(data))
        conn.shutdown(socket.SHUT_WR)


class StubbornServer(Service):
    """Reads until EOF, then keeps its side open (never sends EOF) until close()."""

    def serve(self, conn, index):
        drain_until_eof(conn)
        self.stopped.wait()


class HangServer(Service):
    """Accepts, reads whatever comes, never answers."""

    def serve(self, conn, index):
        drain_until_eof(conn)


def refused_port(host="127.0.0.1"):
    """(socket, port): a port bound but not listening, so that connecting to it is
    refused for as long as the socket is kept (nothing else can take it meanwhile,
    as it could a port merely found free). Close the socket when done."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.bind((host, 0))
    return s, s.getsockname()[1]


def free_port(host="127.0.0.1"):
    """A port nothing listens on right now (bound then released)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
