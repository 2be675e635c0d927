"""serve's doctor child: what a crashing run wrote on stderr reaches serve's
log, bounded and redacted, even when it exits 1 (the status of a normal report
with a failed check, and of any uncaught Python exception)."""
from __future__ import annotations

import sys

import pytest
import structlog
from structlog.testing import capture_logs

from cri_exporter.doctor import child as child_mod
from cri_exporter.doctor.child import STDERR_LINE_CHARS, STDERR_LINES, DoctorChild, DoctorRunFailed

try:
    from tests.test_doctor_support import fixture
except ImportError:
    from test_doctor_support import fixture

EVENT = "doctor child wrote to stderr"


class _Command(DoctorChild):
    def __init__(self, argv: list[str], host_root: str = "/"):
        super().__init__(host_root, lambda: "unix:///nonexistent.sock", timeout=60)
        self.argv = argv

    def command(self):
        return self.argv(super().command()) if callable(self.argv) else self.argv


@pytest.fixture
def logs(monkeypatch):
    with capture_logs() as captured:
        # a logger bound now, whatever another test configured (and cached) before
        monkeypatch.setattr(child_mod, "log", structlog.get_logger())
        yield captured


def _stderr_events(logs):
    return [e for e in logs if e["event"] == EVENT]


CRASH = """
import sys
for i in range(100):
    print(f"noise {i}", file=sys.stderr)
print("x" * 5000, file=sys.stderr)
print('password = "hunter2"', file=sys.stderr)
print("-----BEGIN RSA PRIVATE KEY-----\\nMIIEsecretkeybody\\n-----END RSA PRIVATE KEY-----", file=sys.stderr)
def run_checks():
    raise RuntimeError("a check crashed")
run_checks()
"""


def test_an_uncaught_exception_exit_1_is_logged_with_its_traceback(logs):
    """Exit status 1 with a traceback: main took it for a report and threw stderr away."""
    with pytest.raises(DoctorRunFailed) as err:
        _Command([sys.executable, "-c", CRASH]).run()
    assert "exited with status 1" in str(err.value) and "not a report" in str(err.value)
    assert str(err.value).endswith("RuntimeError: a check crashed")
    (event,) = _stderr_events(logs)
    lines = event["stderr"]
    assert event["exit_status"] == 1 and event["log_level"] == "warning"
    assert len(lines) <= STDERR_LINES  # the last ones (a redacted key may fold into one); 100 of noise came before
    assert lines[0] == f"noise {event['earlier_lines_dropped']}"  # exactly the lines before were dropped
    assert lines[-1] == "RuntimeError: a check crashed"
    assert "Traceback (most recent call last):" in lines and any("in run_checks" in x for x in lines)
    assert all(len(x) <= STDERR_LINE_CHARS + 3 for x in lines)
    assert "x" * STDERR_LINE_CHARS + "..." in lines
    assert not any("hunter2" in x or "MIIEsecretkeybody" in x for x in lines)  # a key over 3 lines too
    assert 'password = REDACTED' in lines or 'password = "REDACTED"' in lines


def test_a_segfault_is_named_and_its_stack_logged(logs):
    argv = [sys.executable, "-X", "faulthandler", "-c", "import ctypes; ctypes.string_at(0)"]
    with pytest.raises(DoctorRunFailed, match=r"was killed by SIGSEGV \(status -11\): "):
        _Command(argv).run()
    (event,) = _stderr_events(logs)
    assert event["exit_status"] == -11
    assert any("Segmentation fault" in x for x in event["stderr"])


def test_a_flood_without_newlines_is_kept_bounded(logs):
    with pytest.raises(DoctorRunFailed, match="status 2"):
        _Command([sys.executable, "-c", "import sys; sys.stderr.write('y' * 20_000_000); sys.exit(2)"]).run()
    (event,) = _stderr_events(logs)
    assert event["stderr"] == ["y" * STDERR_LINE_CHARS + "..."]


def test_a_report_with_stderr_is_kept_and_the_stderr_logged(logs):
    """The real doctor over a broken node (exit 1, a report) plus a warning on stderr."""
    root = fixture("kubeadm-containerd-broken")
    child = _Command(lambda real: ["sh", "-c", 'echo "warning: from the child" >&2; exec "$@"', "sh", *real], root)
    report = child.run()
    assert report.failed
    (event,) = _stderr_events(logs)
    assert event["stderr"] == ["warning: from the child"] and event["exit_status"] == 1


def test_a_quiet_run_logs_nothing(logs):
    report = _Command(lambda real: real, fixture("kubeadm-containerd-broken")).run()
    assert report.results
    assert not _stderr_events(logs)
