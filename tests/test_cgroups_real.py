"""The readers and the collector on this machine's real cgroup v1 (hybrid) tree.

A busy `sh` loop is put into a cgroup laid out as the cgroupfs driver does
(`<root>/kubepods/burstable/pod<uid>/<id>`, under a private cgroup root so
that nothing else on the machine sees it) with a CPU quota, a memory limit
and a pids limit. Once it has been throttled it is stopped (SIGSTOP), so the
files stop moving, and what the exporter says is compared with the files.
"""
from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from cri_exporter.cgroups import CgroupUnavailable, NodeCgroups, detect, usage_from
from cri_exporter.collectors.cgroups import CgroupCollector
from cri_exporter.hostfs import HostFS
from tests.exporter_proc import wait_for
from tests.test_cgroups_collector import FakeCri, container, ctx_for, exposition, pod, samples

def _v1_layout():
    if os.geteuid() != 0:
        pytest.skip("needs root to create cgroups")
    try:
        layout = detect(HostFS("/"))
    except CgroupUnavailable:
        pytest.skip("no cgroup mount")
    if layout.version != "v1" or not {"cpu", "cpuacct", "memory", "pids"} <= set(layout.controllers):
        pytest.skip("needs cgroup v1 cpu, cpuacct, memory and pids hierarchies")
    return layout


@pytest.fixture
def throttled_container():
    layout = _v1_layout()
    root_name = f"cri-exporter-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    uid, cid = str(uuid.uuid4()), uuid.uuid4().hex * 2
    relative = f"{root_name}/kubepods/burstable/pod{uid}/{cid}"
    hierarchies = sorted({os.path.realpath(h) for h in layout.controllers.values()})
    if layout.unified:
        hierarchies.append(layout.unified)
    leaves = [Path(h) / relative for h in hierarchies]
    child = None
    try:
        for leaf in leaves:
            leaf.mkdir(parents=True)
        ctrl = {c: Path(os.path.realpath(layout.controllers[c])) / relative for c in ("cpu", "memory", "pids")}
        (ctrl["cpu"] / "cpu.cfs_period_us").write_text("100000")
        (ctrl["cpu"] / "cpu.cfs_quota_us").write_text("10000")  # 0.1 core
        (ctrl["memory"] / "memory.limit_in_bytes").write_text(str(64 * 1024 * 1024))
        (ctrl["pids"] / "pids.max").write_text("64")

        def join_cgroups():  # runs in the child before exec: no untracked CPU time
            for leaf in leaves:
                with open(leaf / "cgroup.procs", "w") as f:
                    f.write(str(os.getpid()))

        child = subprocess.Popen(["sh", "-c", "while :; do :; done"], preexec_fn=join_cgroups)
        wait_for(lambda: _flat(ctrl["cpu"] / "cpu.stat")["nr_throttled"] >= 3, timeout=30, interval=0.05,
                 what="the busy loop to be throttled")
        os.kill(child.pid, signal.SIGSTOP)
        last: list[str | None] = [None]

        def still() -> bool:  # the last CFS period closed: cpu.stat the same over more than one 0.1 s period
            now = (ctrl["cpu"] / "cpu.stat").read_text()
            same, last[0] = now == last[0], now
            return same

        wait_for(still, timeout=30, interval=0.15, what="cpu.stat to stop moving")
        yield root_name, uid, cid, ctrl, child
    finally:
        if child is not None:
            child.kill()
            child.wait()
        for leaf in leaves:
            path = leaf
            for _ in range(5):  # <id>, pod<uid>, burstable, kubepods, <root>
                try:
                    path.rmdir()
                except FileNotFoundError:
                    pass
                path = path.parent


def _flat(path: Path) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in path.read_text().splitlines())}


