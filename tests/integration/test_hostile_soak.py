"""A soak: 200 tunnels kept busy for HOSTILE_SOAK_SECONDS (default 30) through the
stand-in gateway to an echo service, each local client doing, in a seeded random
order (HOSTILE_SOAK_SEED), whole exchanges ended by a half-close, interactive
exchanges ended by a close, resets in the middle of a transfer, connections closed
at once or abandoned with data unread, and idle pauses.

Afterwards: every completed exchange came back byte for byte (SHA-256 on the client,
and the gateway saw the same bytes), no descriptor leaked (/proc/PID/fd back to its
idle count), resident memory returned near its idle level, the process never said
ERROR, and it still serves.
"""

import hashlib
import os
import random
import select
import socket
import struct
import threading
import time

import pytest

import sanitizer  # noqa: F401  (installs the sanitizer-report check)
from helpers import echo_once, public_route, wait_until
from hostile import wait_listening

SOAK_SECONDS = float(os.environ.get("HOSTILE_SOAK_SECONDS", "30"))
SEED = int(os.environ.get("HOSTILE_SOAK_SEED", "6"))
TUNNELS = 200
ROUNDS = 3
ROUND_GROWTH_KB = 8 * 1024  # a leak of 1 KiB per exchange shows; allocator noise does not
EXCHANGE_TIMEOUT = 60.0
# Resident memory after the tunnels close, above the idle level measured after a
# warm-up: room for the allocator keeping some freed memory, far below what 200
# tunnels' queues (up to 512 KiB each way) would hold if anything were kept; and at
# least half of what the soak took at its peak must have been given back.
RSS_MARGIN_KB = int(os.environ.get("HOSTILE_SOAK_RSS_MARGIN_KB", str(8 * 1024)))


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def duplex(sock, data, half_close, deadline, keep_reading=True):
    """Sends `data` while reading, then (if asked) SHUT_WR, and reads until EOF.
    Returns what was read."""
    sock.setblocking(False)
    view = memoryview(data)
    off = 0
    shut = False
    got = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"exchange not done: sent {off}/{len(data)}, got {len(got)}")
        want_write = off < len(view) or (half_close and not shut)
        r, w, _ = select.select([sock], [sock] if want_write else [], [], min(left, 1.0))
        if w:
            if off < len(view):
                try:
                    off += sock.send(view[off:off + 262144])
                except BlockingIOError:
                    pass
            elif half_close and not shut:
                sock.shutdown(socket.SHUT_WR)
                shut = True
        if r:
            try:
                chunk = sock.recv(262144)
            except BlockingIOError:
                continue
            if not chunk:
                return bytes(got)
            got += chunk
            if not keep_reading and not want_write:
                return bytes(got)


