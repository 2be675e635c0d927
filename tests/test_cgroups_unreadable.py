"""A cgroup the agent may not read is not a missing one: the readers say so,
the cgroup collector leaves its series out and counts it, the CRI collector
takes its usage from the stats snapshot (refreshed at --stats-interval), and
all of it comes back by itself. The denial is simulated here (as root, file
modes do not deny); tests/test_cgroups_unreadable_real.py does it for real.
"""
from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from cri_exporter.cgroups import CgroupUnreadable, NodeCgroups, read_all
from cri_exporter.collectors import cgroups as cgroup_collector
from cri_exporter.collectors.base import PartialCollection
from cri_exporter.collectors.cgroups import CgroupCollector
from cri_exporter.hostfs import HostFS
from tests.test_cgroups_collector import (B_ID, B_UID, CONTAINERS, FIXTURES, G_ID, G_UID, PODS, TREES, C, P, ctx_for,
                                          exposition, samples)


def deny(monkeypatch, fragment: str, errno_: int = errno.EACCES) -> None:
    """Opening or looking up any path containing `fragment` is refused."""
    real_open, real_stat = os.open, os.stat

    def check(path):
        if fragment in os.fspath(path):
            raise PermissionError(errno_, os.strerror(errno_), os.fspath(path))

    monkeypatch.setattr(os, "open", lambda path, *a, **k: check(path) or real_open(path, *a, **k))
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: check(path) or real_stat(path, *a, **k))


@pytest.mark.parametrize("err", [errno.EACCES, errno.EPERM])
def test_a_refused_file_is_unreadable_not_missing(monkeypatch, tmp_path, err):
    shutil.copytree(FIXTURES / "v2-systemd", tmp_path / "t")
    node = NodeCgroups(HostFS(str(tmp_path / "t")))
    before = time.time()
    assert node.container_stats(B_ID, B_UID) is not None
    paths = node.resolver.container(B_ID, B_UID)
    after = time.time()
    assert before <= paths.read_at <= after
    deny(monkeypatch, "memory.stat", err)  # one file is enough: a part reading would pass for a whole one
    with pytest.raises(CgroupUnreadable) as raised:
        read_all(paths)
    assert raised.value.path.endswith("memory.stat") and os.strerror(err) in str(raised.value)
    with pytest.raises(CgroupUnreadable) as raised:
        node.container_stats(B_ID, B_UID)
    assert raised.value.read_at == paths.read_at  # when it was last read whole
    assert node.resolver.container(B_ID, B_UID) is paths  # still there: not forgotten as a gone cgroup would be


def test_a_refused_lookup_is_unreadable_unless_another_candidate_exists(monkeypatch):
    root = FIXTURES / "v1-cgroupfs"
    deny(monkeypatch, f"pod{B_UID}")
    node = NodeCgroups(HostFS(str(root)))
    with pytest.raises(CgroupUnreadable):
        node.container_stats(B_ID, B_UID)
    assert node.resolver.container(B_ID, B_UID) is None  # the lenient lookup (pod network) just misses
    # a guaranteed pod lives at kubepods/pod<uid>: the burstable candidate refused first does not hide it
    monkeypatch.undo()
    deny(monkeypatch, "kubepods/burstable")
    assert NodeCgroups(HostFS(str(root))).container_stats(G_ID, G_UID) is not None


def test_a_refused_cgroup_root_makes_every_cgroup_unreadable(monkeypatch):
    root = FIXTURES / "v2-cgroupfs"
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda p: (_ for _ in ()).throw(PermissionError(errno.EACCES, "Permission denied", p))
                        if os.fspath(p).endswith("/sys/fs/cgroup") else real_listdir(p))
    with pytest.raises(CgroupUnreadable):
        NodeCgroups(HostFS(str(root))).container_stats(B_ID, B_UID)


def _scrape(collector: CgroupCollector, root: Path) -> dict:
    return samples(exposition(list(collector.collect(ctx_for(root)))))


def _not_read(got: dict, kind: str, reason: str) -> float:
    return got[("cri_cgroups_not_read", (("kind", kind), ("reason", reason)))]


@pytest.fixture
def logs(monkeypatch):
    with capture_logs() as captured:
        monkeypatch.setattr(cgroup_collector, "log", structlog.get_logger())  # bound now, whatever was cached
        yield captured


