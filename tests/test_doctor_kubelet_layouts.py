"""The kubelet's effective configuration read as the kubelet reads it, on the
layouts operators run (kubeadm on Debian and on RPM distributions, kubespray,
containerd 2.x with drop-ins), and the Kubernetes 1.35/1.36 facts that depend
on the kubelet's version. Healthy variants must raise no warning at all."""
import os
import shutil
import sqlite3
import struct

import pytest

from tests.test_doctor_support import FIXTURES, FakeCriServer, FakeRuntime, copy_fixture, results, write

from cri_exporter.doctor.facts import packages, systemd
from cri_exporter.hostfs import HostFS

# network.* read the test machine's own links; everything else reads the fixture tree.
MACHINE_DEPENDENT = ["network"]
HEALTHY = [
    # (fixture, what the runtime answers: version, RuntimeConfig driver)
    ("kubeadm-debian-containerd2", "v2.1.9", "systemd"),
    ("kubeadm-rpm", "v1.7.27", None),
    ("kubespray", "v1.7.22", None),
    ("kubeadm-containerd-v2", "v1.7.22", None),
]


def healthy_run(name, tmp_path, version, driver, checks=None):
    return healthy_run_root(copy_fixture(name, tmp_path), version, driver, checks)


def healthy_run_root(root, version, driver, checks=None):
    # The fixture's containerd (pid 812) started in 2023: files as old as that, no drift.
    for dirpath, _, files in os.walk(root / "etc"):
        for f in files:
            os.utime(os.path.join(dirpath, f), (1.6e9, 1.6e9), follow_symlinks=False)
    with FakeCriServer(root / "run/containerd/containerd.sock", FakeRuntime(version=version, cgroup_driver=driver)):
        return root, results(root, checks=checks, skip=MACHINE_DEPENDENT)


@pytest.mark.parametrize("name,version,driver", HEALTHY)
def test_healthy_layouts_raise_no_warning(name, version, driver, tmp_path):
    _, r = healthy_run(name, tmp_path, version, driver)
    bad = {k: (v.status.value, v.finding.summary) for k, v in r.items() if v.status.value in ("warn", "fail")}
    assert bad == {}
    assert r["kubelet.config.parse"].status.value == "pass"


def test_kubespray_kubelet_env_spread_over_lines_is_read_as_systemd_does(tmp_path):
    _, r = healthy_run("kubespray", tmp_path, "v1.7.22", None, checks=["kubelet"])
    seen = r["kubelet.config.parse"].finding.seen
    assert "/etc/kubernetes/kubelet-config.yaml" in r["kubelet.config.parse"].finding.summary
    assert "EnvironmentFile /etc/kubernetes/kubelet.env" in seen
    ep = r["kubelet.runtime_endpoint"].finding
    assert ep.status.value == "pass" and "/etc/kubernetes/kubelet-config.yaml" in ep.seen  # via /var/run -> /run


def test_only_the_environment_files_the_unit_names_count(tmp_path):
    # kubeadm-rpm has a stray /etc/default/kubelet with --logtostderr and --cgroup-driver=cgroupfs:
    # its unit names /etc/sysconfig/kubelet, so systemd never reads the Debian file.
    _, r = healthy_run("kubeadm-rpm", tmp_path, "v1.7.27", None, checks=["kubelet.removed_flags", "containerd.cgroup_driver"])
    assert r["kubelet.removed_flags"].status.value == "pass"
    assert "rpm: kubelet 1.34.2" in r["kubelet.removed_flags"].finding.seen
    root = copy_fixture("kubeadm-rpm", tmp_path / "b")
    write(root, "/etc/sysconfig/kubelet", 'KUBELET_EXTRA_ARGS=--logtostderr=true --v=2\n')  # unquoted: two flags
    f = results(root, checks=["kubelet.removed_flags"])["kubelet.removed_flags"].finding
    assert f.status.value == "fail" and "--logtostderr=true in /etc/sysconfig/kubelet (removed in 1.26)" in f.seen


def test_unit_files_parse_env_continuations_and_quotes():
    env = systemd.parse_env_file('A="--x=1 \\\n--y=2"\nB=\'$not expanded\'\n# c\nC = plain  \n')
    assert env == {"A": "--x=1 --y=2", "B": "$not expanded", "C": "plain"}


