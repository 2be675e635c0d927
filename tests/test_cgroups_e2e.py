"""The cgroup collector through `cri-exporter serve` over the real containerd
(this machine: cgroup v1, cgroupfs driver), compared with the cgroup files."""
from __future__ import annotations

import pytest

from crilab import run_pod
from crilab.scenario import start_oom_pod
from tests import cgroup_truth
from tests.exporter_proc import wait_for

pytestmark = pytest.mark.containerd


def ident(pod, name):
    return {"namespace": pod.namespace, "pod": pod.name, "container": name}


def test_node_cgroup_info(exporter):
    s = exporter.scrape()
    assert s.labelsets("cri_node_cgroup_info") == [{"version": "v1", "driver": "cgroupfs"}]
    assert s.get1("cri_scrape_collector_success", collector="cgroups") == 1


def test_throttling_rises_and_matches_cpu_stat(exporter, pods):
    burn = pods.burner.containers["burn"][0]
    labels = ident(pods.burner, "burn")
    first = exporter.scrape().get1("cri_container_cpu_cfs_throttled_periods_total", **labels)
    # At a 10% quota nearly every 100 ms period it runs in is throttled; on a busy machine it runs
    # in fewer of them, so wait for the kernel's own count to rise rather than for a fixed second.
    wait_for(lambda: cgroup_truth.cpu_stat(pods.burner.uid, burn)["nr_throttled"] > first, timeout=60,
             interval=0.1, what="the kernel to throttle the burner again")
    before = cgroup_truth.cpu_stat(pods.burner.uid, burn)
    s = exporter.scrape()
    after = cgroup_truth.cpu_stat(pods.burner.uid, burn)
    second = s.get1("cri_container_cpu_cfs_throttled_periods_total", **labels)
    assert second > first
    assert before["nr_throttled"] <= second <= after["nr_throttled"]
    assert before["nr_periods"] <= s.get1("cri_container_cpu_cfs_periods_total", **labels) <= after["nr_periods"]
    throttled = s.get1("cri_container_cpu_cfs_throttled_seconds_total", **labels)
    assert before["throttled_time"] / 1e9 - 1e-9 <= throttled <= after["throttled_time"] / 1e9 + 1e-9
    assert s.get1("cri_container_spec_cpu_quota_seconds", **labels) == pytest.approx(0.01)
    assert s.get1("cri_container_spec_cpu_period_seconds", **labels) == pytest.approx(0.1)
    # an unlimited container has no quota series at all (not a fake zero)
    assert not s.find("cri_container_spec_cpu_quota_seconds", **ident(pods.web, "app"))


def test_pids_match(exporter, pods):
    app = pods.web.containers["app"][0]
    s = exporter.scrape()
    current = int((cgroup_truth.cgroup_dir("pids", pods.web.uid, app) / "pids.current").read_text())
    assert s.get1("cri_container_pids", **ident(pods.web, "app")) == current == 1
    assert s.get1("cri_pod_pids", namespace="shop", pod="web") == int(
        (cgroup_truth.cgroup_dir("pids", pods.web.uid) / "pids.current").read_text())


def test_oom_kill_inside_a_running_container_is_counted(exporter, containerd):
    """dd is killed by the memory cgroup while its shell lives on: the container
    keeps running and its oom_kill counter (memory.oom_control) says so."""
    pod = run_pod(containerd, "oomkid", "oomtest")
    cid = pod.add_container("hog", ["sh", "-c", "dd if=/dev/zero of=/dev/null bs=64M count=1; sleep 2147483647"],
                            memory_limit=32 << 20)
    oom_control = cgroup_truth.cgroup_dir("memory", pod.uid, cid) / "memory.oom_control"
    wait_for(lambda: "oom_kill 1" in oom_control.read_text(), what="the kernel to OOM-kill dd")
    labels = {"namespace": "oomtest", "pod": "oomkid", "container": "hog"}
    s = wait_for(lambda: (x := exporter.scrape()).find("cri_container_memory_oom_kills_total", **labels) and x,
                 what="the OOM kill counter")
    assert s.get1("cri_container_memory_oom_kills_total", **labels) == 1
    assert s.get1("cri_container_spec_memory_limit_bytes", **labels) == 32 << 20
    # Seen on kernel 6.18, cgroup v1: failcnt can stay 0 through an OOM kill
    # (one allocation larger than the limit); it must match the file, whatever it says.
    failcnt = int((oom_control.parent / "memory.failcnt").read_text())
    assert s.get1("cri_container_memory_failcnt_total", **labels) == failcnt
    assert s.get1("cri_container_state", state="running", **labels) == 1


def test_oom_killed_container_names_its_pod(exporter, containerd):
    pod = start_oom_pod(containerd, namespace="oomtest2")  # raises unless CRI says OOMKilled / 137
    labels = {"namespace": "oomtest2", "pod": pod.name, "container": "hog"}
    s = wait_for(lambda: (x := exporter.scrape()).find("cri_container_last_terminated_reason", **labels) and x,
                 what="the termination reason")
    assert s.get1("cri_container_last_terminated_reason", reason="OOMKilled", **labels) == 1
    assert s.get1("cri_container_last_terminated_exit_code", **labels) == 137


def test_cgroup_and_cri_series_join_one_to_one(exporter):
    """`cri_container_cpu_cfs_periods_total * on(namespace,pod,container) group_left(image) cri_container_info`
    must find exactly one info row for every cgroup series."""
    s = exporter.scrape()
    keys = lambda name: [(d["namespace"], d["pod"], d["container"]) for d in s.labelsets(name)]  # noqa: E731
    info = keys("cri_container_info")
    assert len(info) == len(set(info))
    cgroup_side = keys("cri_container_cpu_cfs_periods_total")
    assert cgroup_side and all(info.count(k) == 1 for k in cgroup_side)
    usage = keys("cri_container_cpu_usage_seconds_total")
    assert set(cgroup_side) <= set(usage)
