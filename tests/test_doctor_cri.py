"""cri.* and drift checks against a fake CRI server on a unix socket."""
import json
import os
import time

import pytest

try:
    from tests.test_doctor_support import FakeCriServer, FakeRuntime, copy_fixture, fixture, results, status, write
except ImportError:
    from test_doctor_support import FakeCriServer, FakeRuntime, copy_fixture, fixture, results, status, write

CRI = ["cri.socket", "cri.api_version", "cri.runtime_ready", "cri.network_ready", "cri.deprecations", "cri.pod_stats"]


@pytest.fixture
def served(tmp_path):
    """(fake runtime, endpoint) of a fake CRI server running for the test."""
    sock = tmp_path / "cri.sock"
    server = FakeCriServer(sock)
    fake = server.__enter__()
    yield fake, f"unix://{sock}"
    server.__exit__(None, None, None)


def run_cri(endpoint, root=None):
    return {k: v.status.value for k, v in results(root or fixture("kubeadm-containerd-v2"), endpoint, checks=["cri"]).items()}


def test_healthy_runtime_passes_cri_checks(served):
    fake, ep = served
    r = run_cri(ep)
    assert r == {"cri.socket": "pass", "cri.multiple_sockets": "pass", "cri.api_version": "pass",
                 "cri.runtime_ready": "pass", "cri.network_ready": "pass", "cri.deprecations": "skip",
                 "cri.pod_stats": "pass", "cri.running_without_cgroup": "pass"}


def test_missing_socket_fails_and_the_rest_skip(tmp_path):
    r = run_cri(f"unix://{tmp_path}/nope.sock")
    assert r["cri.socket"] == "fail"
    assert {r[c] for c in CRI[1:]} == {"skip"}


def test_socket_that_is_a_directory(tmp_path):
    (tmp_path / "dir.sock").mkdir()
    f = results(fixture("kubeadm-containerd-v2"), f"unix://{tmp_path}/dir.sock", checks=["cri.socket"])["cri.socket"].finding
    assert f.status.value == "fail" and "not a socket" in f.summary


def test_socket_permission_denied():
    """A root-owned 0600 socket, checked with nobody's effective ids."""
    if os.getuid() != 0:
        pytest.skip("needs root to switch to nobody")
    import shutil
    import tempfile
    base = tempfile.mkdtemp(prefix="doctor-perm-", dir="/tmp")
    os.chmod(base, 0o755)
    sock = os.path.join(base, "cri.sock")
    try:
        with FakeCriServer(sock):
            os.chmod(sock, 0o600)
            os.setegid(65534)
            os.seteuid(65534)
            try:
                r = results(fixture("kubeadm-containerd-v2"), f"unix://{sock}", checks=["cri.socket"])["cri.socket"]
            finally:
                os.seteuid(0)
                os.setegid(0)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert r.status.value == "fail" and "permission" in r.finding.summary, r.finding


def test_cri_plugin_disabled_answers_unknown_service(tmp_path):
    sock = tmp_path / "cri.sock"
    with FakeCriServer(sock, FakeRuntime(serve_runtime=False)):
        r = results(fixture("kubeadm-containerd-v2"), f"unix://{sock}", checks=["cri"])
    assert r["cri.socket"].status.value == "pass"
    assert r["cri.api_version"].status.value == "fail"
    assert "disabled_plugins" in r["cri.api_version"].finding.seen
    assert r["cri.runtime_ready"].status.value == "skip"


def test_not_ready_conditions(served):
    fake, ep = served
    fake.runtime_ready = False
    fake.network_ready = False
    fake.network_reason = "NetworkPluginNotReady"
    res = results(fixture("kubeadm-containerd-v2"), ep, checks=["cri"])
    assert res["cri.runtime_ready"].status.value == "fail"
    assert res["cri.network_ready"].status.value == "fail"
    assert "NetworkPluginNotReady" in res["cri.network_ready"].finding.seen


def test_old_api_version_fails(served):
    fake, ep = served
    fake.api_version = "v1alpha2"
    assert run_cri(ep)["cri.api_version"] == "fail"


def test_deprecations_condition_decoded(served):
    fake, ep = served
    fake.extra_conditions = [("ContainerdHasNoDeprecationWarnings", True, "", "")]
    assert run_cri(ep)["cri.deprecations"] == "pass"
    msg = json.dumps({"io.containerd.deprecation/cri-registry-mirrors": "The `mirrors` property ... is deprecated"})
    fake.extra_conditions = [("ContainerdHasNoDeprecationWarnings", False, "ContainerdHasDeprecationWarnings", msg)]
    f = results(fixture("kubeadm-containerd-v2"), ep, checks=["cri.deprecations"])["cri.deprecations"].finding
    assert f.status.value == "warn" and f.seen.startswith("io.containerd.deprecation/cri-registry-mirrors: The `mirrors`")


