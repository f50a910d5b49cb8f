"""Fail a test when the tunnel process it ran printed a sanitizer report.

Under a build with `-Db_sanitize=address,undefined`, AddressSanitizer,
UndefinedBehaviorSanitizer and LeakSanitizer write their reports to the process's
standard error, which TunnelProcess (helpers.py) and StdioRun (hops.py) collect.
`install()` wraps their close() so that, once the process is stopped, its standard
error is searched for a report; a report fails the test that ran the process (the
fixture that closes it raises), after every other process still running has been
stopped too, so nothing is left behind.

LeakSanitizer reports only at a normal exit, and the fixtures kill what is still
running: so under a sanitized binary close() first asks the process to stop
(SIGTERM, the tunnel's graceful stop) and waits up to GRACEFUL_TIMEOUT seconds for
it before killing it. With a plain build close() behaves exactly as before.

Under valgrind (tests/run.sh runs some suites so, with OTOROSHICTL_BIN a wrapper that
runs the binary under `valgrind --log-file=DIR/vg.PID`, and OTOROSHICTL_VALGRIND_LOGS
naming DIR), the same holds: close() stops the process gracefully (valgrind reports
leaks only at exit), and a non-empty log (valgrind is run with --quiet, so it writes
only reports) fails the test.

install() runs when this module is imported. The test_hostile*.py modules import it, and pytest
imports every test module before running any test, so a run that collects one of
them checks every tunnel process of every test of the run (the existing
modules included). `import sanitizer` in conftest.py would make it unconditional.
"""

import os
import re
import signal
import subprocess
import weakref
from pathlib import Path

# Anchored at the start of a line: the tunnel's own lines start with "[LEVEL ...]",
# so text it logs (an Otoroshi error body saying "runtime error:") cannot match.
REPORT_RE = re.compile(
    r"^(==\d+==ERROR: (AddressSanitizer|LeakSanitizer)"
    r"|==\d+==WARNING: AddressSanitizer"
    r"|==\d+==LeakSanitizer"
    r"|\S+:\d+(:\d+)?: runtime error: "
    r"|SUMMARY: (AddressSanitizer|UndefinedBehaviorSanitizer|LeakSanitizer))",
    re.M,
)
GRACEFUL_TIMEOUT = 4.0
VALGRIND_LOGS = os.environ.get("OTOROSHICTL_VALGRIND_LOGS", "")

_live = weakref.WeakSet()
_sanitized = {}


def binary_is_sanitized(path=None):
    """True when the binary was linked with AddressSanitizer or UBSan (cached)."""
    path = path or os.environ.get("OTOROSHICTL_BIN", "")
    if path not in _sanitized:
        found = False
        try:
            with open(path, "rb") as f:
                data = f.read()
            found = b"__asan_init" in data or b"__ubsan_handle_" in data
        except OSError:
            pass
        _sanitized[path] = found
    return _sanitized[path]


def under_valgrind():
    return VALGRIND_LOGS != ""


def valgrind_report(pid):
    """What valgrind wrote for the process `pid` (only reports, with --quiet), or None."""
    if not VALGRIND_LOGS:
        return None
    try:
        text = (Path(VALGRIND_LOGS) / f"vg.{pid}").read_text(errors="replace")
    except OSError:
        return None
    return text[:6000] if text.strip() else None


def find_report(text):
    """The sanitizer report in `text` (from its first line on), or None."""
    m = REPORT_RE.search(text)
    if not m:
        return None
    start = text.rfind("\n", 0, m.start()) + 1
    return text[start:start + 6000]


class SanitizerReport(AssertionError):
    pass


def _stderr_of(obj):
    if hasattr(obj, "lines"):  # TunnelProcess
        with obj.cond:
            return "\n".join(obj.lines)
    err = getattr(obj, "stderr", b"")  # StdioRun
    return err.decode("utf-8", "replace") if isinstance(err, bytes) else str(err)


def _graceful(obj):
    proc = obj.proc
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(GRACEFUL_TIMEOUT * (4 if under_valgrind() else 1))
    except (subprocess.TimeoutExpired, OSError):
        pass


def _wrap(cls):
    if getattr(cls, "_sanitizer_wrapped", False):
        return
    orig_init, orig_close = cls.__init__, cls.close

    def __init__(self, *args, **kw):
        orig_init(self, *args, **kw)
        _live.add(self)

    def close(self):
        if (binary_is_sanitized() or under_valgrind()) and self.proc.poll() is None:
            _graceful(self)
        orig_close(self)
        _live.discard(self)
        if getattr(self, "_sanitizer_checked", False):
            return
        self._sanitizer_checked = True
        report = find_report(_stderr_of(self)) or valgrind_report(self.proc.pid)
        if report is None:
            return
        # Stop everything else this test started before failing it.
        for other in list(_live):
            try:
                orig_close_of(other)(other)
            except Exception:  # noqa: BLE001 - best effort on the way to failing
                pass
            _live.discard(other)
        raise SanitizerReport(
            f"{'valgrind' if under_valgrind() else 'sanitizer'} report from {' '.join(map(str, self.proc.args[:3]))} ... "
            f"(pid {self.proc.pid}, exit {self.proc.returncode}):\n{report}")

    cls.__init__ = __init__
    cls.close = close
    cls._sanitizer_orig_close = orig_close
    cls._sanitizer_wrapped = True


def orig_close_of(obj):
    return type(obj)._sanitizer_orig_close


def install():
    import helpers
    _wrap(helpers.TunnelProcess)
    try:
        import hops
    except ImportError:  # pragma: no cover - hops needs pytest, always there
        return
    _wrap(hops.StdioRun)


def check(obj):
    """Raise SanitizerReport if `obj` (TunnelProcess or StdioRun) printed a report so far."""
    report = find_report(_stderr_of(obj)) or valgrind_report(obj.proc.pid)
    if report is not None:
        raise SanitizerReport(f"sanitizer report (pid {obj.proc.pid}):\n{report}")


install()