class Worker:
    def __init__(self, index, port, deadline):
        self.index = index
        self.port = port
        self.deadline = deadline
        self.rng = random.Random(SEED * 1000 + index)
        self.completed = []  # sha256 hex of what was sent, for completed exchanges
        self.counts = {}
        self.errors = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def payload(self, big=False):
        n = self.rng.choice([0, 1, 100, 4096, 30000, 65536, 70000, 200000]) if not big else \
            self.rng.randint(300000, 1 << 20)
        return self.rng.randbytes(n)

    def connect(self):
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def run(self):
        while time.monotonic() < self.deadline:
            what = self.rng.choices(
                ["half_close", "interactive", "reset", "close_at_once", "abandon", "idle"],
                [40, 20, 15, 10, 10, 5])[0]
            self.counts[what] = self.counts.get(what, 0) + 1
            try:
                getattr(self, what)()
            except Exception as exc:  # noqa: BLE001 - collected, reported by the test
                self.errors.append(f"worker {self.index} {what}: {exc!r}")
                if len(self.errors) > 5:
                    return

    def half_close(self):
        data = self.payload(big=self.rng.random() < 0.05)
        with self.connect() as s:
            got = duplex(s, data, True, time.monotonic() + EXCHANGE_TIMEOUT)
        if got != data:
            raise AssertionError(f"echo of {len(data)} bytes came back as {len(got)} bytes, "
                                 f"equal prefix: {got == data[:len(got)]}")
        self.completed.append(hashlib.sha256(data).hexdigest())

    def interactive(self):
        sent = bytearray()
        with self.connect() as s:
            s.settimeout(EXCHANGE_TIMEOUT)
            for _ in range(self.rng.randint(1, 5)):
                chunk = self.rng.randbytes(self.rng.randint(1, 20000))
                s.sendall(chunk)
                got = b""
                while len(got) < len(chunk):
                    part = s.recv(len(chunk) - len(got))
                    if not part:
                        raise AssertionError(f"EOF after {len(got)} of {len(chunk)} echoed bytes")
                    got += part
                if got != chunk:
                    raise AssertionError("interactive echo differs")
                sent += chunk
        self.completed.append(hashlib.sha256(bytes(sent)).hexdigest())

    def reset(self):
        s = self.connect()
        try:
            s.sendall(self.payload())
            s.settimeout(0.5)
            try:
                s.recv(self.rng.randint(1, 65536))
            except (socket.timeout, OSError):
                pass
        finally:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()

    def close_at_once(self):
        s = self.connect()
        if self.rng.random() < 0.5:
            try:
                s.sendall(b"x" * self.rng.randint(1, 1000))
            except OSError:
                pass
        s.close()

    def abandon(self):
        # Half-close, read a little, close with the rest of the echo unread.
        data = self.payload()
        with self.connect() as s:
            duplex(s, data[: len(data) // 2], True, time.monotonic() + EXCHANGE_TIMEOUT,
                   keep_reading=False)

    def idle(self):
        with self.connect() as s:
            time.sleep(self.rng.uniform(0.05, 0.8))
            s.settimeout(EXCHANGE_TIMEOUT)
            assert echo_once(s, b"after a pause") == b"after a pause"
            sent = b"after a pause"
        self.completed.append(hashlib.sha256(sent).hexdigest())


@pytest.mark.long
def test_soak_200_tunnels(gateway, tunnel, echo):
    g = gateway([public_route(echo.addr)])
    t = tunnel(g, "--access-type", "public", level="warn", wait_ready=False)
    t.port = wait_listening(t)
    # Warm up (the first tunnel's one-time allocations), then the idle levels.
    for _ in range(3):
        with t.connect() as s:
            assert echo_once(s, b"warm-up") == b"warm-up"
    wait_until(lambda: len(g.records("closed")) >= 3, 10, message="warm-up closed")
    time.sleep(0.2)
    idle_fds = fds(t.pid)
    idle_rss = t.rss_kb()
    completed, counts, rounds = [], {}, []
    peak_fds, peak_rss = 0, idle_rss
    for rnd in range(ROUNDS):
        deadline = time.monotonic() + SOAK_SECONDS / ROUNDS
        workers = [Worker(rnd * TUNNELS + i, t.port, deadline) for i in range(TUNNELS)]
        for w in workers:
            w.thread.start()
        while any(w.thread.is_alive() for w in workers):
            if time.monotonic() > deadline + EXCHANGE_TIMEOUT + 10:
                break
            peak_fds = max(peak_fds, fds(t.pid))
            peak_rss = max(peak_rss, t.rss_kb())
            time.sleep(0.1)
        stuck = [w.index for w in workers if w.thread.is_alive()]
        assert not stuck, f"workers still running long after the soak: {stuck[:20]}"
        errors = [e for w in workers for e in w.errors]
        assert not errors, f"{len(errors)} exchange errors:\n" + "\n".join(errors[:20])
        completed += [d for w in workers for d in w.completed]
        for w in workers:
            for k, v in w.counts.items():
                counts[k] = counts.get(k, 0) + v
        # Descriptors back to the idle count.
        try:
            wait_until(lambda: fds(t.pid) <= idle_fds, 40, message="descriptors back to idle")
        except TimeoutError:
            raise AssertionError(f"{fds(t.pid) - idle_fds} descriptors leaked after round {rnd + 1} "
                                 f"(idle {idle_fds}, peak {peak_fds})") from None
        time.sleep(0.3)
        rounds.append(t.rss_kb())
    assert len(completed) > TUNNELS, (len(completed), counts)
    assert peak_fds > idle_fds + TUNNELS // 2, f"only {peak_fds} descriptors at the peak"
    # The gateway saw every completed exchange's bytes.
    expected = set(completed)

    def gateway_has_all():
        seen = {r["sha256_from_client"] for r in g.records("closed")}
        return expected <= seen

    try:
        wait_until(gateway_has_all, 20, interval=0.5, message="gateway records")
    except TimeoutError:
        seen = {r["sha256_from_client"] for r in g.records("closed")}
        raise AssertionError(f"{len(expected - seen)} of {len(expected)} completed exchanges "
                             f"not seen whole by the gateway") from None
    # Memory back near the idle level, and not growing from one round to the next.
    rss = rounds[-1]
    print(f"RSS idle {idle_rss} kB, after each round {rounds} kB, peak {peak_rss} kB")
    growth_kb = ROUND_GROWTH_KB + (16 * 1024 if sanitizer.binary_is_sanitized() else 0)
    assert rounds[-1] - rounds[0] < growth_kb, (
        f"VmRSS grew from round to round: {rounds} kB (idle {idle_rss} kB)")
    if sanitizer.binary_is_sanitized():
        # ASan's allocator keeps freed memory in its quarantine (16 MiB here, which
        # also loosens the round-to-round bound above) and its shadow: the bounds are
        # loose, and leaks are LeakSanitizer's to report at the exit.
        assert rss - idle_rss < RSS_MARGIN_KB + 64 * 1024, (rss, idle_rss, peak_rss, rounds)
    else:
        retained, grown = rss - idle_rss, peak_rss - idle_rss
        assert retained < RSS_MARGIN_KB and retained <= grown // 2, (
            f"VmRSS {rss} kB after the soak: {retained} kB above the idle {idle_rss} kB, "
            f"of the {grown} kB the soak took at its peak ({peak_rss} kB); after each round "
            f"{rounds} kB")
    assert t.proc.poll() is None
    with t.connect() as s:
        assert echo_once(s, b"still serving") == b"still serving"
    errors = [line for line in t.lines if line.startswith("[ERROR")]
    assert not errors, f"{len(errors)} ERROR lines, the first: {errors[:5]}"
    print(f"soak: {SOAK_SECONDS:.0f}s, {len(completed)} completed exchanges, {counts}, "
          f"peak {peak_fds} fds (idle {idle_fds}), RSS idle {idle_rss} kB, peak {peak_rss} kB, "
          f"after {rss} kB, WARN lines {sum(1 for x in t.lines if x.startswith('[WARN'))}")
