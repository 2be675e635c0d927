"""kubelet.*, crictl.*, cni.* and disk.* checks over fixture host trees."""
import errno
import os
from collections import namedtuple

import pytest

try:
    from tests.test_doctor_support import FakeCriServer, copy_fixture, fixture, results, status, write
except ImportError:
    from test_doctor_support import FakeCriServer, copy_fixture, fixture, results, status, write

from cri_exporter.doctor.checks import disk

HEALTHY = fixture("kubeadm-containerd-v2")
BROKEN = fixture("kubeadm-containerd-broken")


@pytest.mark.parametrize("check_id,healthy,broken", [
    ("kubelet.config.parse", "pass", "pass"),
    ("kubelet.runtime_endpoint", "fail", "fail"),  # healthy fixture has no live socket: see below
    ("kubelet.removed_flags", "pass", "fail"),
    ("kubelet.eviction", "pass", "warn"),
    ("crictl.endpoint", "fail", "fail"),
    ("cni.config", "pass", "fail"),
    ("cni.plugins", "pass", "fail"),
])
def test_checks_on_fixture_nodes(check_id, healthy, broken):
    assert status(HEALTHY, check_id) == healthy
    assert status(BROKEN, check_id) == broken


def test_kubelet_config_yaml_error_has_its_line(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    write(root, "/var/lib/kubelet/config.yaml", "kind: KubeletConfiguration\ncgroupDriver: systemd\n\tbad: tab\n")
    f = results(root, checks=["kubelet.config.parse"])["kubelet.config.parse"].finding
    assert f.status.value == "fail" and "line 3" in f.seen
    write(root, "/var/lib/kubelet/config.yaml", "kind: KubeProxyConfiguration\n")
    assert status(root, "kubelet.config.parse") == "fail"
    (root / "var/lib/kubelet/config.yaml").unlink()
    assert status(root, "kubelet.config.parse") == "fail"  # --config names a missing file


def test_no_kubelet_skips_kubelet_checks(tmp_path):
    root = copy_fixture("containerd-parse-error", tmp_path)
    r = results(root, checks=["kubelet"])
    assert {x.status.value for x in r.values()} == {"skip"}


def test_runtime_endpoint_and_crictl_pass_with_a_live_socket(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    with FakeCriServer(root / "run/containerd/containerd.sock"):
        r = results(root, checks=["kubelet.runtime_endpoint", "crictl.endpoint"])
    assert r["kubelet.runtime_endpoint"].status.value == "pass"
    assert "containerd" in r["kubelet.runtime_endpoint"].finding.summary
    assert r["crictl.endpoint"].status.value == "pass"


def test_runtime_endpoint_not_a_socket_and_not_answering(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    write(root, "/run/containerd/containerd.sock", "")
    f = results(root, checks=["kubelet.runtime_endpoint"])["kubelet.runtime_endpoint"].finding
    assert f.status.value == "fail" and "not a socket" in f.summary
    os.unlink(root / "run/containerd/containerd.sock")
    import socket as s
    sock = s.socket(s.AF_UNIX)
    sock.bind(str(root / "run/containerd/containerd.sock"))  # bound, never listening
    try:
        f = results(root, checks=["kubelet.runtime_endpoint"])["kubelet.runtime_endpoint"].finding
    finally:
        sock.close()
    assert f.status.value == "fail" and "does not answer" in f.summary


def test_removed_flags_name_the_file():
    f = results(BROKEN, checks=["kubelet.removed_flags"])["kubelet.removed_flags"].finding
    assert "--container-runtime=remote in /var/lib/kubelet/kubeadm-flags.env (removed in 1.27)" in f.seen


def test_deprecated_flag_only_warns(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    write(root, "/var/lib/kubelet/kubeadm-flags.env",
          'KUBELET_KUBEADM_ARGS="--pod-infra-container-image=registry.k8s.io/pause:3.10"\n')
    assert status(root, "kubelet.removed_flags") == "warn"


def test_partial_eviction_hard_is_named():
    f = results(BROKEN, checks=["kubelet.eviction"])["kubelet.eviction"].finding
    assert "nodefs.available" in f.seen and "MemAvailable 146Mi" in f.seen


def test_crictl_missing_warns(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    (root / "etc/crictl.yaml").unlink()
    assert status(root, "crictl.endpoint") == "warn"
    # Without crictl itself (Debian has no package of it) nothing reads the file: no alarm.
    (root / "usr/bin/crictl").unlink()
    assert status(root, "crictl.endpoint") == "skip"


def test_cni_first_file_wins_and_competition_warns(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    write(root, "/etc/cni/net.d/05-leftover.conflist",
          '{"cniVersion":"0.4.0","name":"old","plugins":[{"type":"bridge"}]}')
    f = results(root, checks=["cni.config"])["cni.config"].finding
    assert f.status.value == "warn" and "05-leftover.conflist wins" in f.summary
    (root / "etc/cni/net.d/05-leftover.conflist").unlink()
    (root / "etc/cni/net.d/10-bridge.conflist").unlink()
    f = results(root, checks=["cni"])
    assert f["cni.config"].status.value == "fail" and f["cni.plugins"].status.value == "skip"


def test_cni_invalid_file_sorting_first_breaks_containerd():
    f = results(BROKEN, checks=["cni.config"])["cni.config"].finding
    assert "00-old.conf" in f.summary and "line 2" in f.seen


def test_cni_missing_plugin_binary_is_named(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    (root / "opt/cni/bin/portmap").unlink()
    f = results(root, checks=["cni.plugins"])["cni.plugins"].finding
    assert f.status.value == "fail" and f.summary == "CNI plugins missing: portmap"


def test_cni_dirs_come_from_the_runtime_config(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    cfg = root / "etc/containerd/config.toml"
    cfg.write_text(cfg.read_text().replace('bin_dir = "/opt/cni/bin"', 'bin_dir = "/usr/lib/cni"'))
    assert status(root, "cni.plugins") == "fail"


FakeStat = namedtuple("FakeStat", "f_blocks f_frsize f_bavail f_files f_favail")


@pytest.mark.parametrize("free_pct,inode_pct,expected", [(50, 50, "pass"), (12, 50, "warn"), (5, 50, "fail"), (50, 1, "fail")])
def test_disk_thresholds_use_kubelet_defaults(monkeypatch, free_pct, inode_pct, expected):
    monkeypatch.setattr(disk, "statvfs", lambda p: FakeStat(1000, 4096, free_pct * 10, 1000, inode_pct * 10))
    r = results(HEALTHY, checks=["disk"])
    assert r["disk.nodefs"].status.value == expected  # nodefs.available<10%, inodesFree<5%
    imagefs = {"pass": "pass", "warn": "fail", "fail": "fail"}[expected]  # imagefs.available<15%
    if inode_pct == 1:  # imagefs.inodesFree is a default from 1.30 only; this kubelet's version is unknown
        imagefs = "warn"
    assert r["disk.imagefs"].status.value == imagefs


def _dpkg_kubelet(root, version: str):
    write(root, "/var/lib/dpkg/status", f"Package: kubelet\nStatus: install ok installed\nVersion: {version}\n\n")


@pytest.mark.parametrize("kubelet,expected,needle", [
    (None, "warn", "kubelet version unknown (no dpkg/rpm record of a kubelet package): assumed the default "
                   "imagefs.inodesFree<5% of kubelet 1.30+ (older kubelets have none), so at most a warning"),
    ("1.29.10-1.1", "pass", "imagefs.inodesFree: not checked, kubelet 1.29 has no default imagefs.inodesFree"),
    ("1.30.0-1.1", "fail", "imagefs.inodesFree<5% (kubelet default)"),
    ("1.35.1-1.1", "fail", "imagefs.inodesFree<5% (kubelet default)"),
])
def test_imagefs_inodes_default_depends_on_the_kubelet_version(monkeypatch, tmp_path, kubelet, expected, needle):
    monkeypatch.setattr(disk, "statvfs", lambda p: FakeStat(1000, 4096, 500, 1000, 10))  # 1% of inodes free
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    if kubelet:
        _dpkg_kubelet(root, kubelet)
    f = results(root, checks=["disk.imagefs"])["disk.imagefs"].finding
    assert f.status.value == expected and needle in f.seen, f
    # Set explicitly, the threshold exists whatever the version.
    cfg = root / "var/lib/kubelet/config.yaml"
    cfg.write_text(cfg.read_text() + 'evictionHard:\n  imagefs.inodesFree: "5%"\n  imagefs.available: "15%"\n')
    assert status(root, "disk.imagefs") == "fail"


def test_disk_on_real_statvfs_and_configured_threshold(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    assert status(root, "disk.nodefs") in ("pass", "warn", "fail")
    cfg = root / "var/lib/kubelet/config.yaml"
    cfg.write_text(cfg.read_text() + 'evictionHard:\n  nodefs.available: "100%"\n')
    f = results(root, checks=["disk.nodefs"])["disk.nodefs"].finding
    assert f.status.value == "fail" and "nodefs.available<100%" in f.summary
    (root / "var/lib/kubelet").rename(root / "var/lib/kubelet.gone")
    assert status(root, "disk.nodefs") == "skip"


def test_absolute_symlinks_resolve_inside_the_host_root(tmp_path):
    """Under --host-root /host, /var/run -> /run must mean /host/run."""
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    import shutil as _sh
    _sh.rmtree(root / "var/run", ignore_errors=True)
    os.symlink("/run", root / "var/run")
    kcfg = root / "var/lib/kubelet/config.yaml"
    kcfg.write_text(kcfg.read_text().replace("unix:///run/containerd", "unix:///var/run/containerd"))
    write(root, "/etc/crictl.yaml", "runtime-endpoint: unix:///var/run/containerd/containerd.sock\n")
    with FakeCriServer(root / "run/containerd/containerd.sock"):
        r = results(root, checks=["kubelet.runtime_endpoint", "crictl.endpoint", "cri.multiple_sockets"])
    assert r["kubelet.runtime_endpoint"].status.value == "pass"
    assert r["crictl.endpoint"].status.value == "pass"
    assert r["cri.multiple_sockets"].status.value == "pass"  # one socket under two names


def test_resolve_handles_relative_links_and_loops(tmp_path):
    from cri_exporter.doctor.facts.files import resolve
    from cri_exporter.hostfs import HostFS

    (tmp_path / "a").mkdir()
    os.symlink("../b", tmp_path / "a/rel")
    os.symlink("/loop", tmp_path / "loop")
    h = HostFS(str(tmp_path))
    assert resolve(h, "/a/rel/x") == str(tmp_path / "b/x")
    # A loop is ELOOP, as the kernel says; resolving it must neither hang nor
    # hand back a path whose unresolved link the kernel would follow out of the root.
    with pytest.raises(OSError) as err:
        resolve(h, "/loop/x")
    assert err.value.errno == errno.ELOOP


def test_cni_binaries_include_ipam_and_links_resolve_inside_the_root(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    # An absolute link, as packages install them: it must resolve under the root,
    # never on the machine running the doctor (which has /usr/lib/cni/bridge here).
    os.makedirs(root / "usr/lib/cni")
    os.rename(root / "opt/cni/bin/bridge", root / "usr/lib/cni/bridge")
    os.symlink("/usr/lib/cni/bridge", root / "opt/cni/bin/bridge")
    f = results(root, checks=["cni.plugins"])["cni.plugins"].finding
    assert f.status.value == "pass" and "host-local (ipam of bridge)" in f.seen
    os.unlink(root / "usr/lib/cni/bridge")
    os.unlink(root / "opt/cni/bin/host-local")
    f = results(root, checks=["cni.plugins"])["cni.plugins"].finding
    assert f.status.value == "fail" and f.summary == "CNI plugins missing: bridge, host-local"


def test_flannel_needs_its_delegate_and_host_local(tmp_path):
    root = copy_fixture("k3s", tmp_path)
    os.unlink(root / "var/lib/rancher/k3s/data/cni/host-local")
    f = results(root, checks=["cni.plugins"])["cni.plugins"].finding
    assert f.status.value == "fail" and "host-local" in f.summary and "flannel's delegate" in f.seen


def test_crictl_naming_a_docker_shim_on_a_containerd_node_warns_even_if_it_exists(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    write(root, "/etc/crictl.yaml", "runtime-endpoint: unix:///var/run/cri-dockerd.sock\n")
    import socket as s
    leftover = s.socket(s.AF_UNIX)
    os.makedirs(root / "var/run", exist_ok=True)
    leftover.bind(str(root / "var/run/cri-dockerd.sock"))
    try:
        with FakeCriServer(root / "run/containerd/containerd.sock"):
            f = results(root, checks=["crictl.endpoint"])["crictl.endpoint"].finding
    finally:
        leftover.close()
    assert f.status.value == "warn" and "Docker shim" in f.summary