def test_pod_stats_names_the_broken_sandbox(served):
    fake, ep = served
    fake.sandboxes = ["aaaa1111", "bbbb2222", "cccc3333"]
    fake.broken_sandboxes = {"bbbb2222"}
    f = results(fixture("kubeadm-containerd-v2"), ep, checks=["cri.pod_stats"])["cri.pod_stats"].finding
    assert f.status.value == "fail" and "1 sandbox(es)" in f.summary
    assert "bbbb2222" in f.seen and "aaaa1111" not in f.seen and "cgroupPath is empty" in f.seen


def test_multiple_sockets_warn(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    with FakeCriServer(root / "run/containerd/containerd.sock"), FakeCriServer(root / "run/crio/crio.sock"):
        f = results(root, checks=["cri.multiple_sockets"])["cri.multiple_sockets"].finding
    assert f.status.value == "warn" and "2 runtime sockets" in f.summary


def test_endpoint_is_probed_under_the_host_root(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    with FakeCriServer(root / "run/containerd/containerd.sock"):
        assert status(root, "cri.runtime_ready") == "pass"


# ---- drift ----

def _start_process_at(root, pid: int, started: float):
    """Make /proc/<pid>/stat say the process started at `started` (unix time)."""
    btime = int(started) - 1000
    write(root, "/proc/stat", f"btime {btime}\n")
    ticks = 1000 * os.sysconf("SC_CLK_TCK")
    comm = (root / f"proc/{pid}/comm").read_text().strip()
    write(root, f"/proc/{pid}/stat", f"{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 12 0 {ticks} 1000 100\n")


def test_config_edited_after_containerd_started(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    cfg = root / "etc/containerd/config.toml"
    now = time.time()
    os.utime(cfg, (now - 3600, now - 3600))
    _start_process_at(root, 812, now - 600)
    assert status(root, "containerd.config.drift") == "pass"
    os.utime(cfg, (now - 60, now - 60))
    f = results(root, checks=["containerd.config.drift"])["containerd.config.drift"].finding
    assert f.status.value == "warn" and "/etc/containerd/config.toml modified" in f.seen
    assert "systemctl restart containerd" in f.fix


def test_running_config_differs_from_file(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    (root / "proc/812").rename(root / "proc/gone-812")  # only the CRI side
    running = dict(sandboxImage="registry.k8s.io/pause:3.10", restrictOOMScoreAdj=False,
                   cni={"binDir": "/opt/cni/bin", "confDir": "/etc/cni/net.d"},
                   registry={"configPath": "/etc/containerd/certs.d"},
                   containerd={"defaultRuntimeName": "runc",
                               "runtimes": {"runc": {"runtimeType": "io.containerd.runc.v2",
                                                     "options": {"SystemdCgroup": True}}}})
    sock = tmp_path / "cri.sock"
    fake = FakeRuntime()
    fake.running_config(**running)
    with FakeCriServer(sock, fake):
        ep = f"unix://{sock}"
        assert status(root, "containerd.config.drift", ep) == "pass"
        running["containerd"]["runtimes"]["runc"]["options"] = None  # 1.6 sends null when unset
        running["sandboxImage"] = "registry.k8s.io/pause:3.6"
        fake.running_config(**running)
        f = results(root, ep, checks=["containerd.config.drift"])["containerd.config.drift"].finding
    assert f.status.value == "warn"
    assert "SystemdCgroup: file says True, running containerd uses False" in f.seen
    assert "sandbox image: file says 'registry.k8s.io/pause:3.10'" in f.seen


def test_drift_skips_without_process_or_cri(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    (root / "proc/812").rename(root / "proc/gone-812")
    assert status(root, "containerd.config.drift") == "skip"


def test_crio_dropin_newer_than_crio(tmp_path):
    root = copy_fixture("crio", tmp_path)
    now = time.time()
    for f in (root / "etc/crio").rglob("*.conf"):
        os.utime(f, (now - 3600, now - 3600))
    _start_process_at(root, 700, now - 600)
    assert status(root, "crio.config.drift") == "pass"
    os.utime(root / "etc/crio/crio.conf.d/10-pause.conf", (now, now))
    f = results(root, checks=["crio.config.drift"])["crio.config.drift"].finding
    assert f.status.value == "warn" and "10-pause.conf" in f.seen
