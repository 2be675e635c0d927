"""Session fixtures: one real private containerd with the standard pods, and
one exporter serving it, shared by every test that only observes them.

Tests that break a runtime (stop, kill, disable CRI) start their own
containerd instead, so they never disturb the shared one.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from crilab import Containerd
from crilab.scenario import StandardPods, start_standard_pods
from tests.exporter_proc import ExporterProcess


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI a skipped test is a failure: nothing skipped may be counted as passing."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI: {report.longrepr}"


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="starting a real containerd needs root")
        for item in items:
            if "containerd" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def lab_dir():
    # Short: AF_UNIX socket paths are limited to 107 bytes.
    d = tempfile.mkdtemp(prefix="crilab-", dir="/tmp")
    yield d
    # containerd roots hold images and snapshots: hundreds of MB a session
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def containerd(lab_dir) -> Containerd:
    cd = Containerd(os.path.join(lab_dir, "shared")).start()
    try:
        yield cd
    finally:
        cd.cleanup()


@pytest.fixture(scope="session")
def pods(containerd) -> StandardPods:
    return start_standard_pods(containerd)


@pytest.fixture(scope="session")
def lab(containerd, pods):
    return containerd, pods


@pytest.fixture(scope="session")
def exporter(containerd, pods, lab_dir) -> ExporterProcess:
    """The exporter over the shared containerd, refreshing CRI stats every second."""
    proc = ExporterProcess(containerd.endpoint, "--stats-interval", "1", "--stats-idle-interval", "1", "--host-root", "/",
                           log_path=Path(lab_dir) / "exporter.log")
    try:
        yield proc
    finally:
        proc.stop()
