"""Session fixtures: one real private containerd with the standard pods, and
one exporter serving it, shared by every test that only observes them.

The runtime matrix: every test that asks for `runtime_version` (directly or
through `containerd`, `pods`, `lab`, `exporter`) runs once per containerd
version of crilab.versions.selected() (1.6, 1.7, 2.1; `CRILAB_VERSIONS=2.1`
narrows it). The tests are reordered so that all tests of one version run
together: each version's shared containerd starts once and is stopped before
the next one starts. Tests whose subject does not depend on the runtime's
version (TLS, Prometheus, the chart) are marked `newest_runtime`: they run
on the newest selected version only.

Tests that break a runtime (stop, kill, disable CRI) start their own
containerd of `runtime_version` instead, so they never disturb the shared one.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from cri_exporter import confine_landlock
from crilab import Containerd, versions
from crilab.scenario import StandardPods, start_standard_pods
from tests.exporter_proc import ExporterProcess

_PYTEST_PID = os.getpid()
_restrict_self = confine_landlock.Ruleset.restrict_self


def _never_in_pytest(self):
    """Landlock cannot be undone: a test running `serve` or `doctor` in-process
    (CliRunner) without CRI_EXPORTER_CONFINE=false would confine the pytest run
    itself, and every later test would fail on a denied write far from the cause.
    Children (forked or spawned) confine themselves as they should."""
    if os.getpid() == _PYTEST_PID:
        raise RuntimeError("a test would confine the pytest process itself: run the CLI in a child, "
                           "or set CRI_EXPORTER_CONFINE=false for an in-process run")
    _restrict_self(self)


confine_landlock.Ruleset.restrict_self = _never_in_pytest  # type: ignore[method-assign]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI a skipped test is a failure: nothing skipped may be counted as passing."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI: {report.longrepr}"


def version_id(name: str) -> str:
    return f"containerd-{name}"


def pytest_generate_tests(metafunc):
    """Every test that uses `runtime_version` runs on each selected version;
    marked `newest_runtime`, on the newest one only; one that parametrizes
    `runtime_version` itself, on the versions it names."""
    if "runtime_version" not in metafunc.fixturenames:
        return
    if any("runtime_version" in m.args[0] for m in metafunc.definition.iter_markers("parametrize")):
        return  # the test names its versions itself (a fact that holds for some of them only)
    chosen = versions.selected()
    if metafunc.definition.get_closest_marker("newest_runtime"):
        chosen = chosen[-1:]
    metafunc.parametrize("runtime_version", chosen, indirect=True, ids=version_id, scope="session")


def _version_of(item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("runtime_version") if callspec else None


@pytest.hookimpl(trylast=True)  # after pytest's own reordering by fixture scope, keeping it within a version
def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="starting a real containerd needs root")
        for item in items:
            if "containerd" in item.keywords:
                item.add_marker(skip)
    # Tests without a runtime first, then one version after the other: one shared
    # containerd (and its pods' netns and memory) at a time.
    order = {name: i for i, name in enumerate(versions.NAMES)}
    # (a test parametrized over none of the selected versions has NOTSET: it is skipped, sorted first)
    items.sort(key=lambda item: order.get(_version_of(item), -1))


@pytest.fixture(scope="session")
def lab_dir():
    # Short: AF_UNIX socket paths are limited to 107 bytes.
    d = tempfile.mkdtemp(prefix="crilab-", dir="/tmp")
    yield d
    # containerd roots hold images and snapshots: hundreds of MB a session
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def runtime_version(request) -> str:
    """The containerd version ("1.6", "1.7", "2.1") this test runs on."""
    return request.param


@pytest.fixture(scope="session")
def containerd(lab_dir, runtime_version) -> Containerd:
    cd = Containerd(os.path.join(lab_dir, f"shared-{runtime_version}"), version=runtime_version).start()
    try:
        yield cd
    finally:
        cd.cleanup()


@pytest.fixture
def victim(lab_dir, request, runtime_version) -> Containerd:
    """A containerd of the test's own, for tests that kill, restart or break it
    (the shared one serves every other test of the session)."""
    cd = Containerd(os.path.join(lab_dir, f"v{runtime_version}-{request.node.originalname[:20]}"), version=runtime_version).start()
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
    """The exporter over the shared containerd, refreshing CRI stats and container logs every second."""
    proc = ExporterProcess(containerd.endpoint, "--stats-interval", "1", "--stats-idle-interval", "1", "--host-root", "/",
                           "--container-log-interval", "1",
                           "--fd-sample-interval", "1", "--image-interval", "1",
                           log_path=Path(lab_dir) / f"exporter-{containerd.version.name}.log")
    try:
        yield proc
    finally:
        proc.stop()