@pytest.mark.parametrize("version,where,expected", [
    ("1.35.0-1.1", "/var/lib/kubelet/kubeadm-flags.env", "fail"),
    ("1.34.3-1.1", "/var/lib/kubelet/kubeadm-flags.env", "pass"),  # kubeadm writes it there itself
    ("1.34.3-1.1", "/etc/default/kubelet", "warn"),                # the operator's own: breaks at 1.35
    (None, "/var/lib/kubelet/kubeadm-flags.env", "warn"),
])
def test_pod_infra_container_image_is_fatal_from_1_35(version, where, expected, tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    var = "KUBELET_KUBEADM_ARGS" if where.endswith("kubeadm-flags.env") else "KUBELET_EXTRA_ARGS"
    write(root, where, f'{var}="--pod-infra-container-image=registry.k8s.io/pause:3.10"\n')
    if version:
        write(root, "/var/lib/dpkg/status", f"Package: kubelet\nStatus: install ok installed\nVersion: {version}\n")
    f = results(root, checks=["kubelet.removed_flags"])["kubelet.removed_flags"].finding
    assert f.status.value == expected
    assert ("kubelet version unknown" in f.seen) == (version is None)
    assert "--pod-infra-container-image" in f.seen


@pytest.mark.parametrize("version,fail_v1,expected", [
    ("1.35.0-1.1", None, "fail"),   # failCgroupV1 defaults to true from 1.35
    ("1.35.0-1.1", "false", "warn"),
    ("1.34.1-1.1", None, "warn"),
    (None, None, "warn"),           # unknown: judged conservatively
    (None, "true", "fail"),
])
def test_cgroup_v1_by_kubelet_version(version, fail_v1, expected, tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    (root / "sys/fs/cgroup/cgroup.controllers").unlink()
    write(root, "/proc/cgroups", "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t2\t1\t1\nmemory\t3\t1\t1\n")
    os.makedirs(root / "sys/fs/cgroup/memory")
    if fail_v1:
        with open(root / "var/lib/kubelet/config.yaml", "a") as f:
            f.write(f"failCgroupV1: {fail_v1}\n")
    if version:
        write(root, "/var/lib/dpkg/status", f"Package: kubelet\nStatus: install ok installed\nVersion: {version}\n")
    assert results(root, checks=["kernel.cgroup.version"])["kernel.cgroup.version"].status.value == expected


@pytest.mark.parametrize("kubelet_version,answer,expected", [
    ("1.35.0-1.1", "systemd", "pass"),   # the kubelet takes the runtime's driver (KubeletCgroupDriverFromCRI)
    ("1.35.0-1.1", None, "fail"),        # Unimplemented (containerd 1.7): the kubelet's own setting counts
    (None, "systemd", "warn"),           # unknown kubelet version: maybe, maybe not
    ("1.30.2-1.1", "systemd", "fail"),   # before the gate's default
])
def test_cgroup_driver_mismatch_with_runtime_config(kubelet_version, answer, expected, tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    write(root, "/var/lib/kubelet/config.yaml", (root / "var/lib/kubelet/config.yaml").read_text()
          .replace("cgroupDriver: systemd", "cgroupDriver: cgroupfs"))
    if kubelet_version:
        write(root, "/var/lib/dpkg/status", f"Package: kubelet\nStatus: install ok installed\nVersion: {kubelet_version}\n")
    with FakeCriServer(root / "run/containerd/containerd.sock", FakeRuntime(version="v2.1.9", cgroup_driver=answer)):
        f = results(root, checks=["containerd.cgroup_driver"])["containerd.cgroup_driver"].finding
    assert f.status.value == expected, f
    if expected == "pass":
        assert "RuntimeConfig answer (systemd)" in f.seen


def test_config_dir_drop_ins_merge_and_a_bad_one_fails(tmp_path):
    root = copy_fixture("kubeadm-debian-containerd2", tmp_path)
    write(root, "/etc/kubernetes/kubelet.conf.d/20-more/30-driver.conf",
          "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: cgroupfs\n")
    write(root, "/etc/kubernetes/kubelet.conf.d/05-ignored.yaml", "cgroupDriver: nonsense\n")  # not *.conf
    r = results(root, checks=["kubelet.config.parse", "kubelet.eviction"])
    assert "2 drop-in(s)" in r["kubelet.config.parse"].finding.summary
    from cri_exporter.doctor.context import Context
    ctx = Context(HostFS(str(root)), "unix:///none.sock")
    assert ctx.kubelet.cgroup_driver() == ("cgroupfs", "cgroupDriver in /etc/kubernetes/kubelet.conf.d/20-more/30-driver.conf")
    assert ctx.kubelet.config["podPidsLimit"] == 4096
    write(root, "/etc/kubernetes/kubelet.conf.d/40-bad.conf", "evictionHard: [\n")
    f = results(root, checks=["kubelet.config.parse"])["kubelet.config.parse"].finding
    assert f.status.value == "fail" and "40-bad.conf" in f.seen


@pytest.mark.parametrize("extra,expected", [
    ("", "warn"),                                   # partial map in config.yaml: the others are 0
    ("mergeDefaultEvictionSettings: true\n", "pass"),
])
def test_partial_eviction_hard_and_merge_default_eviction_settings(extra, expected, tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    with open(root / "var/lib/kubelet/config.yaml", "a") as f:
        f.write('evictionHard:\n  memory.available: "50Mi"\n' + extra)
    f = results(root, checks=["kubelet.eviction"])["kubelet.eviction"].finding
    assert f.status.value == expected, f


def rpm_header(name: str, version: str) -> bytes:
    entries, data = b"", b""
    for tag, value in ((1000, name), (1001, version)):
        entries += struct.pack(">iiii", tag, 6, len(data), 1)
        data += value.encode() + b"\0"
    return struct.pack(">ii", 2, len(data)) + entries + data


def test_rpm_sqlite_database_is_read(tmp_path):
    db = tmp_path / "usr/lib/sysimage/rpm/rpmdb.sqlite"
    db.parent.mkdir(parents=True)
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)")
    for n, v in (("kubelet", "1.36.1"), ("cri-o", "1.35.2"), ("glibc", "2.39")):
        con.execute("INSERT INTO Packages (blob) VALUES (?)", (rpm_header(n, v),))
    con.commit()
    con.close()
    found = packages.installed(HostFS(str(tmp_path)), ("kubelet", "cri-o", "containerd"))
    assert {k: (v.major, v.minor, v.patch) for k, v in found.items()} == {"kubelet": (1, 36, 1), "cri-o": (1, 35, 2)}


def test_rpm_berkeley_db_database_of_rhel_8_is_read(tmp_path):
    """RHEL 8's rpm keeps a Berkeley DB hash database; tests/fixtures/rpmdb/Packages
    was written by Berkeley DB 5.3 (overflow-page and inline headers)."""
    root = copy_fixture("kubeadm-rpm", tmp_path)
    (root / "var/lib/rpm/rpmdb.sqlite").unlink()
    shutil.copy(FIXTURES.parent / "rpmdb" / "Packages", root / "var/lib/rpm/Packages")
    found = packages.installed(HostFS(str(root)), ("kubelet", "containerd.io", "cri-tools", "cri-o"))
    assert {k: (v.major, v.minor, v.patch) for k, v in found.items()} == {
        "kubelet": (1, 33, 4), "containerd.io": (1, 7, 28), "cri-tools": (1, 33, 0)}
    _, r = healthy_run_root(root, "v1.7.28", None)
    bad = {k: (v.status.value, v.finding.summary) for k, v in r.items() if v.status.value in ("warn", "fail")}
    assert bad == {}
    assert "rpm: kubelet 1.33.4" in r["kubelet.removed_flags"].finding.seen


def test_a_truncated_berkeley_db_database_is_no_crash(tmp_path):
    data = (FIXTURES.parent / "rpmdb" / "Packages").read_bytes()
    for size in (0, 100, 4096, 4096 * 3 + 17, len(data) - 4096):
        write_bytes = tmp_path / f"t{size}" / "var/lib/rpm/Packages"
        write_bytes.parent.mkdir(parents=True)
        write_bytes.write_bytes(data[:size])
        found = packages.installed(HostFS(str(tmp_path / f"t{size}")), ("kubelet", "containerd.io"))
        assert set(found) <= {"kubelet", "containerd.io"}
