"""The quick start's demo leaves nothing behind on Ctrl-C: not its agent, not its pods, not its
temporary directory; and it gives the terminal back even when its agent does not exit."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from crilab.demo import Agent
from tests.exporter_proc import free_port, wait_for

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def short_tmp():
    """A TMPDIR short enough for containerd's socket path (108 bytes) under it."""
    path = Path(tempfile.mkdtemp(prefix="demo-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _demo(log: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """The demo started as a background job of a script is (`cmd &` in a
    non-interactive shell: SIGINT ignored, inherited): its Ctrl-C must work
    all the same (CI ran the suite so, and every Ctrl-C test hung)."""
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "crilab.demo", "--listen-address", f"127.0.0.1:{free_port()}",
                                 *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                                preexec_fn=_ignore_sigint)


def _wait_serving(proc: subprocess.Popen, log: Path) -> None:
    """Until the demo says its URL (the agent is started from then), or fail with its log."""
    try:
        wait_for(lambda: proc.poll() is not None or "demo: open http" in log.read_text(errors="replace"),
                 timeout=300, what="the demo's exporter")
    except AssertionError:
        raise AssertionError(log.read_text(errors="replace")[-3000:]) from None
    assert proc.poll() is None, log.read_text(errors="replace")[-3000:]


def test_a_ctrl_c_while_the_agent_starts_still_stops_it():
    """The SIGINT comes from the child itself before it execs, so it lands while
    Popen is still waiting for the exec: the window that used to lose the agent."""
    agent = Agent([sys.executable, "-c", "import time; time.sleep(600)"])
    parent = os.getpid()
    with pytest.raises(KeyboardInterrupt):
        agent.start(preexec_fn=lambda: os.kill(parent, signal.SIGINT))
    try:
        assert agent.proc is not None and agent.proc.poll() is None  # held, and not signalled yet
        assert agent.stop(grace=120) == -signal.SIGINT  # stopped by the forwarded Ctrl-C, not killed
    finally:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait()


@pytest.mark.containerd
@pytest.mark.newest_runtime
def test_an_agent_that_does_not_exit_is_killed_after_the_grace(containerd, tmp_path):
    log = tmp_path / "demo.log"
    proc = _demo(log, "--agent-grace", "1", env={"CONTAINER_RUNTIME_ENDPOINT": containerd.endpoint})
    agent = None
    try:
        _wait_serving(proc, log)
        assert "private containerd" not in log.read_text(errors="replace")  # the lab's runtime answered
        (agent,) = psutil.Process(proc.pid).children()
        assert "serve" in agent.cmdline()
        agent.suspend()  # SIGSTOP: a SIGINT can no longer make it exit
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 130, log.read_text(errors="replace")[-3000:]
        assert f"the agent (pid {agent.pid}) did not exit within 1 s of SIGINT; killing it" in log.read_text()
        assert not agent.is_running()  # killed and reaped by the demo
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if agent is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                agent.kill()


@pytest.mark.containerd
@pytest.mark.slow
def test_ctrl_c_removes_the_private_containerd_and_its_temporary_directory(tmp_path, short_tmp):
    log = tmp_path / "demo.log"
    tmp = short_tmp
    proc = _demo(log, "--private", env={"TMPDIR": str(tmp)})
    try:
        _wait_serving(proc, log)
        assert [p.name for p in tmp.iterdir() if p.name.startswith("cri-exporter-demo-")]
        proc.send_signal(signal.SIGINT)
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "removing the demo pods" in log.read_text(errors="replace")
    left = [p.name for p in tmp.iterdir() if p.name.startswith("cri-exporter-demo-")]
    assert not left, f"left behind: {left}"
