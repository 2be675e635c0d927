"""A cgroup the agent may not read, on the real lab containerd: its usage comes
from CRI, it is counted and logged once, and it is read live again once access
comes back.

The node is never touched: the agent runs in a private mount namespace
(`unshare --mount`) without the capabilities that let root ignore file modes
(as in tests/test_faults_real.py), and the test mounts an empty mode-000 tmpfs
over the pod's cgroup directories *in that namespace only* (`nsenter`). The
agent then gets EACCES on every file of the pod's and its container's cgroups,
exactly as after a chmod, a remount or an LSM denial; containerd, the test and
the rest of the machine still see the real files.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from crilab import run_pod
from cri_exporter.cri.client import CriClient
from tests.cgroup_truth import cgroup_dir, cpu_usage_seconds
from tests.exporter_proc import ExporterProcess, wait_for

pytestmark = pytest.mark.containerd

NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]
# The hierarchies the agent reads a v1 (hybrid) node's cgroups from.
HIERARCHIES = ("cpu", "cpuacct", "memory", "pids", "blkio", "unified")
QUOTA_CORES = 0.2
NOT_READABLE = "cgroups not readable"
READABLE_AGAIN = "cgroups readable again"


def _in_agent_ns(pid: int, *cmd: str) -> None:
    subprocess.run(["nsenter", "-t", str(pid), "-m", "--", *cmd], check=True, capture_output=True, timeout=30)


def _cpu(s, pod: str, container: str | None = None) -> float | None:
    if container:
        found = s.find("cri_container_cpu_usage_seconds_total", namespace="stale", pod=pod, container=container)
    else:
        found = s.find("cri_pod_cpu_usage_seconds_total", namespace="stale", pod=pod)
    assert len(found) <= 1
    return next(iter(found.values()), None)


def _not_read(s, kind: str) -> float:
    return s.get1("cri_cgroups_not_read", kind=kind, reason="permission_denied")


def test_unreadable_cgroup_falls_back_to_cri_is_counted_and_recovers(lab):
    containerd, _ = lab
    pod = run_pod(containerd, "spin", "stale")
    cid = pod.add_container("burn", ["sh", "-c", "while :; do :; done"], cpu_quota=int(QUOTA_CORES * 100000))
    procs = cgroup_dir("pids", pod.uid, cid) / "cgroup.procs"
    client = CriClient(containerd.endpoint, timeout=10)
    mounted: list[str] = []  # in the agent's namespace
    try:
        # --stats-idle-interval is left at its 300 s default: the bug kept the
        # snapshot there while the cgroup could not be read.
        with ExporterProcess(containerd.endpoint, "--stats-interval", "1", "--host-root", "/",
                             "--collectors", "-doctor",
                             wrap=["unshare", "--mount", "--propagation", "private", *NO_DAC]) as exp:
            # Live: between the cgroup file read before and after the scrape.
            def live():
                before = cpu_usage_seconds(pod.uid, cid)
                s = exp.scrape()
                after = cpu_usage_seconds(pod.uid, cid)
                v = _cpu(s, "spin", "burn")
                return (s, v) if v is not None and before <= v <= after else None
            s, v = wait_for(live, timeout=30, what="the busy container's live CPU series")
            assert _not_read(s, "container") == 0 and _not_read(s, "pod") == 0
            assert s.find("cri_container_cpu_cfs_periods_total", pod="spin", container="burn")
            served = [v]  # every CPU value served, in order: a counter never goes back
            refreshes = s.get1("cri_stats_refreshes_total")
            for _ in range(6):
                time.sleep(0.5)  # the behaviour under test: scrapes spread over 3 s of the idle stats interval
                served.append(_cpu(exp.scrape(), "spin", "burn"))
            s = exp.scrape()
            assert s.get1("cri_stats_refreshes_total") - refreshes <= 1  # idle: every value is live

            for h in HIERARCHIES:
                d = cgroup_dir(h, pod.uid)
                if d.is_dir():
                    _in_agent_ns(exp.proc.pid, "mount", "-t", "tmpfs", "-o", "mode=000,size=4k", "stale", str(d))
                    mounted.append(str(d))
            assert cpu_usage_seconds(pod.uid, cid) > 0  # the node still reads it

            def from_cri():
                s = exp.scrape()
                v = _cpu(s, "spin", "burn")
                if v is not None:
                    served.append(v)
                return s if v is not None and _not_read(s, "container") == 1 else None
            s = wait_for(from_cri, timeout=30, what="the CPU series from the CRI snapshot")
            assert _not_read(s, "pod") == 1
            assert s.get1("cri_scrape_collector_success", collector="cgroups") == 1  # the rest was read
            # the cgroup's own series are absent, never zeros; the other containers keep theirs
            assert not s.find("cri_container_cpu_cfs_periods_total", namespace="stale")
            assert not s.find("cri_container_pids", namespace="stale")
            assert not s.find("cri_pod_pids", namespace="stale", pod="spin")
            assert s.find("cri_container_pids", pod="web", container="app")
            # the snapshot now follows --stats-interval, not the idle interval
            refreshes = s.get1("cri_stats_refreshes_total")
            deadline = time.monotonic() + 60
            while s.get1("cri_stats_refreshes_total") - refreshes < 2 and time.monotonic() < deadline:
                started = time.monotonic()
                s = exp.scrape()
                v = _cpu(s, "spin", "burn")
                assert v is not None, "the CPU series went away"
                served.append(v)
                # from the snapshot: the quota bounds the CPU time it cannot have seen yet
                truth = cpu_usage_seconds(pod.uid, cid)
                age = s.get1("cri_stats_snapshot_age_seconds")
                assert age < 10  # refreshed every second, not every 300 s
                missed = QUOTA_CORES * (age + time.monotonic() - started) + 0.05  # + a CFS period's slack
                assert truth - missed <= v <= truth
                time.sleep(0.3)  # poll interval: every value on the way is checked
            assert s.get1("cri_stats_refreshes_total") - refreshes >= 2
            assert served == sorted(served), f"the CPU counter went backwards: {served}"

            # Stopped, the counters hold still: the agent's values are CRI's to the nanosecond.
            pids = [int(p) for p in procs.read_text().split()]
            for p in pids:
                os.kill(p, signal.SIGSTOP)

            def equal_to_cri():
                s = exp.scrape()
                c = next(x for x in client.list_container_stats() if x.id == cid)
                p = client.pod_sandbox_stats(pod.id)
                return (_cpu(s, "spin", "burn") == c.cpu_usage_ns / 1e9
                        and _cpu(s, "spin") == p.cpu_usage_ns / 1e9) and (c, p)
            c, p = wait_for(equal_to_cri, timeout=30, what="the agent's CPU values equal to CRI's")
            assert c.cpu_usage_ns / 1e9 == cpu_usage_seconds(pod.uid, cid)  # and CRI's are the files'
            for p_ in pids:
                os.kill(p_, signal.SIGCONT)

            # Access back: live again, by itself.
            for d in reversed(mounted):
                _in_agent_ns(exp.proc.pid, "umount", d)
            mounted.clear()
            s, v = wait_for(live, timeout=30, what="live CPU values again")
            served.append(v)
            assert _not_read(s, "container") == 0 and _not_read(s, "pod") == 0
            assert s.find("cri_container_cpu_cfs_periods_total", pod="spin", container="burn")
            assert s.find("cri_pod_pids", namespace="stale", pod="spin")
            assert served == sorted(served), f"the CPU counter went backwards: {served}"

            # The log: one line when they turned unreadable, one when they came back.
            log = exp.log()
            assert log.count(NOT_READABLE) == 1 and log.count(READABLE_AGAIN) == 1, log[-3000:]
            line = next(x for x in log.splitlines() if NOT_READABLE in x)
            assert "stale/spin/burn" in line and "Permission denied" in line
    finally:  # the tmpfs mounts went with the agent's mount namespace
        for p_ in [int(x) for x in procs.read_text().split()] if procs.exists() else []:
            os.kill(p_, signal.SIGCONT)
        client.close()
        pod.remove()
