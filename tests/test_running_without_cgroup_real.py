"""A container the runtime lists RUNNING whose task and cgroup are gone, on each containerd of the lab.

crilab.scenario.unrecorded_exit kills a container while containerd cannot record its exit: on
1.6.20, 1.7.24 and 2.1.9 alike the task and its cgroup go while CRI keeps listing it running.
`cri_container_running_without_cgroup_since_time_seconds` (cri_exporter/running_without_cgroup.py)
must name exactly that container on every version (2.1.9's pod stats answer normally, so only
this shows it there), never a healthy, a just-started or a normally exited one, and clear once the
disk is writable again and containerd's retry records the exit.
"""
from __future__ import annotations

import time

import pytest

from crilab import run_pod
from crilab.scenario import SLEEP, unrecorded_exit
from cri_exporter.cri import api_pb2 as api
from cri_exporter.running_without_cgroup import FAMILY, GRACE_SECONDS
from tests.cgroup_truth import cgroup_dir
from tests.exporter_proc import ExporterProcess, wait_for
from tests.test_doctor_support import results

pytestmark = pytest.mark.containerd


def _state(rt, cid: str) -> int:
    return rt.ContainerStatus(api.ContainerStatusRequest(container_id=cid)).status.state


def _doctor(cd):
    return results("/", cd.endpoint, checks=["cri.running_without_cgroup"])["cri.running_without_cgroup"]


def _named(samples) -> set[tuple[str, str, str]]:
    return {(s["namespace"], s["pod"], s["container"]) for s in samples.labelsets(FAMILY)}


def test_running_without_cgroup_names_exactly_the_unrecorded_exit(victim, runtime_version):
    rt = victim.runtime_stub()
    healthy = run_pod(victim, "healthy", "shop")
    healthy.add_container("app", SLEEP)
    done = run_pod(victim, "done", "shop")
    exited = done.add_container("job", ["sh", "-c", "exit 3"])
    stuck = run_pod(victim, "stuck", "shop")
    cid = stuck.add_container("app", SLEEP)
    with ExporterProcess(victim.endpoint, "--stats-interval", "1", "--stats-idle-interval", "1") as exp:
        wait_for(lambda: exp.scrape().find("cri_container_cpu_usage_seconds_total", pod="stuck")
                 and _state(rt, exited) == api.CONTAINER_EXITED, timeout=60, what="a live reading of every pod")
        first = exp.scrape()
        assert _named(first) == set() and first.get1("cri_scrape_collector_success", collector="containers") == 1
        healthy_doctor = _doctor(victim)
        assert healthy_doctor.status.value == "pass", healthy_doctor.finding
        assert "(2 of 2)" in healthy_doctor.finding.summary

        before = time.time()
        exit_ = unrecorded_exit(victim, cid)
        try:
            # the truth the exporter is held to: CRI says running, the kernel has no cgroup
            assert _state(rt, cid) == api.CONTAINER_RUNNING
            assert not cgroup_dir("cpuacct", stuck.uid, cid).exists()
            assert cgroup_dir("cpuacct", stuck.uid).exists()
            # a container started while it lasts never shows, nor does a healthy or an exited one
            fresh = healthy.add_container("fresh", SLEEP)
            seen: list = []

            def scrape_until_named():
                s = exp.scrape()
                seen.append(s)
                return _named(s) and s

            s = wait_for(scrape_until_named, timeout=GRACE_SECONDS + 90, interval=1,
                         what="the container running without cgroup")
            for x in seen:
                assert _named(x) <= {("shop", "stuck", "app")}, _named(x)
            assert _named(s) == {("shop", "stuck", "app")}
            since = s.get1(FAMILY, namespace="shop", pod="stuck", container="app")
            assert before <= since <= time.time() - GRACE_SECONDS
            assert _state(rt, cid) == api.CONTAINER_RUNNING and _state(rt, fresh) == api.CONTAINER_RUNNING
            assert s.get1("cri_scrape_collector_success", collector="containers") == 1
            assert s.get1("cri_cgroups_not_read", kind="container", reason="not_found") == 1
            # the doctor names it, with the fix, on every version
            found = _doctor(victim)
            assert found.status.value == "fail", found.finding
            assert found.finding.seen == f"{cid[:13]} shop/stuck/app"
            assert "state directory writable" in found.finding.fix
        finally:
            # the runbook's fix: the disk writable again; containerd's next retry records the exit
            exit_.release()
        wait_for(lambda: _state(rt, cid) == api.CONTAINER_EXITED, timeout=330, interval=1,
                 what="containerd's retry (back-off up to 5 min)")
        s = wait_for(lambda: (x := exp.scrape()).find("cri_container_state", pod="stuck", state="exited")
                     and x, timeout=30, what="the exit in the inventory")
        assert _named(s) == set()
        assert s.get1("cri_container_state", namespace="shop", pod="stuck", container="app", state="exited") == 1
        assert _doctor(victim).status.value == "pass"
