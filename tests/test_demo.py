"""The quick start's demo leaves nothing behind on Ctrl-C: not its pods, not its temporary directory."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.exporter_proc import free_port, wait_for

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.containerd, pytest.mark.slow]


@pytest.fixture
def short_tmp():
    """A TMPDIR short enough for containerd's socket path (108 bytes) under it."""
    path = Path(tempfile.mkdtemp(prefix="demo-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_ctrl_c_removes_the_private_containerd_and_its_temporary_directory(tmp_path, short_tmp):
    log = tmp_path / "demo.log"
    tmp = short_tmp
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "crilab.demo", "--private",
                                 "--listen-address", f"127.0.0.1:{free_port()}"],
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO)})
    try:
        try:
            wait_for(lambda: proc.poll() is not None or "demo: open http" in log.read_text(errors="replace"),
                     timeout=300, what="the demo's pods and exporter")
        except AssertionError:
            raise AssertionError(log.read_text(errors="replace")[-3000:]) from None
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
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
