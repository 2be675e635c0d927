"""serve's doctor: `cri-exporter doctor --output json` in a child process.

Why a child and not a thread: the checks' libraries (pyroute2 alone holds
10 MB) then never live in the agent, which stays resident on every node; a
check that hangs or leaks dies with its process (`timeout`) and cannot touch
a scrape; and the metrics say exactly what the operator's own `cri-exporter
doctor` says, because it is the same command. The price is an interpreter
start per run: about 0.25 s of CPU every --doctor-interval (300 s).

A healthy run writes nothing on stderr (exit 0, or 1 when a check failed: both
wrote the report). Whatever it does write, a Python traceback above all
(which also exits 1), is the only trace of a crash: the last lines are kept,
bounded, and logged whenever there are any, redacted as one text (the log's
own redaction goes line by line and would miss a key spread over lines); a
failed run's error (`doctor run failed` in serve's log) ends with the last.
"""
from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading

import structlog

from cri_exporter.doctor.model import Report
from cri_exporter.doctor.report import parse_json
from cri_exporter.redact import redact_text

log = structlog.get_logger(__name__)

# A whole run takes well under a second on a healthy node; CRI calls have
# their own 3 s deadline each. Past this the child is killed.
TIMEOUT_SECONDS = 120.0

# The end of the child's stderr that is kept: a traceback's last frames and
# its exception, whatever a runaway child writes before.
STDERR_LINES = 30
STDERR_LINE_CHARS = 400


class DoctorRunFailed(Exception):
    """The child did not produce a report (killed, crashed, or wrote garbage)."""


class DoctorChild:
    """Runs the doctor command; stop() kills a run in progress (serve is shutting down)."""

    def __init__(self, host_root: str, endpoint, timeout: float = TIMEOUT_SECONDS, cri_timeout: float = 3.0):
        self.host_root = host_root
        self.endpoint = endpoint  # a callable: the agent's client may have moved to another socket
        self.timeout = timeout
        self.cri_timeout = cri_timeout
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._stopped = False

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "cri_exporter", "doctor", "--output", "json",
               "--host-root", self.host_root, "--timeout", str(self.cri_timeout)]
        endpoint = self.endpoint()
        if endpoint:
            cmd += ["--runtime-endpoint", endpoint]
        return cmd

    def run(self) -> Report:
        with self._lock:
            if self._stopped:
                raise DoctorRunFailed("serve is stopping")
            # stderr on a pipe of our own: communicate() would hold all of it in memory.
            read_end, write_end = os.pipe()
            try:
                proc = self._proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                                     stdout=subprocess.PIPE, stderr=write_end)
            except BaseException:
                os.close(read_end)
                raise
            finally:
                os.close(write_end)
        stderr = StderrTail(read_end)
        try:
            out, _ = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            self._log_stderr(stderr, proc.returncode)
            raise DoctorRunFailed(f"the doctor did not finish in {self.timeout:g} s and was killed") from None
        finally:
            with self._lock:
                self._proc = None
        status = proc.returncode
        # 0: nothing failed, 1: a check failed; both wrote the report.
        report, failure = None, None
        if status not in (0, 1):
            failure = f"the doctor {_exit(status)}"
        else:
            try:
                report = parse_json(out)
            except ValueError as e:
                failure = f"the doctor {_exit(status)} but its output is not a report ({e})"
        last = self._log_stderr(stderr, status)
        if failure is not None or report is None:
            raise DoctorRunFailed(f"{failure}: {last or 'no output on stderr'}")
        return report

    @staticmethod
    def _log_stderr(stderr: StderrTail, status: int | None) -> str | None:
        """Log the end of the child's stderr, if it wrote any; its last line."""
        kept = stderr.lines()
        if not kept:
            return None
        lines = redact_text("\n".join(kept)).split("\n")
        log.warning("doctor child wrote to stderr", exit_status=status, stderr=lines,
                    earlier_lines_dropped=stderr.dropped)
        return lines[-1]

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()


def _exit(status: int) -> str:
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name} (status {status})"
        except ValueError:
            return f"was killed by signal {-status} (status {status})"
    return f"exited with status {status}"


class StderrTail:
    """Reads a pipe to its end in a thread, keeping the last STDERR_LINES lines,
    each cut to STDERR_LINE_CHARS: a flood costs no more memory than that."""

    def __init__(self, fd: int):
        self._lines: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._lock = threading.Lock()  # lines() may copy while a grandchild still writes
        self.dropped = 0
        self._thread = threading.Thread(target=self._read, args=(fd,), name="doctor-stderr", daemon=True)
        self._thread.start()

    def _read(self, fd: int) -> None:
        with open(fd, "rb") as pipe:
            line = b""
            while chunk := pipe.readline(STDERR_LINE_CHARS * 4):  # a line with no end is read in parts
                if len(line) < STDERR_LINE_CHARS * 4:
                    line += chunk
                if chunk.endswith(b"\n"):
                    self._add(line)
                    line = b""
            if line:
                self._add(line)

    def _add(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").rstrip()
        if not text:
            return
        with self._lock:
            if len(self._lines) == self._lines.maxlen:
                self.dropped += 1
            self._lines.append(text if len(text) <= STDERR_LINE_CHARS else text[:STDERR_LINE_CHARS] + "...")

    def lines(self, wait: float = 2.0) -> list[str]:
        """The kept lines, once the pipe closed (a grandchild holding it open
        is waited for `wait` seconds at most)."""
        self._thread.join(wait)
        with self._lock:
            return list(self._lines)
