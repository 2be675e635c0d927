"""serve's doctor: `cri-exporter doctor --output json` in a child process.

Why a child and not a thread: the checks' libraries (pyroute2 alone holds
10 MB) then never live in the agent, which stays resident on every node; a
check that hangs or leaks dies with its process (`timeout`) and cannot touch
a scrape; and the metrics say exactly what the operator's own `cri-exporter
doctor` says, because it is the same command. The price is an interpreter
start per run: about 0.25 s of CPU every --doctor-interval (300 s).
"""
from __future__ import annotations

import subprocess
import sys
import threading

from cri_exporter.doctor.model import Report
from cri_exporter.doctor.report import parse_json

# A whole run takes well under a second on a healthy node; CRI calls have
# their own 3 s deadline each. Past this the child is killed.
TIMEOUT_SECONDS = 120.0


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
            proc = self._proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                 stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise DoctorRunFailed(f"the doctor did not finish in {self.timeout:g} s and was killed") from None
        finally:
            with self._lock:
                self._proc = None
        # 0: nothing failed, 1: a check failed; both wrote the report.
        if proc.returncode not in (0, 1):
            last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output on stderr"]
            raise DoctorRunFailed(f"the doctor exited with status {proc.returncode}: {last[0][:300]}")
        try:
            return parse_json(out)
        except ValueError as e:
            raise DoctorRunFailed(f"the doctor's output is not a report: {e}") from None

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()