@pytest.mark.parametrize("tree", TREES)
def test_the_collector_counts_it_leaves_its_series_out_and_logs_each_change_once(monkeypatch, logs, tree):
    root = FIXTURES / tree
    collector = CgroupCollector(HostFS(str(root)))
    got = _scrape(collector, root)
    assert got[C("cri_container_pids")] > 0
    assert _not_read(got, "container", "permission_denied") == 0
    assert _not_read(got, "container", "not_found") == 1  # the kata guest: no cgroup of its own on the host
    assert _not_read(got, "pod", "permission_denied") == 0 and _not_read(got, "pod", "not_found") == 1  # kata's

    deny(monkeypatch, B_ID)
    for _ in range(3):
        got = _scrape(collector, root)
        assert not [k for k in got if ("container", "app") in k[1]], "a refused cgroup has no series, never zeros"
        assert got[C("cri_container_pids", container="postgres", pod="db")] > 0  # the others keep theirs
        assert got[P("cri_pod_pids")] > 0  # its pod's cgroup was readable
        assert _not_read(got, "container", "permission_denied") == 1
        assert _not_read(got, "container", "not_found") == 1
    monkeypatch.undo()
    got = _scrape(collector, root)
    assert got[C("cri_container_pids")] > 0 and _not_read(got, "container", "permission_denied") == 0

    events = [(e["event"].split(":")[0], e["log_level"], e["cgroups"]) for e in logs]
    assert [e[:2] for e in events] == [("cgroups not readable", "warning"), ("cgroups readable again", "info")]
    assert events[0][2][0].startswith("container shop/web/app: ") and "Permission denied" in events[0][2][0]
    assert events[1][2] == ["container shop/web/app"]


def test_a_refused_root_still_counts_every_cgroup(monkeypatch):
    root = FIXTURES / "v1-cgroupfs"
    collector = CgroupCollector(HostFS(str(root)))
    _scrape(collector, root)  # layout and paths known, as on a node that was fine
    deny(monkeypatch, "/sys/fs/cgroup")
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with pytest.raises(PartialCollection, match="cgroup root unreadable") as err:
        list(collector.collect(ctx_for(root)))
    (family,) = err.value.metrics
    counts = {(s.labels["kind"], s.labels["reason"]): s.value for s in family.samples}
    running = sum(1 for c in CONTAINERS if c.state == "running")
    ready = sum(1 for p in PODS if p.state == "ready")
    # nothing can be looked up: the kata pod, which has no cgroup here, cannot be told apart
    assert counts == {("container", "permission_denied"): running, ("container", "not_found"): 0,
                      ("pod", "permission_denied"): ready, ("pod", "not_found"): 0}


def test_usage_moves_to_the_snapshot_never_backwards_and_back(monkeypatch, tmp_path):
    """Through the whole agent over a fake runtime: the refused container's CPU
    comes from a snapshot taken after its last live reading (none before one
    exists), the snapshot is refreshed at --stats-interval meanwhile, and the
    values are live again once the files can be read."""
    from cri_exporter.cri.client import CriClient
    from cri_exporter.exporter import Exporter
    from cri_exporter.settings import Settings
    from tests.fakecri import FakeCRI, fleet, make_cgroup_tree

    pods = fleet(4)
    make_cgroup_tree(tmp_path, pods)
    target = pods[1].containers[0]
    name = dict(namespace=pods[1].sandbox.metadata.namespace, pod=pods[1].sandbox.metadata.name, container="app")
    key = ("cri_container_cpu_usage_seconds_total", tuple(sorted(name.items())))
    cpuacct = (tmp_path / f"sys/fs/cgroup/cpuacct/kubepods/burstable/pod{pods[1].sandbox.metadata.uid}/{target.id}"
               / "cpuacct.usage")
    with FakeCRI(tmp_path / "cri.sock", pods) as fake:
        exp = Exporter(Settings(runtime_endpoint=fake.endpoint, host_root=str(tmp_path), stats_interval=15,
                                stats_idle_interval=180, collectors=("containers", "stats", "cgroups")))
        client = CriClient(fake.endpoint)
        try:
            exp.refresher.refresh()
            exp.scraper.scrape()
            got = samples(exposition(exp.scraper.scrape().metrics))
            assert got[key] == int(cpuacct.read_text()) / 1e9  # live
            assert exp.refresher.current_interval == 180

            deny(monkeypatch, target.id)
            got = samples(exposition(exp.scraper.scrape().metrics))
            assert key not in got  # the snapshot predates the live value already served
            assert _not_read(got, "container", "permission_denied") == 1
            assert exp.refresher.current_interval == 15

            exp.refresher.refresh()
            got = samples(exposition(exp.scraper.scrape().metrics))
            cri = next(s for s in client.list_container_stats() if s.id == target.id)
            assert got[key] == cri.cpu_usage_ns / 1e9
            assert not [k for k in got if k[0] == "cri_container_pids" and ("container", "app") in k[1]
                        and ("pod", name["pod"]) in k[1]]

            monkeypatch.undo()
            got = samples(exposition(exp.scraper.scrape().metrics))
            assert got[key] == int(cpuacct.read_text()) / 1e9
            assert _not_read(got, "container", "permission_denied") == 0
            assert exp.refresher.current_interval == 180
        finally:
            client.close()
            exp.stop()
