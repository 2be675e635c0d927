"""Live pod network counters from the sandbox process's /proc/<pid>/net/dev,
over the fake node's tree (a cgroup v1 tree and <root>/proc)."""
from __future__ import annotations

import os

from cri_exporter import podnet
from cri_exporter.cgroups import NodeCgroups
from cri_exporter.hostfs import HostFS
from cri_exporter.podnet import PodNetwork
from tests.fakecri import fleet, make_cgroup_tree


def node(tmp_path, pods=2):
    pods = fleet(pods * 2)
    make_cgroup_tree(tmp_path, pods)
    hostfs = HostFS(str(tmp_path))
    return PodNetwork(hostfs, NodeCgroups(hostfs)), pods


def net_dev(root, n: int) -> str:
    return os.path.join(root, "proc", str(100_000 + n), "net", "dev")


def test_every_interface_but_lo_from_the_sandbox_process(tmp_path):
    net, pods = node(tmp_path)
    for n, p in enumerate(pods):
        got = net.interfaces(p.sandbox.id, p.sandbox.metadata.uid)
        fields = open(net_dev(tmp_path, n)).read().splitlines()[3].split()
        assert [(i.name, i.rx_bytes, i.rx_packets, i.rx_errors, i.rx_dropped,
                 i.tx_bytes, i.tx_packets, i.tx_errors, i.tx_dropped) for i in got] == [
            ("eth0", *(int(fields[k]) for k in (1, 2, 3, 4, 9, 10, 11, 12)))]
    assert {i.rx_dropped for p in pods for i in net.interfaces(p.sandbox.id, p.sandbox.metadata.uid)} != {0}


def test_a_pod_that_cannot_be_read_is_tried_again_only_after_a_while(tmp_path, monkeypatch):
    net, pods = node(tmp_path)
    p = pods[0].sandbox
    assert net.interfaces(p.id, p.metadata.uid)
    saved = net_dev(tmp_path, 0) + ".saved"
    os.rename(net_dev(tmp_path, 0), saved)
    assert net.interfaces(p.id, p.metadata.uid) is None  # the process went away
    os.rename(saved, net_dev(tmp_path, 0))

    lookups = []
    real = net.cgroups.resolver.container
    monkeypatch.setattr(net.cgroups.resolver, "container", lambda *a: lookups.append(a) or real(*a))
    assert net.interfaces(p.id, p.metadata.uid) is None and lookups == []  # within RETRY_SECONDS: not tried
    assert net.interfaces(pods[1].sandbox.id, pods[1].sandbox.metadata.uid)  # other pods unaffected

    monkeypatch.setattr(podnet, "RETRY_SECONDS", 0.0)
    assert net.interfaces(p.id, p.metadata.uid) and [a[0] for a in lookups].count(p.id) == 1  # tried, found
    net.retain({pods[1].sandbox.id})
    assert p.id not in net._failed and p.id not in net._pids


def test_pods_read_from_the_snapshot_keep_the_stats_refresh_at_its_interval(tmp_path):
    """Where every usage and network value is read live the stats snapshot is
    refreshed at the idle interval; a pod whose network falls back to the
    snapshot brings the normal interval back, so its numbers stay fresh."""
    import shutil

    from cri_exporter.exporter import Exporter
    from cri_exporter.settings import Settings
    from tests.fakecri import FakeCRI

    pods = fleet(4)
    make_cgroup_tree(tmp_path, pods)
    with FakeCRI(tmp_path / "cri.sock", pods) as fake:
        exp = Exporter(Settings(runtime_endpoint=fake.endpoint, host_root=str(tmp_path), stats_interval=15,
                                stats_idle_interval=180, collectors=("containers", "stats", "cgroups")))
        try:
            exp.scraper.scrape()
            exp.scraper.scrape()  # the first one fetched which pods use the host network
            assert exp.refresher.current_interval == 180
            shutil.rmtree(tmp_path / "proc" / "100001")
            text = b"".join(exp.render()[0]).decode()
            assert exp.refresher.current_interval == 15
            assert 'cri_pod_network_receive_bytes_total{interface="eth0",namespace="team-00"' in text
        finally:
            exp.stop()


def test_one_cgroup_procs_reader_serves_podnet_and_the_fd_sampler(tmp_path, monkeypatch):
    """NodeCgroups.procs reads cgroup.procs for both: the pod network's pause
    pid (its first line) and the fd sampler's processes (every line), compared
    with the file; a cgroup that went away is None and its path forgotten."""
    from cri_exporter.container_fds import FdSampler

    net, pods = node(tmp_path)
    sampler = FdSampler(net.hostfs, net.cgroups, 30.0, 1000)
    p = pods[0]
    sandbox_dir = net.cgroups.resolver.container(p.sandbox.id, p.sandbox.metadata.uid).procs_dir
    with open(os.path.join(sandbox_dir, "cgroup.procs"), "w") as f:
        f.write("100000\n4242\n77\n")
    reads = []
    real_procs = net.cgroups.procs
    monkeypatch.setattr(net.cgroups, "procs", lambda *a, **k: reads.append(a) or real_procs(*a, **k))
    assert net._pid(p.sandbox.id, p.sandbox.metadata.uid) == 100_000
    assert sampler.pids(p.sandbox.id, p.sandbox.metadata.uid) == [100_000, 4242, 77]
    assert reads == [(p.sandbox.id, p.sandbox.metadata.uid)] * 2

    os.rename(sandbox_dir, sandbox_dir + ".gone")
    assert net.cgroups.procs(p.sandbox.id, p.sandbox.metadata.uid) is None
    os.rename(sandbox_dir + ".gone", sandbox_dir)  # back: read again
    assert net.cgroups.procs(p.sandbox.id, p.sandbox.metadata.uid, first=True) == [100_000]
