"""network.* checks with real netlink, in network namespaces the test
creates (ip netns add + dummy/bridge/veth links); the host's own interfaces
are never touched."""
import os
import shutil
import subprocess
import uuid

import pytest

try:
    from tests.exporter_proc import wait_for
    from tests.test_doctor_support import FakeCriServer, FakeRuntime, copy_fixture
except ImportError:
    from exporter_proc import wait_for
    from test_doctor_support import FakeCriServer, FakeRuntime, copy_fixture

pytestmark = pytest.mark.skipif(shutil.which("ip") is None or os.geteuid() != 0, reason="needs root and iproute2")


def ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def netns():
    name = f"doctor-t-{uuid.uuid4().hex[:8]}"
    try:
        ip("netns", "add", name)
    except subprocess.CalledProcessError as e:
        pytest.skip(f"cannot create network namespaces here: {e.stderr}")
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


@pytest.fixture
def pod_network(netns):
    """A node-like namespace: uplink up0 (mtu 1400, default route), the CNI
    bridge cni0 and a veth pair, both mtu 1500. The uplink is a veth too
    (with its peer up for carrier): some kernels here lack the dummy module."""
    n = ["-n", netns]
    ip(*n, "link", "add", "up0", "mtu", "1400", "type", "veth", "peer", "name", "up0peer", "mtu", "1400")
    ip(*n, "link", "set", "up0peer", "up")
    ip(*n, "link", "set", "up0", "up")
    ip(*n, "addr", "add", "10.250.0.2/24", "dev", "up0")
    ip(*n, "route", "add", "default", "via", "10.250.0.1", "dev", "up0")
    ip(*n, "link", "add", "cni0", "mtu", "1500", "type", "bridge")
    ip(*n, "link", "set", "cni0", "up")
    ip(*n, "link", "add", "vethpod0", "mtu", "1500", "type", "veth", "peer", "name", "vethpod1", "mtu", "1500")
    ip(*n, "link", "set", "vethpod0", "master", "cni0")
    return netns


def run_net(root, netns, ids):
    from cri_exporter.doctor import run_doctor
    from cri_exporter.hostfs import HostFS

    return run_doctor(HostFS(str(root)), f"unix://{root}/none.sock", checks=ids, netns=netns).by_id()


def test_default_route(pod_network, tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    r = run_net(root, pod_network, ["network.default_route"])["network.default_route"]
    assert r.status.value == "pass" and "10.250.0.1 dev up0" in r.finding.summary
    ip("-n", pod_network, "route", "del", "default")
    assert run_net(root, pod_network, ["network.default_route"])["network.default_route"].status.value == "fail"


def test_mtu_above_uplink(pod_network, tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    r = run_net(root, pod_network, ["network.mtu"])["network.mtu"]
    assert r.status.value == "warn"
    assert "uplink up0 mtu 1400" in r.finding.seen and "cni0 (bridge) mtu 1500" in r.finding.seen
    for link in ("vethpod0", "vethpod1", "cni0"):
        ip("-n", pod_network, "link", "set", link, "mtu", "1400")
    assert run_net(root, pod_network, ["network.mtu"])["network.mtu"].status.value == "pass"


def test_bridge_up_down_missing(pod_network, tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)  # its CNI config uses bridge "cni0"
    assert run_net(root, pod_network, ["network.bridge"])["network.bridge"].status.value == "pass"
    ip("-n", pod_network, "link", "set", "cni0", "down")
    r = run_net(root, pod_network, ["network.bridge"])["network.bridge"]
    assert r.status.value == "fail" and "down" in r.finding.summary
    ip("-n", pod_network, "link", "del", "cni0")
    assert run_net(root, pod_network, ["network.bridge"])["network.bridge"].status.value == "warn"
    ip("-n", pod_network, "link", "add", "cni0", "type", "veth", "peer", "name", "cni0peer")
    r = run_net(root, pod_network, ["network.bridge"])["network.bridge"]
    assert r.status.value == "fail" and "cni0 is a veth, not a bridge" in r.finding.summary


def test_missing_bridge_is_expected_while_only_host_network_pods_run(pod_network, tmp_path):
    """The bridge plugin creates cni0 with the first pod on the pod network: a
    node running only hostNetwork DaemonSets (kube-proxy, the CNI's own) has
    none and is healthy; a pod on the pod network without it is not."""
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    ip("-n", pod_network, "link", "del", "cni0")
    fake = FakeRuntime(sandboxes=["aaaa1111", "bbbb2222"], host_network={"aaaa1111", "bbbb2222"})
    with FakeCriServer(root / "cri.sock", fake):
        from cri_exporter.doctor import run_doctor
        from cri_exporter.hostfs import HostFS

        def bridge():
            return run_doctor(HostFS(str(root)), f"unix://{root}/cri.sock", checks=["network.bridge"],
                              netns=pod_network).by_id()["network.bridge"]

        r = bridge()
        assert r.status.value == "pass" and "no pod on the pod network runs here" in r.finding.summary
        assert "ready sandboxes: 2, 0 on the pod network" in r.finding.seen
        fake.host_network.discard("bbbb2222")
        r = bridge()
        assert r.status.value == "fail" and "ready sandboxes: 2, 1 on the pod network" in r.finding.seen


def test_unknown_namespace_is_a_skip_not_a_crash(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    r = run_net(root, "doctor-no-such-ns", ["network"])
    assert {x.status.value for k, x in r.items() if k != "network.leaked_netns"} == {"skip"}
    assert not os.path.exists("/run/netns/doctor-no-such-ns")  # never created


def test_leaked_cni_namespace(tmp_path, monkeypatch):
    from cri_exporter.doctor.checks import network

    # The check lists the first 20 leaked names in sorted order; "cni-0-" sorts
    # before every cni-<uuid> name, so namespaces other work left behind on this
    # machine cannot push this one off the list.
    name = f"cni-0-doctor-{uuid.uuid4().hex[:8]}"
    try:
        ip("netns", "add", name)
    except subprocess.CalledProcessError as e:
        pytest.skip(f"cannot create network namespaces here: {e.stderr}")
    sleeper = None
    try:
        # Just created, no process yet: a sandbox on its way in, not counted.
        r = run_net("/", None, ["network.leaked_netns"])["network.leaked_netns"]
        assert name not in r.finding.seen.split(";")[0]
        assert "younger than 300 s (a sandbox being set up or torn down) not counted" in r.finding.seen
        monkeypatch.setattr(network, "NETNS_GRACE_SECONDS", 0)  # as if it had stayed past the grace
        r = run_net("/", None, ["network.leaked_netns"])["network.leaked_netns"]
        assert r.status.value == "warn" and name in r.finding.seen
        assert f"ip netns delete {name}" in r.finding.fix or "leaked" in r.finding.summary
        # A process inside (like a sandbox's pause) makes it owned.
        sleeper = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "600"])  # killed below
        wait_for(lambda: name not in run_net("/", None, ["network.leaked_netns"])["network.leaked_netns"].finding.seen,
                 timeout=30, interval=0.05, what=f"{name} owned by the process inside it")
    finally:
        if sleeper:
            sleeper.kill()
            sleeper.wait()
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
