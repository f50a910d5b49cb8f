"""A hostile "gateway": a raw TCP server that reads the upgrade request and answers
with whatever bytes a test chooses. No WebSocket library is involved: frames are
built and parsed here, byte by byte (RFC 6455 section 5.2).

HostileServer listens on an ephemeral loopback port and, for every connection,
reads the request head (up to its blank line), learns the Sec-WebSocket-Key, and
runs the current script (set_script) with a HostileConn. A script writes raw bytes
(conn.send), may end the connection (conn.close, conn.reset), or hand over to
serve_echo() to behave like a good gateway in front of an echo service. Whatever
the script leaves open is drained until the client's EOF (bounded in time), and
the bytes the client sent after its head are kept (conn.after_head), so that a test
can read the client's Close frame.

Every blocking call has a timeout; close() stops the server and every connection.
"""

import base64
import hashlib
import os
import re
import socket
import struct
import threading
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

IO_TIMEOUT = 20.0
MAX_REQUEST_HEAD = 65536


def accept_for(key):
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (str)."""
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def frame(opcode, payload=b"", fin=True, rsv=0, mask=None, length=None):
    """One frame's bytes. `length` announces a payload length other than the
    payload's own (the payload bytes given are still appended); `mask` is a 4-byte
    key, or None for an unmasked (server) frame."""
    n = len(payload) if length is None else length
    head = bytearray([(0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0xF)])
    mbit = 0x80 if mask is not None else 0
    if n < 126:
        head.append(mbit | n)
    elif n < 65536:
        head.append(mbit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(mbit | 127)
        head += struct.pack("!Q", n)
    if mask is not None:
        head += mask
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes(head) + payload


def binary(payload, **kw):
    return frame(OP_BINARY, payload, **kw)


def close_frame(code=None, reason=b""):
    payload = b"" if code is None else struct.pack("!H", code) + reason
    return frame(OP_CLOSE, payload)


def response_101(key=None, accept=None, extra=b""):
    """A good 101 head for `key` (or with the given accept value)."""
    if accept is None:
        accept = accept_for(key)
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept.encode() + b"\r\n" + extra + b"\r\n")


class ClientFrame:
    def __init__(self, fin, opcode, payload, masked):
        self.fin, self.opcode, self.payload, self.masked = fin, opcode, payload, masked

    @property
    def close_code(self):
        if self.opcode != OP_CLOSE:
            return None
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else 1005

    def __repr__(self):
        return f"ClientFrame(op={self.opcode:#x}, fin={self.fin}, len={len(self.payload)})"


def parse_frames(data):
    """(complete frames, bytes left over) from a client's byte stream."""
    frames = []
    off = 0
    while True:
        if len(data) - off < 2:
            break
        b0, b1 = data[off], data[off + 1]
        n = b1 & 0x7F
        pos = off + 2
        if n == 126:
            if len(data) - pos < 2:
                break
            n = struct.unpack_from("!H", data, pos)[0]
            pos += 2
        elif n == 127:
            if len(data) - pos < 8:
                break
            n = struct.unpack_from("!Q", data, pos)[0]
            pos += 8
        key = None
        if b1 & 0x80:
            if len(data) - pos < 4:
                break
            key = bytes(data[pos:pos + 4])
            pos += 4
        if len(data) - pos < n:
            break
        payload = bytes(data[pos:pos + n])
        if key is not None:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        frames.append(ClientFrame(bool(b0 & 0x80), b0 & 0xF, payload, key is not None))
        off = pos + n
    return frames, bytes(data[off:])


class HostileConn:
    """One connection from the tunnel, as a script sees it."""

    def __init__(self, server, sock, index):
        self.server = server
        self.sock = sock
        self.index = index
        self.head = b""
        self.key = None
        self.after_head = bytearray()  # what the client sent after its request head
        self.closed = False
        self.peer_eof_at = None
        self.peer_error = None
        self.send_error = None
        self.finished = threading.Event()
        self.seen = []  # the client's frames, as serve_echo/echo_frames parsed them

    def send(self, data):
        """Writes `data` (a client that has gone may make this fail: recorded)."""
        try:
            self.sock.sendall(data)
            return True
        except OSError as exc:
            self.send_error = exc
            return False

    def recv_some(self, timeout):
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return None
        if chunk:
            self.after_head += chunk
        return chunk

    def close(self):
        """A clean end: FIN after what was sent."""
        if not self.closed:
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    def reset(self):
        """A TCP reset (SO_LINGER 0)."""
        if not self.closed:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            self.close()

    def client_frames(self):
        return parse_frames(self.after_head)[0]

    def client_close_code(self):
        for f in self.client_frames():
            if f.opcode == OP_CLOSE:
                return f.close_code
        return None


