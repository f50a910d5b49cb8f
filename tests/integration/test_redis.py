"""A real client and server through the tunnel: redis-benchmark and redis-cli."""

import re
import shutil
import socket
import subprocess

import pytest

from helpers import public_route, wait_until
from services import free_port

pytestmark = pytest.mark.skipif(
    not all(shutil.which(p) for p in ("redis-server", "redis-benchmark", "redis-cli")),
    reason="redis-server, redis-benchmark and redis-cli are needed",
)


def redis_ping(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def redis(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: proc.poll() is not None or redis_ping(port), 10,
                   message="redis-server to answer PING")
        assert proc.poll() is None, "redis-server exited (port taken?)"
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_redis_benchmark_and_cli_through_the_tunnel(gateway, tunnel, redis):
    g = gateway([public_route(f"127.0.0.1:{redis}")])
    t = tunnel(g, "--access-type", "public")
    ping = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(t.port), "ping"],
                          capture_output=True, timeout=30)
    assert ping.stdout.decode().strip() == "PONG", ping
    bench = subprocess.run(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(t.port), "-n", "2000", "-c", "10",
         "-t", "set,get", "-q"],
        capture_output=True, timeout=120,
    )
    out = bench.stdout.decode(errors="replace").replace("\r", "\n")
    assert bench.returncode == 0, out + bench.stderr.decode(errors="replace")
    for cmd in ("SET", "GET"):
        m = re.search(rf"^{cmd}: ([\d.]+) requests per second", out, re.M)
        assert m and float(m.group(1)) > 0, f"no {cmd} result in: {out}"
    set_value = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(t.port), "set", "k",
                                "v\u00e9" * 1000], capture_output=True, timeout=30)
    assert set_value.stdout.decode().strip() == "OK"
    get_value = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(redis),
                                "get", "k"], capture_output=True, timeout=30)
    # Read back directly from redis: what went through the tunnel arrived intact.
    assert get_value.stdout.decode().strip() == "v\u00e9" * 1000
