"""Fixtures for running the real otoroshictl binary against the stand-in gateway.

The binary comes from $OTOROSHICTL_BIN; without it every test here is skipped.
Everything a test starts (gateway processes, tunnel processes, loopback services)
is registered with a fixture and stopped on teardown, killed if need be.
"""

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "gateway"))

from harness import GatewayProcess  # noqa: E402
from helpers import TunnelProcess, binary, clean_env  # noqa: E402
from services import EchoServer  # noqa: E402
# Fail any test whose tunnel process printed a sanitizer report.
import sanitizer  # noqa: E402,F401


def pytest_configure(config):
    config.addinivalue_line("markers", "long: a test of a minute or more, left out when "
                            "OTOROSHICTL_SKIP_LONG is set (the sanitizer run of tests/run.sh)")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("OTOROSHICTL_SKIP_LONG"):
        long = pytest.mark.skip(reason="OTOROSHICTL_SKIP_LONG: run without a sanitizer in tests/run.sh's first step")
        for item in items:
            if "long" in item.keywords:
                item.add_marker(long)
    path = binary()
    if path and os.path.isfile(path) and os.access(path, os.X_OK):
        return
    if os.environ.get("OTOROSHICTL_REQUIRE_BIN"):
        raise pytest.UsageError(f"OTOROSHICTL_BIN is not an executable file ({path!r})")
    skip = pytest.mark.skip(reason=f"OTOROSHICTL_BIN is not an executable file ({path!r})")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    h.mkdir(exist_ok=True)
    return h


@pytest.fixture
def gateway(tmp_path):
    """gateway(routes, *flags, listen=...) -> GatewayProcess (stopped on teardown)."""
    made = []

    def make(routes, *args, **kw):
        g = GatewayProcess(tmp_path, routes, *args, **kw)
        made.append(g)
        return g

    yield make
    for g in reversed(made):
        g.close()


@pytest.fixture
def tunnel(home):
    """tunnel(host, *args, level='info', env=None, wait_ready=True) -> TunnelProcess.

    `host` is a GatewayProcess (its address is used) or a string for --host;
    `--local-port 0` is added unless the args give --local-port or -L/--forward."""
    made = []

    def make(host, *args, level="info", env=None, wait_ready=True, command="tcp-tunnel",
             ready_timeout=10):
        if isinstance(host, GatewayProcess):
            host = host.addr
        args = [str(a) for a in args]
        full = ["--host", host] if host is not None else []
        if "--local-port" not in args and not any(a in ("-L", "--forward") for a in args):
            full += ["--local-port", "0"]
        full += args
        t = TunnelProcess(full, clean_env(home, level, env), wait_ready=wait_ready,
                          ready_timeout=ready_timeout, command=command)
        made.append(t)
        return t

    yield make
    for t in reversed(made):
        t.close()


@pytest.fixture
def service():
    """service(Class, *args, **kw) -> a started loopback service, closed on teardown."""
    made = []

    def make(cls, *args, **kw):
        s = cls(*args, **kw)
        made.append(s)
        return s

    yield make
    for s in reversed(made):
        s.close()


@pytest.fixture
def echo(service):
    return service(EchoServer)