def test_real_v1_cgroup_matches_the_files(throttled_container):
    root_name, uid, cid, ctrl, child = throttled_container
    node = NodeCgroups(HostFS("/"), cgroup_root=f"/{root_name}")
    assert node.layout().driver == "cgroupfs"
    mem_before = _flat(ctrl["memory"] / "memory.stat")
    stats = node.container_stats(cid, uid)
    cpu_stat = _flat(ctrl["cpu"] / "cpu.stat")
    assert stats.cpu.throttled_periods == cpu_stat["nr_throttled"] >= 3
    assert stats.cpu.periods == cpu_stat["nr_periods"]
    assert stats.cpu.throttled_ns == cpu_stat["throttled_time"] > 0
    assert (stats.cpu.quota_us, stats.cpu.period_us) == (10000, 100000)
    assert stats.cpu.shares == int((ctrl["cpu"] / "cpu.shares").read_text())
    cpuacct = Path(os.path.realpath(node.layout().controllers["cpuacct"])) / node.resolver.container(cid, uid).relative
    assert stats.cpu.usage_ns == int((cpuacct / "cpuacct.usage").read_text()) > 0
    ticks = _flat(cpuacct / "cpuacct.stat")  # USER_HZ ticks; the loop is stopped, so they hold still
    tick_ns = 1e9 / os.sysconf("SC_CLK_TCK")
    assert stats.cpu.user_ns == ticks["user"] * tick_ns > 0  # a busy loop in user mode
    assert stats.cpu.system_ns == ticks["system"] * tick_ns
    assert stats.memory.limit_bytes == 64 * 1024 * 1024
    # memcg statistics are flushed lazily (rate-limited on recent kernels), so
    # memory.stat may move between our read and this one: bracket it.
    mem = _flat(ctrl["memory"] / "memory.stat")
    assert mem_before["total_pgfault"] <= stats.memory.page_faults <= mem["total_pgfault"]
    assert mem_before["total_rss"] == stats.memory.rss_bytes or stats.memory.rss_bytes == mem["total_rss"]
    usage = int((ctrl["memory"] / "memory.usage_in_bytes").read_text())
    assert stats.memory.usage_bytes == usage  # a page counter, always exact
    assert stats.memory.working_set_bytes == max(0, usage - stats.memory.inactive_file_bytes)
    assert stats.memory.failcnt == int((ctrl["memory"] / "memory.failcnt").read_text())
    peak = int((ctrl["memory"] / "memory.max_usage_in_bytes").read_text())
    assert stats.memory.peak_bytes == peak >= usage > 0
    oom = _flat(ctrl["memory"] / "memory.oom_control")
    assert stats.memory.oom_kills == oom.get("oom_kill")
    assert (stats.pids.current, stats.pids.limit) == (1, 64)
    if node.layout().hybrid:  # PSI through the unified tree
        assert stats.pressure.cpu is not None and stats.pressure.cpu.some_us is not None
    usage_now = usage_from(node.container_stats(cid, uid))
    assert usage_now.cpu_usage_ns == stats.cpu.usage_ns
    pod_usage = usage_from(node.pod_stats(uid))
    assert pod_usage.cpu_usage_ns >= stats.cpu.usage_ns  # the pod cgroup counts its container


def test_real_v1_collector_output(throttled_container):
    root_name, uid, cid, ctrl, child = throttled_container
    node = NodeCgroups(HostFS("/"), cgroup_root=f"/{root_name}")
    collector = CgroupCollector(HostFS("/"), node)
    inventory = FakeCri(pods=[pod("sb", "burner", uid)], containers=[container(cid, "sb", "burner", uid, "loop")])
    got = samples(exposition(list(collector.collect(ctx_for(Path("/"), client=inventory)))))
    labels = (("container", "loop"), ("namespace", "shop"), ("pod", "burner"))
    cpu_stat = _flat(ctrl["cpu"] / "cpu.stat")
    assert got[("cri_container_cpu_cfs_throttled_periods_total", labels)] == cpu_stat["nr_throttled"]
    assert got[("cri_container_cpu_cfs_throttled_seconds_total", labels)] == pytest.approx(cpu_stat["throttled_time"] / 1e9)
    assert got[("cri_container_spec_cpu_quota_seconds", labels)] == pytest.approx(0.01)
    assert got[("cri_container_spec_memory_limit_bytes", labels)] == 64 * 1024 * 1024
    assert got[("cri_container_pids", labels)] == 1
    cpuacct = Path(os.path.realpath(node.layout().controllers["cpuacct"])) / node.resolver.container(cid, uid).relative
    ticks, hz = _flat(cpuacct / "cpuacct.stat"), os.sysconf("SC_CLK_TCK")
    assert ticks["user"] > 0
    assert got[("cri_container_cpu_user_seconds_total", labels)] == pytest.approx(ticks["user"] / hz)
    assert got[("cri_container_cpu_system_seconds_total", labels)] == pytest.approx(ticks["system"] / hz)
    assert got[("cri_container_memory_max_usage_bytes", labels)] == int(
        (ctrl["memory"] / "memory.max_usage_in_bytes").read_text())
    assert got[("cri_pod_pids", (("namespace", "shop"), ("pod", "burner")))] == 1
    assert got[("cri_node_cgroup_info", (("driver", "cgroupfs"), ("version", "v1")))] == 1