class HostileServer:
    def __init__(self, script=None, host="127.0.0.1"):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, 0))
        self.listener.listen(128)
        self.host = host
        self.port = self.listener.getsockname()[1]
        self.script = script or serve_echo
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.conns = []
        self.threads = []
        self.errors = []
        self.stopping = False
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    @property
    def addr(self):
        return f"{self.host}:{self.port}"

    def set_script(self, script):
        self.script = script

    def _accept_loop(self):
        while not self.stopping:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.cond:
                if self.stopping:
                    sock.close()
                    return
                conn = HostileConn(self, sock, len(self.conns) + 1)
                self.conns.append(conn)
                script = self.script
                t = threading.Thread(target=self._serve, args=(conn, script), daemon=True)
                self.threads.append(t)
                self.cond.notify_all()
            t.start()

    def _read_head(self, conn):
        buf = bytearray()
        deadline = time.monotonic() + IO_TIMEOUT
        conn.sock.settimeout(1.0)
        while b"\r\n\r\n" not in buf:
            if len(buf) > MAX_REQUEST_HEAD or time.monotonic() > deadline or self.stopping:
                return False
            try:
                chunk = conn.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                return False
            buf += chunk
        end = buf.index(b"\r\n\r\n") + 4
        conn.head = bytes(buf[:end])
        conn.after_head += buf[end:]
        for line in conn.head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                conn.key = value.strip().decode()
        return True

    def _serve(self, conn, script):
        try:
            if self._read_head(conn):
                script(conn)
            if not conn.closed:
                self._drain(conn)
        except OSError as exc:
            if not self.stopping:
                conn.peer_error = exc
        except Exception as exc:  # noqa: BLE001 - a script bug must show up in the test
            self.errors.append(f"#{conn.index}: {exc!r}")
        finally:
            conn.close()
            conn.finished.set()
            with self.cond:
                self.cond.notify_all()

    def _drain(self, conn):
        """Reads until the client's EOF or reset (at most IO_TIMEOUT)."""
        deadline = time.monotonic() + IO_TIMEOUT
        while time.monotonic() < deadline and not self.stopping and not conn.closed:
            try:
                chunk = conn.recv_some(0.5)
            except OSError as exc:
                conn.peer_error = exc
                return
            if chunk is None:
                continue
            if not chunk:
                conn.peer_eof_at = time.monotonic()
                return

    def wait_conns(self, count, timeout=10):
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.conns) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{count} connections not made within {timeout}s "
                                         f"(have {len(self.conns)})")
                self.cond.wait(left)
            return self.conns[count - 1]

    def last(self):
        with self.lock:
            return self.conns[-1] if self.conns else None

    def close(self):
        self.stopping = True
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            conns, threads = list(self.conns), list(self.threads)
        for c in conns:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in threads:
            t.join(5)
        for c in conns:
            c.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- finding a quiet tunnel's port ---------------------------------------------------

LISTEN_LINE = re.compile(r"TCP tunnel listening on 127\.0\.0\.1:(\d+) ")


def listening_port(pid):
    """The port a process listens on, from /proc/PID/net/tcp and its descriptors."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    with open(f"/proc/{pid}/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                return int(fields[1].split(":")[1], 16)
    return None


def wait_listening(t, timeout=10):
    """The port, from the listening line or, at error and warn where that line is not
    printed, from the process's listening socket."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with t.cond:
            for line in t.lines:
                m = LISTEN_LINE.search(line)
                if m:
                    return int(m.group(1))
        if t.proc.poll() is not None:
            break
        port = listening_port(t.pid)
        if port:
            return port
        time.sleep(0.02)
    raise AssertionError(f"the tunnel did not listen; stderr:\n{t.text()}")


# --- scripts ----------------------------------------------------------------------

def serve_echo(conn, greeting=b""):
    """A good gateway in front of an echo service: 101, then every binary message
    comes back as a binary frame; Ping is answered; a Close is answered with the
    same code and ends the connection."""
    if not conn.send(response_101(conn.key) + (binary(greeting) if greeting else b"")):
        return
    echo_frames(conn)


def echo_frames(conn, already=b""):
    pending = bytearray(already) + conn.after_head
    conn.after_head = bytearray()
    deadline = time.monotonic() + IO_TIMEOUT
    while time.monotonic() < deadline and not conn.server.stopping:
        frames, rest = parse_frames(pending)
        conn.seen += frames
        for f in frames:
            if f.opcode in (OP_BINARY, OP_CONT, OP_TEXT) and f.payload:
                conn.send(binary(f.payload))
            elif f.opcode == OP_PING:
                conn.send(frame(OP_PONG, f.payload))
            elif f.opcode == OP_CLOSE:
                conn.send(close_frame(f.close_code if f.close_code != 1005 else None))
                conn.close()
                return
        pending = bytearray(rest)
        conn.sock.settimeout(0.5)
        try:
            chunk = conn.sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return
        if not chunk:
            conn.close()
            return
        pending += chunk
