"""serve stops on SIGINT and SIGTERM however early they come.

Before, serve set its handlers only once serving: a Ctrl-C during start-up met
Python's own SIGINT handler, whose KeyboardInterrupt could end start-up with
the exporter's threads already running, and the process then never exited
(seen in CI: `crilab.demo`, Ctrl-C'd as soon as it printed its URL, waited 120 s
on an agent that kept polling the runtime for 26 minutes).
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _serve(tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cri_exporter", "serve", "--runtime-endpoint", f"unix://{tmp_path}/none.sock",
         "--listen-address", "127.0.0.1:0", "--collectors", "runtime,containers,stats,cgroups",
         "--log-format", "json", "--no-confine"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)})


def _lines_until(proc: subprocess.Popen, event: str, timeout: float) -> list[str]:
    """The agent's log lines up to and including the first naming `event`."""
    assert proc.stdout is not None
    lines, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, end - time.monotonic()))
        if not ready:
            break
        line = proc.stdout.readline().decode(errors="replace")
        if not line:
            break
        lines.append(line)
        if f'"event": "{event}"' in line:
            return lines
    raise AssertionError(f"no {event!r} in the agent's log: {''.join(lines)[-2000:]}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: signal.Signals(s).name)
def test_a_signal_during_start_up_stops_the_agent(tmp_path, signum):
    proc = _serve(tmp_path)
    try:
        # "not confined (--no-confine)" is logged before the exporter and its threads are made, "serving" after
        _lines_until(proc, "not confined (--no-confine)", timeout=60)
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-2000:]
    assert '"event": "shutting down"' in text and signal.Signals(signum).name in text, text[-2000:]


def test_a_signal_while_serving_stops_the_agent(tmp_path):
    proc = _serve(tmp_path)
    try:
        _lines_until(proc, "serving", timeout=60)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out.decode(errors="replace")[-2000:]
