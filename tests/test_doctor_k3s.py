"""k3s and RKE2 nodes read as they are built (tests/fixtures/hosts/{k3s,rke2}-healthy/README.md).

A k3s node:
containerd's generated version 3 config, the CNI binaries behind k3s's
absolute symlinks, and the kubelet k3s runs in its own process, configured by
its drop-in directory, its own arguments and `kubelet-arg`. The healthy node
raises no warning at all; each broken variant is flagged by the check that
owns it."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from cri_exporter.doctor.facts import layouts
from tests.test_doctor_support import FIXTURES, FakeCriServer, FakeRuntime, results, write

DATA = "/var/lib/rancher/k3s"
DROPINS = f"{DATA}/agent/etc/kubelet.conf.d"
# network.* read the test machine's own links; everything else reads the fixture tree.
MACHINE_DEPENDENT = ["network"]


def _copy(name: str):
    d = Path(tempfile.mkdtemp(prefix="k3s-", dir="/tmp"))
    host = d / "h"
    shutil.copytree(FIXTURES / name, host, symlinks=True)
    for top in ("etc", "var"):
        for dirpath, _, files in os.walk(host / top):
            for f in files:
                os.utime(os.path.join(dirpath, f), (1.6e9, 1.6e9), follow_symlinks=False)
    return d, host


@pytest.fixture
def root():
    """A copy of the healthy k3s node in a short directory (its socket path must
    fit AF_UNIX's 108 bytes), its files as old as its containerd (no drift)."""
    d, host = _copy("k3s-healthy")
    yield host
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def rke2():
    d, host = _copy("rke2-healthy")
    yield host
    shutil.rmtree(d, ignore_errors=True)


def runtime(**kw) -> FakeRuntime:
    """containerd 2.x as k3s ships it: RuntimeConfig answers (systemd), the
    deprecation condition is reported, the pause image is in the store under
    its normalized name."""
    return FakeRuntime(version="v2.1.4-k3s1", cgroup_driver="systemd",
                       images=[("docker.io/rancher/mirrored-pause:3.6", True)],
                       extra_conditions=[("ContainerdHasNoDeprecationWarnings", True, "", "")], **kw)


def doctor(host: Path, checks=None, rt: FakeRuntime | None = None):
    with FakeCriServer(host / layouts.K3S_SOCKET.lstrip("/"), rt or runtime()):
        return results(host, checks=checks, skip=MACHINE_DEPENDENT)


def test_healthy_k3s_raises_no_warning_and_runs_the_kubelet_checks(root):
    r = doctor(root)
    bad = {k: (v.status.value, v.finding.summary) for k, v in r.items() if v.status.value in ("warn", "fail")}
    assert bad == {}
    # Every check that applies to k3s ran and passed; none skipped for want of a file.
    for check_id in ("kubelet.config.parse", "kubelet.runtime_endpoint", "kubelet.removed_flags", "kubelet.eviction",
                     "certs.kubelet", "containerd.cgroup_driver", "containerd.sandbox_image", "containerd.oom_score_adj",
                     "containerd.config.version", "containerd.config.ignored_keys", "cni.config", "cni.plugins",
                     "crictl.endpoint", "kernel.module.br_netfilter", "kernel.sysctl.bridge_nf_call_iptables",
                     "kernel.headroom", "cri.deprecations"):
        assert r[check_id].status.value == "pass", (check_id, r[check_id].finding)
    skips = {k: v.finding.summary for k, v in r.items() if v.status.value == "skip"}
    assert skips["containerd.service"] == "containerd is started by k3s, not by a containerd.service unit"
    parse = r["kubelet.config.parse"].finding
    assert parse.summary == f"no config file: the kubelet runs on its defaults, 1 drop-in(s) in {DROPINS} and flags"
    assert "kubelet-arg in /etc/rancher/k3s/config.yaml" in parse.seen
    # k3s's partial evictionHard drop-in is merged into the kubelet's defaults (no --config file).
    eviction = r["kubelet.eviction"].finding.seen
    assert "memory.available<100Mi, nodefs.available<5%, nodefs.inodesFree<5%, imagefs.available<5%" in eviction
    assert f"kubelet default, then {DROPINS}/00-k3s-defaults.conf" in eviction
    # The client certificate is the one k3s's kubelet.kubeconfig names.
    assert f"kubelet client certificate: {DATA}/agent/client-kubelet.crt CN=system:node:node1" in r["certs.kubelet"].finding.seen
    assert r["kubelet.removed_flags"].finding.seen.endswith(
        "kubelet version unknown (compiled into k3s; no package records it)")
    # data/cni/* are absolute links into data/<hash>/bin: followed inside the host root.
    assert "bin dirs: /var/lib/rancher/k3s/data/cni" in r["cni.plugins"].finding.seen
    assert "image store: present" in r["containerd.sandbox_image"].finding.seen


def test_kubelet_args_from_config_files_and_the_unit_in_k3s_order(root):
    write(root, "/etc/rancher/k3s/config.yaml.d/50-extra.yaml", 'kubelet-arg+:\n  - "--container-runtime=remote"\n')
    unit = root / "etc/systemd/system/k3s.service"
    unit.write_text(unit.read_text().replace("    server \\\n", "    server --kubelet-arg=logtostderr=true \\\n"))
    r = doctor(root, ["kubelet.removed_flags", "kubelet.config.parse"])
    f = r["kubelet.removed_flags"].finding
    assert f.status.value == "fail"
    assert "--container-runtime=remote in kubelet-arg in /etc/rancher/k3s/config.yaml.d/50-extra.yaml" in f.seen
    assert "--logtostderr=true in kubelet-arg in /etc/systemd/system/k3s.service" in f.seen
    # kubelet-arg+ appended to the base file's list: max-pods is still there.
    from cri_exporter.doctor.context import Context
    from cri_exporter.hostfs import HostFS
    flags = Context(HostFS(str(root)), "unix:///none.sock").kubelet.flags
    assert flags["max-pods"] == "150" and flags["config-dir"] == DROPINS and "config" not in flags


def test_a_users_kubelet_drop_in_is_merged_after_k3s_defaults(root):
    # `--kubelet-arg=config=...` is copied by k3s to 10-cli-config.conf, applied after 00-k3s-defaults.conf.
    write(root, f"{DROPINS}/10-cli-config.conf", "apiVersion: kubelet.config.k8s.io/v1beta1\n"
          "kind: KubeletConfiguration\ncgroupDriver: cgroupfs\nevictionHard:\n  memory.available: 500Mi\n")
    r = doctor(root, ["containerd.cgroup_driver", "kubelet.eviction", "kubelet.config.parse"])
    driver = r["containerd.cgroup_driver"].finding
    # The kubelet's version is unknown on k3s: it may take the runtime's driver (1.31+), so warn, not fail.
    assert driver.status.value == "warn" and f"{DROPINS}/10-cli-config.conf" in driver.seen
    assert "memory.available<500Mi" in r["kubelet.eviction"].finding.seen
    assert "2 drop-in(s)" in r["kubelet.config.parse"].finding.summary
    write(root, f"{DROPINS}/20-cli-config-dir/bad.conf", "evictionHard: [\n")
    f = doctor(root, ["kubelet.config.parse"])["kubelet.config.parse"].finding
    assert f.status.value == "fail" and "20-cli-config-dir/bad.conf" in f.seen


def test_cni_links_into_a_removed_data_dir_fail(root):
    current = os.readlink(root / "var/lib/rancher/k3s/data/current")
    shutil.rmtree(root / current.lstrip("/"))  # the extracted release is gone; data/cni still points into it
    f = doctor(root, ["cni.plugins"])["cni.plugins"].finding
    assert f.status.value == "fail" and "flannel" in f.summary and "host-local" in f.summary


def test_older_k3s_without_the_drop_in_directory_skips_the_kubelet_checks(root):
    os.remove(root / f"{DROPINS.lstrip('/')}/00-k3s-defaults.conf")
    r = doctor(root, ["kubelet.config.parse", "kubelet.eviction"])
    for f in r.values():
        assert f.status.value == "skip"
        assert f.finding.summary == (f"k3s runs the kubelet in its own process ({DATA}): "
                                     "its kubelet settings are in no file to read")


def test_k3s_config_goes_into_the_bundle_redacted_and_the_kubeconfig_not_at_all(root, tmp_path):
    import tarfile

    from cri_exporter.doctor.bundle import write_bundle
    from cri_exporter.doctor.context import Context
    from cri_exporter.doctor.runner import run
    from cri_exporter.hostfs import HostFS

    cfg = root / "etc/rancher/k3s/config.yaml"
    cfg.write_text(cfg.read_text() + "token: K10f00d::server:s3cr3t-join-token\n")
    with FakeCriServer(root / layouts.K3S_SOCKET.lstrip("/"), runtime()):
        ctx = Context(HostFS(str(root)), None, cri_timeout=2.0)
        report = run(ctx, ["kubelet", "certs"])
        out = tmp_path / "b.tar.gz"
        write_bundle(str(out), report, ctx)
        ctx.close()
    with tarfile.open(out) as tar:
        names = tar.getnames()
        text = "".join(tar.extractfile(m).read().decode() for m in tar.getmembers() if m.isfile())
    assert any(n.endswith("etc/rancher/k3s/config.yaml") for n in names), names
    assert "s3cr3t-join-token" not in text and "token: REDACTED" in text
    assert not any(n.endswith("kubelet.kubeconfig") for n in names)


def rke2_runtime() -> FakeRuntime:
    """RKE2 v1.33's containerd 1.7: RuntimeConfig Unimplemented, the pause image under its Hub name."""
    return FakeRuntime(version="v1.7.27-k3s1", cgroup_driver=None,
                       images=[("docker.io/rancher/mirrored-pause:3.6", True)],
                       extra_conditions=[("ContainerdHasNoDeprecationWarnings", True, "", "")])


RKE2_RELEASE = "/var/lib/rancher/rke2/data/v1.33.4-rke2r1-daf85d39fe51"


def test_healthy_rke2_raises_no_warning_and_knows_its_kubelet_version(rke2):
    r = doctor(rke2, rt=rke2_runtime())
    bad = {k: (v.status.value, v.finding.summary) for k, v in r.items() if v.status.value in ("warn", "fail")}
    assert bad == {}
    for check_id in ("kubelet.config.parse", "kubelet.runtime_endpoint", "kubelet.removed_flags", "kubelet.eviction",
                     "certs.kubelet", "containerd.cgroup_driver", "containerd.sandbox_image", "cni.config",
                     "cni.plugins", "crictl.endpoint", "disk.imagefs", "disk.nodefs"):
        assert r[check_id].status.value == "pass", (check_id, r[check_id].finding)
    # canal puts pods on no Linux bridge: br_netfilter is not needed, and says why.
    assert "puts pods on no Linux bridge" in r["kernel.module.br_netfilter"].finding.seen
    assert r["kubelet.removed_flags"].finding.seen.endswith(
        f"kubelet 1.33.4 (RKE2 release directory of the running kubelet (pid 2301): {RKE2_RELEASE})")
    # containerd's --root (RKE2 passes it; the config has none) is the image filesystem.
    assert r["disk.imagefs"].finding.summary.startswith("imagefs /var/lib/rancher/rke2/agent/containerd ")
    # index.docker.io/rancher/mirrored-pause:3.6 is docker.io/rancher/mirrored-pause:3.6 in the store.
    assert "image store: present" in r["containerd.sandbox_image"].finding.seen


def test_rke2_kubelet_version_decides_a_removed_flag(rke2):
    cmdline = rke2 / "proc/2301/cmdline"
    cmdline.write_bytes(cmdline.read_bytes() + b"--pod-infra-container-image=index.docker.io/rancher/mirrored-pause:3.6\0")
    f = doctor(rke2, ["kubelet.removed_flags"], rke2_runtime())["kubelet.removed_flags"].finding
    assert f.status.value == "warn"  # 1.33 still takes it; 1.35 refuses it
    # Without /proc/<pid>/exe (no ptrace rights) the release RKE2's bin link names is the version.
    os.remove(rke2 / "proc/2301/exe")
    release = rke2 / "var/lib/rancher/rke2/data/v1.35.0-rke2r1-0123456789ab/bin"
    release.mkdir(parents=True)
    (rke2 / "var/lib/rancher/rke2/bin").unlink()
    (rke2 / "var/lib/rancher/rke2/bin").symlink_to("data/v1.35.0-rke2r1-0123456789ab/bin")
    f = doctor(rke2, ["kubelet.removed_flags"], rke2_runtime())["kubelet.removed_flags"].finding
    assert f.status.value == "fail"
    assert "kubelet 1.35.0 (RKE2 release directory of /var/lib/rancher/rke2/bin, the release RKE2 runs" in f.seen


def test_a_kubelet_not_run_from_an_rke2_release_gets_no_version_from_it(rke2):
    # A kubelet installed by hand, beside a leftover RKE2 bin link: its version is unknown, not RKE2's.
    exe = rke2 / "proc/2301/exe"
    exe.unlink()
    exe.symlink_to("/usr/local/bin/kubelet")
    f = doctor(rke2, ["kubelet.removed_flags"], rke2_runtime())["kubelet.removed_flags"].finding
    assert f.seen.endswith("kubelet version unknown (no dpkg/rpm record of a kubelet package)")
