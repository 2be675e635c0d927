"""The cgroup collector over the fixture trees, seen as /metrics text.

The inventory is built from real cri.model dataclasses through the real
ScrapeContext, with a stand-in CRI client, so identity labels come out
exactly as the CRI collector's do.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cri_exporter.collectors.base import PartialCollection, ScrapeContext
from cri_exporter.collectors.cgroups import CgroupCollector
from cri_exporter.cri import CriError, model
from cri_exporter.hostfs import HostFS
from cri_exporter.scrape import Scraper

FIXTURES = Path(__file__).parent / "fixtures" / "cgroup"
G_UID, B_UID, E_UID = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222", "33333333-3333-4333-8333-333333333333"
G_ID, B_ID, E_ID = "a" * 64, "b" * 64, "c" * 64
TREES = ["v2-systemd", "v2-cgroupfs", "v1-cgroupfs", "v1-systemd"]


def pod(sid, name, uid, state="ready", created=1):
    labels = {model.LABEL_POD_NAME: name, model.LABEL_POD_NAMESPACE: "shop", model.LABEL_POD_UID: uid}
    return model.PodSandbox(sid, name, "shop", uid, 0, state, created, labels, "")


def container(cid, sid, pod_name, uid, name, state="running", attempt=0, created=10):
    labels = {model.LABEL_POD_NAME: pod_name, model.LABEL_POD_NAMESPACE: "shop", model.LABEL_POD_UID: uid,
              model.LABEL_CONTAINER_NAME: name}
    return model.Container(cid, sid, name, attempt, "img", "sha256:1", state, created, labels)


PODS = [
    pod("sb-g", "db", G_UID), pod("sb-b", "web", B_UID), pod("sb-e", "batch", E_UID),
    pod("sb-old", "web", B_UID, state="notready", created=0),  # an old sandbox of the same identity
    pod("sb-kata", "vm", "55555555-5555-4555-8555-555555555555"),  # no host cgroup (VM runtime)
]
CONTAINERS = [
    container(G_ID, "sb-g", "db", G_UID, "postgres"),
    container(B_ID, "sb-b", "web", B_UID, "app", attempt=1, created=20),
    container("d" * 64, "sb-b", "web", B_UID, "app", state="exited", attempt=0),  # the previous attempt
    container(E_ID, "sb-e", "batch", E_UID, "job"),
    container("e" * 64, "sb-e", "batch", E_UID, "init", state="created"),  # no cgroup yet
    container("f" * 64, "sb-kata", "vm", "55555555-5555-4555-8555-555555555555", "guest"),
]


class FakeCri:
    timeout = 2.0

    def __init__(self, pods=PODS, containers=CONTAINERS, fail=False):
        self.pods, self.containers, self.fail = pods, containers, fail

    def list_pod_sandboxes(self, timeout=None):
        if self.fail:
            raise CriError("ListPodSandbox", "unix:///x.sock", "UNAVAILABLE", "connection refused")
        return list(self.pods)

    def list_containers(self, timeout=None):
        return list(self.containers)

    def container_status(self, cid, timeout=None):
        c = next(c for c in self.containers if c.id == cid)
        return model.ContainerStatus(cid, c.state, 5_000_000_000, 0, 0, "", "")


def ctx_for(root: Path, client=None, deadline=10.0) -> ScrapeContext:
    return ScrapeContext(client or FakeCri(), HostFS(str(root)), time.monotonic() + deadline)


def exposition(metrics) -> str:
    class Once:
        def collect(self):
            return metrics
    reg = CollectorRegistry()
    reg.register(Once())
    return generate_latest(reg).decode()


def samples(text: str) -> dict[tuple, float]:
    out: dict[tuple, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"duplicate series {key}"
            out[key] = s.value
    return out


def scrape(tree: str, root: Path = FIXTURES) -> dict[tuple, float]:
    collector = CgroupCollector(HostFS(str(root / tree)))
    return samples(exposition(list(collector.collect(ctx_for(root / tree)))))


def C(name, container="app", pod="web", **extra):
    return (name, tuple(sorted({"namespace": "shop", "pod": pod, "container": container, **extra}.items())))


def P(name, pod="web", **extra):
    return (name, tuple(sorted({"namespace": "shop", "pod": pod, **extra}.items())))


@pytest.mark.parametrize("tree", TREES)
def test_burstable_container_values_match_fixture_files(tree):
    got = scrape(tree)
    v2 = tree.startswith("v2")
    expected = {
        C("cri_container_cpu_cfs_periods_total"): 1000,
        C("cri_container_cpu_cfs_throttled_periods_total"): 250,
        C("cri_container_cpu_cfs_throttled_seconds_total"): 12.5,
        C("cri_container_spec_cpu_quota_seconds"): 0.05,
        C("cri_container_spec_cpu_period_seconds"): 0.1,
        C("cri_container_spec_cpu_weight" if v2 else "cri_container_spec_cpu_shares"): 20 if v2 else 512,
        C("cri_container_spec_memory_limit_bytes"): 268435456,
        C("cri_container_memory_cache_bytes"): 41943040,
        C("cri_container_memory_active_file_bytes"): 20971520,
        C("cri_container_memory_inactive_file_bytes"): 16777216,
        C("cri_container_memory_mapped_file_bytes"): 8388608,
        C("cri_container_memory_oom_kills_total"): 2,
        C("cri_container_pids"): 7,
        C("cri_container_spec_pids_limit"): 1024,
        C("cri_container_blkio_read_bytes_total", device="sda"): 1459200,
        C("cri_container_blkio_write_bytes_total", device="sda"): 314773504,
        C("cri_container_blkio_read_operations_total", device="sda"): 192,
        C("cri_container_blkio_write_operations_total", device="sda"): 353,
        C("cri_container_blkio_read_bytes_total", device="253:0"): 4096,
        C("cri_container_blkio_write_bytes_total", device="253:0"): 0,
        C("cri_container_blkio_read_operations_total", device="253:0"): 1,
        C("cri_container_blkio_write_operations_total", device="253:0"): 0,
    }
    if v2:
        expected |= {
            C("cri_container_memory_oom_events_total"): 3,
            C("cri_container_memory_max_events_total"): 17,
            C("cri_container_memory_high_events_total"): 5,
        }
    else:
        expected[C("cri_container_memory_failcnt_total")] = 17
    # v2 cpu.stat user_usec / system_usec; v1 cpuacct.stat in USER_HZ (100) ticks: 140 and 50
    expected[C("cri_container_cpu_user_seconds_total")] = 1.333333 if v2 else 1.4
    expected[C("cri_container_cpu_system_seconds_total")] = 0.666666 if v2 else 0.5
    # v1 memory.max_usage_in_bytes, v2 memory.peak; v2-cgroupfs is a kernel before 5.19: no file, no series
    if tree != "v2-cgroupfs":
        expected[C("cri_container_memory_max_usage_bytes")] = 131072000
    if tree != "v1-systemd":  # v2, and v1 hybrid through the unified tree
        expected |= {
            C("cri_container_pressure_cpu_some_seconds_total"): 1.5,
            C("cri_container_pressure_cpu_full_seconds_total"): 0.9,
            C("cri_container_pressure_memory_some_seconds_total"): 0.25,
            C("cri_container_pressure_memory_full_seconds_total"): 0.2,
            C("cri_container_pressure_io_some_seconds_total"): 3.0,
            C("cri_container_pressure_io_full_seconds_total"): 2.5,
        }
    for key, value in expected.items():
        assert got.get(key) == pytest.approx(value), key
    app = {k for k in got if ("container", "app") in k[1]}
    assert app == set(expected), "no series beyond the fixture's values"


@pytest.mark.parametrize("tree", TREES)
def test_limits_absent_when_unlimited_never_zero(tree):
    got = scrape(tree)
    names = {k[0] for k in got if ("container", "job") in k[1]}
    assert "cri_container_spec_cpu_quota_seconds" not in names
    assert "cri_container_spec_cpu_period_seconds" not in names
    assert "cri_container_spec_memory_limit_bytes" not in names
    assert "cri_container_spec_pids_limit" not in names
    assert not any(n.startswith("cri_container_blkio_") for n in names)  # no I/O lines in the files
    # v2 cpu.stat without the cpu controller has no throttling lines; v1 always has them.
    assert ("cri_container_cpu_cfs_periods_total" in names) == tree.startswith("v1")


@pytest.mark.parametrize("tree", TREES)
def test_pod_level_series(tree):
    got = scrape(tree)
    v2 = tree.startswith("v2")
    assert got[P("cri_pod_pids")] == 8
    assert got[P("cri_pod_blkio_read_bytes_total", device="sda")] == 1459200
    assert got[P("cri_pod_memory_inactive_file_bytes")] == 16777216
    assert got[P("cri_pod_spec_memory_limit_bytes", pod="db")] == 134217728
    assert got[P("cri_pod_cpu_cfs_periods_total", pod="db")] == 20
    assert got[P("cri_pod_spec_cpu_quota_seconds", pod="db")] == pytest.approx(0.1)
    # v1 oom_kill is not hierarchical: a pod series would say 0 after a kill, so there is none
    assert (P("cri_pod_memory_oom_kills_total") in got) == v2
    if v2:
        assert got[P("cri_pod_memory_oom_kills_total")] == 2


@pytest.mark.parametrize("tree", TREES)
def test_identity_and_scope(tree):
    got = scrape(tree)
    containers = {dict(k[1]).get("container") for k in got if k[0].startswith("cri_container_")}
    pods = {dict(k[1])["pod"] for k in got if k[0].startswith("cri_pod_")}
    assert containers == {"app", "postgres", "job"}  # no exited, created or VM-runtime container
    assert pods == {"web", "db", "batch"}
    for name, labels in got:
        keys = {k for k, _ in labels}
        if name.startswith("cri_container_"):
            assert keys - {"device"} == {"namespace", "pod", "container"}
        elif name.startswith("cri_pod_"):
            assert keys - {"device"} == {"namespace", "pod"}
    version = "v2" if tree.startswith("v2") else "v1"
    driver = tree.split("-")[1]
    assert got[("cri_node_cgroup_info", (("driver", driver), ("version", version)))] == 1


@pytest.mark.parametrize("tree", TREES)
def test_leaves_cpu_usage_and_memory_usage_to_the_cri_collector(tree):
    names = {k[0] for k in scrape(tree)}
    for owned_by_cri in ("cpu_usage_seconds_total", "memory_working_set_bytes", "memory_usage_bytes",
                         "memory_rss_bytes", "memory_swap_bytes", "memory_page_faults_total",
                         "memory_major_page_faults_total"):
        assert f"cri_container_{owned_by_cri}" not in names
        assert f"cri_pod_{owned_by_cri}" not in names


def test_container_deleted_between_scrapes_drops_out(tmp_path):
    shutil.copytree(FIXTURES / "v2-cgroupfs", tmp_path / "t")
    collector = CgroupCollector(HostFS(str(tmp_path / "t")))
    first = samples(exposition(list(collector.collect(ctx_for(tmp_path / "t")))))
    assert C("cri_container_pids") in first
    shutil.rmtree(tmp_path / f"t/sys/fs/cgroup/kubepods/burstable/pod{B_UID}/{B_ID}")
    second = samples(exposition(list(collector.collect(ctx_for(tmp_path / "t")))))
    assert C("cri_container_pids") not in second
    assert C("cri_container_pids", container="postgres", pod="db") in second


def test_unreadable_root_fails_the_collector(tmp_path):
    scraper = Scraper([CgroupCollector(HostFS(str(tmp_path)))], lambda d: ctx_for(tmp_path, deadline=d - time.monotonic()), 5.0, runtime_collector=None)
    try:
        got = samples(exposition(scraper.scrape().metrics))
    finally:
        scraper.close()
    assert got[("cri_scrape_collector_success", (("collector", "cgroups"),))] == 0


def test_inventory_failure_still_reports_node_info():
    collector = CgroupCollector(HostFS(str(FIXTURES / "v1-cgroupfs")))
    with pytest.raises(PartialCollection) as err:
        list(collector.collect(ctx_for(FIXTURES / "v1-cgroupfs", client=FakeCri(fail=True))))
    assert [m.name for m in err.value.metrics] == ["cri_node_cgroup_info"]


def test_through_the_scraper_success_is_one():
    root = FIXTURES / "v2-systemd"
    scraper = Scraper([CgroupCollector(HostFS(str(root)))], lambda d: ctx_for(root, deadline=d - time.monotonic()), 5.0, runtime_collector=None)
    try:
        got = samples(exposition(scraper.scrape().metrics))
    finally:
        scraper.close()
    assert got[("cri_scrape_collector_success", (("collector", "cgroups"),))] == 1
    assert got[C("cri_container_cpu_cfs_throttled_periods_total")] == 250


def test_resolution_cache_follows_the_inventory():
    root = FIXTURES / "v1-cgroupfs"
    collector = CgroupCollector(HostFS(str(root)))
    list(collector.collect(ctx_for(root)))
    assert set(collector.cgroups.resolver._containers) == {G_ID, B_ID, E_ID}
    only_db = FakeCri(pods=[PODS[0]], containers=[CONTAINERS[0]])
    list(collector.collect(ctx_for(root, client=only_db)))
    assert set(collector.cgroups.resolver._containers) == {G_ID}
    assert set(collector.cgroups.resolver._pods) == {G_UID}


def test_both_collectors_share_one_read_of_each_file_in_one_thread(monkeypatch):
    """One pass reads every cgroup once per scrape, in one thread: a step of
    the scrape, not either collector's (both wait without taking the GIL),
    timed as its own; the second scrape leaves out the limit files it keeps."""
    import threading

    from cri_exporter.cgroups import NodeCgroups, files
    from cri_exporter.collectors.containers import ContainersCollector

    root = FIXTURES / "v1-cgroupfs"
    cgroups = NodeCgroups(HostFS(str(root)))
    reads: list[tuple[str, str, int]] = []
    real = files.read

    def spy(directory, name):
        reads.append((directory, name, threading.current_thread().name))
        return real(directory, name)

    monkeypatch.setattr(files, "read", spy)
    scraper = Scraper([ContainersCollector(None, cgroups), CgroupCollector(HostFS(str(root)), cgroups=cgroups)],
                      lambda d: ctx_for(root, deadline=d - time.monotonic()), 5.0, runtime_collector=None)
    try:
        first = samples(exposition(scraper.scrape().metrics))
        first_reads, reads[:] = list(reads), []
        second = samples(exposition(scraper.scrape().metrics))
    finally:
        scraper.close()
    for done in (first_reads, reads):
        paths = [(d, n) for d, n, _ in done]
        assert len(paths) == len(set(paths)), "a file was read twice in one scrape"
        assert {t for _, _, t in done} == {"step-cgroup_reading"}
    for step in ("inventory", "cgroup_reading"):
        assert first[("cri_scrape_step_duration_seconds", (("step", step),))] >= 0
    cgroups_read = {d.rsplit("/", 1)[-1] for d, _, _ in first_reads}
    assert {G_ID, B_ID, E_ID, "f" * 64} & cgroups_read == {G_ID, B_ID, E_ID}  # the kata guest has no host cgroup
    limits = {"cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.shares", "memory.limit_in_bytes", "pids.max"}
    assert limits <= {n for _, n, _ in first_reads} and not limits & {n for _, n, _ in reads}
    assert {n for _, n, _ in reads} == {n for _, n, _ in first_reads} - limits
    for key in (C("cri_container_spec_memory_limit_bytes"), C("cri_container_cpu_usage_seconds_total"),
                P("cri_pod_memory_working_set_bytes")):
        assert first[key] == second[key] > 0


def test_a_slow_cgroup_tree_costs_the_cgroup_series_not_the_scrape(monkeypatch, tmp_path):
    """Reading every cgroup takes longer than the scrape allows: the scrape
    still answers in time, the cgroup collector fails saying how far it got,
    and the CRI collector serves every container, live values where read."""
    from cri_exporter.cgroups import files
    from cri_exporter.exporter import Exporter
    from cri_exporter.settings import Settings
    from tests.fakecri import FakeCRI, fleet, make_cgroup_tree

    pods = fleet(200)
    make_cgroup_tree(tmp_path, pods)
    with FakeCRI(tmp_path / "cri.sock", pods) as fake:
        exp = Exporter(Settings(runtime_endpoint=fake.endpoint, host_root=str(tmp_path), scrape_timeout=3.0,
                                collectors=("containers", "cgroups")))
        try:
            exp.scraper.scrape()  # statuses and paths fetched once, at full speed
            real = files.read
            # A slow cgroup tree, the behaviour under test: ~150 ms a cgroup. Reading all 400
            # would take a minute, so the 3 s deadline cuts the reading on any machine, loaded or not.
            monkeypatch.setattr(files, "read", lambda d, n: time.sleep(0.01) or real(d, n))
            t = time.monotonic()
            got = samples(exposition(exp.scraper.scrape().metrics))
            took = time.monotonic() - t
        finally:
            exp.stop()
    # The deadline holds; the margin is for a loaded machine's thread wake-ups
    # (a 0.2 s margin failed at load 25-30 on 2 cores), far below the minute a
    # scrape waiting for every cgroup would take.
    assert took < 3.0 + 2.0
    assert got[("cri_scrape_collector_success", (("collector", "cgroups"),))] == 0
    assert got[("cri_scrape_collector_success", (("collector", "containers"),))] == 1
    states = [k for k, v in got.items() if k[0] == "cri_container_state" and ("state", "running") in k[1] and v == 1]
    assert len(states) == 200
    live = [k for k in got if k[0] == "cri_container_cpu_usage_seconds_total"]
    assert 1 <= len(live) < 200  # read before the cut; the others have no snapshot to fall back on here
    assert not any(k[0].startswith("cri_container_cpu_cfs") for k in got)


def test_the_reason_a_scrape_cut_the_reads_short():
    from cri_exporter.collectors import cgroup_readings

    assert cgroup_readings._cut_short(2, 5, 0, 3) == (
        "the scrape deadline came before every cgroup was read (2 of 5 containers, 0 of 3 pods)")
