"""crio.* checks: crio.conf then crio.conf.d in lexical order, last wins."""
import pytest

try:
    from tests.test_doctor_support import FakeCriServer, FakeRuntime, copy_fixture, fixture, results, status, write
except ImportError:
    from test_doctor_support import FakeCriServer, FakeRuntime, copy_fixture, fixture, results, status, write

from cri_exporter.doctor.facts import crio as crio_facts
from cri_exporter.hostfs import HostFS


@pytest.mark.parametrize("check_id,healthy,broken", [
    ("crio.config.parse", "pass", "pass"),
    ("crio.cgroup_manager", "pass", "fail"),
    # cgroupfs with conmon_cgroup = "system.slice": refused before 1.33, taken as empty from
    # 1.33 on; with no runtime to tell the version, a warning (see the test below).
    ("crio.conmon_cgroup", "pass", "warn"),
])
def test_crio_checks_on_fixture_nodes(check_id, healthy, broken):
    assert status(fixture("crio"), check_id) == healthy
    assert status(fixture("crio-broken"), check_id) == broken


def test_dropins_apply_in_lexical_order_per_key():
    cfg = crio_facts.load(HostFS(fixture("crio-broken")))
    assert cfg.files == ["/etc/crio/crio.conf", "/etc/crio/crio.conf.d/01-cgroupfs.conf",
                         "/etc/crio/crio.conf.d/99-conmon.conf"]
    assert cfg.get("crio.runtime", "cgroup_manager") == ("cgroupfs", "/etc/crio/crio.conf.d/01-cgroupfs.conf")
    assert cfg.get("crio.image", "pause_image") == ("registry.k8s.io/pause:3.10", "/etc/crio/crio.conf")


def test_findings_name_the_file_that_set_the_value():
    r = results(fixture("crio-broken"), checks=["crio"])
    assert "01-cgroupfs.conf" in r["crio.cgroup_manager"].finding.seen
    assert 'cgroup_manager = "systemd"\nconmon_cgroup = "system.slice"' in r["crio.cgroup_manager"].finding.fix
    assert "99-conmon.conf" in r["crio.conmon_cgroup"].finding.seen


def test_parse_error_in_a_dropin():
    r = results(fixture("crio-parse-error"), checks=["crio"])
    f = r["crio.config.parse"].finding
    assert f.status.value == "fail" and "20-bad.conf:1:" in f.seen
    assert r["crio.cgroup_manager"].status.value == "skip"


def test_cgroupfs_on_v2_without_kubelet_warns(tmp_path):
    root = copy_fixture("crio-broken", tmp_path)
    (root / "var/lib/kubelet/config.yaml").unlink()
    (root / "var/lib/kubelet/kubeadm-flags.env").unlink()
    (root / "usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf").unlink()
    assert status(root, "crio.cgroup_manager") == "warn"


def test_pause_image_against_kubelet_and_store(tmp_path):
    root = copy_fixture("crio", tmp_path)
    sock = tmp_path / "crio.sock"
    fake = FakeRuntime(name="cri-o", version="1.31.1", images=[("registry.k8s.io/pause:3.10", True)])
    with FakeCriServer(sock, fake):
        ep = f"unix://{sock}"
        assert status(root, "crio.pause_image", ep) == "pass"
        write(root, "/etc/default/kubelet", "KUBELET_EXTRA_ARGS=--pod-infra-container-image=registry.k8s.io/pause:3.9\n")
        f = results(root, ep, checks=["crio.pause_image"])["crio.pause_image"].finding
        assert f.status.value == "warn" and "different pause image" in f.summary
        fake.images = []
        f = results(root, ep, checks=["crio.pause_image"])["crio.pause_image"].finding
        assert "not in the image store" in f.summary


def test_crio_node_detected_from_cri_version(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)  # has a containerd config file
    sock = tmp_path / "crio.sock"
    with FakeCriServer(sock, FakeRuntime(name="cri-o", version="1.31.1")):
        r = results(root, f"unix://{sock}", checks=["containerd.cri.disabled", "crio.config.parse"])
    assert r["containerd.cri.disabled"].status.value == "skip"
    assert r["crio.config.parse"].status.value == "pass"


@pytest.mark.parametrize("version,conmon,monitor,expected", [
    ("1.32.4", "system.slice", None, "fail"),   # before 1.33: cgroupfs wants "pod" or empty
    ("1.33.0", "system.slice", None, "pass"),   # 1.33+: system.slice is taken as empty with cgroupfs
    ("1.32.4", None, None, "fail"),             # before 1.33 empty means system.slice, refused with cgroupfs
    ("1.36.2", None, None, "pass"),
    ("1.36.2", None, "system.slice", "pass"),
    ("1.36.2", None, "conmon.slice", "fail"),   # per-handler monitor_cgroup counts when conmon_cgroup is unset
    ("1.36.2", "pod", "conmon.slice", "pass"),  # a set conmon_cgroup overrides the handler's
])
def test_monitor_cgroup_per_handler_and_version(version, conmon, monitor, expected, tmp_path):
    root = copy_fixture("crio-broken", tmp_path)
    (root / "etc/crio/crio.conf.d/99-conmon.conf").unlink()
    body = f'[crio.runtime]\nconmon_cgroup = "{conmon or ""}"\n'  # crio.conf sets one: "" unsets it
    body += "[crio.runtime.runtimes.crun]\n" + (f'monitor_cgroup = "{monitor}"\n' if monitor else "")
    write(root, "/etc/crio/crio.conf.d/99-conmon.conf", body)
    with FakeCriServer(root / "run/crio/crio.sock", FakeRuntime(name="cri-o", version=version)):
        f = results(root, checks=["crio.conmon_cgroup"])["crio.conmon_cgroup"].finding
    assert f.status.value == expected, f
    assert f"CRI-O {version.rsplit('.', 1)[0]}" in f.seen
