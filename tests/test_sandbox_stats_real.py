"""Pod stats after OOM kills, a killed pause and a stopped pod, on each containerd of the lab.

What the runtimes answer (cri_exporter/sandbox_stats_errors.py has the why, with containerd's
commits):

- A stopped sandbox (StopPodSandbox, or its pause killed: the kernel's OOM killer choosing it
  is the same SIGKILL) stays listed NOTREADY. Asked without a filter, containerd 1.6.20's
  ListPodSandboxStats takes it and fails whole ("... is not in ready state", UNKNOWN); 1.7.24
  and 2.1.9 leave it out. With an empty filter, as the kubelet asks, all three answer the ready
  sandboxes. PodSandboxStats on it fails (UNKNOWN on 1.6.20, UNAVAILABLE on 1.7.24 and 2.1.9).
- A container whose exit containerd cannot record (its status checkpoint unwritable: a full or
  read-only disk; crilab.scenario.unrecorded_exit) stays RUNNING in CRI with its task gone, for as
  long as that lasts: 1.6.20 fails ListPodSandboxStats (NOT_FOUND) and that pod's PodSandboxStats
  all along, 1.7.24 leaves the pod out of the list and fails its PodSandboxStats, 2.1.9 answers.
- A container OOM-killed in a ready pod: for under a second after its exit, 1.6.20 and 1.7.24
  answer its pod's PodSandboxStats with NOT_FOUND "task ... not found" (they ask every container
  CRI still lists running for its task); 1.6.20's list fails whole then. 2.1.9 never did (it
  does not ask). That window cannot be opened on demand, so the OOM test here holds what must
  be true whether a refresh falls into it or not: the stats collector never fails on it.

Each module run has a containerd of its own (the shared one's pods are all ready, and other tests
count them).
"""
from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass

import grpc
import pytest

from crilab import Containerd, run_pod
from crilab.pods import Pod
from crilab.scenario import HOG, OOM_LIMIT, SLEEP, oom_exit, start_oom_pod, unrecorded_exit
from cri_exporter.cri import CriClient, CriError
from cri_exporter.cri import api_pb2 as api
from cri_exporter.sandbox_stats_errors import SANDBOX_GONE, TASK_GONE, unavailable_reason
from tests.exporter_proc import ExporterProcess, wait_for
from tests.test_doctor_support import results

pytestmark = pytest.mark.containerd


@dataclass
class Scene:
    cd: Containerd
    healthy: Pod
    oom: Pod
    pause_killed: Pod
    stopped: Pod

    def ready_ids(self) -> set[str]:
        items = self.cd.runtime_stub().ListPodSandbox(api.ListPodSandboxRequest()).items
        return {p.id for p in items if p.state == api.SANDBOX_READY}


def _pid(cd: Containerd, pod_sandbox_id: str) -> int:
    info = cd.runtime_stub().PodSandboxStatus(
        api.PodSandboxStatusRequest(pod_sandbox_id=pod_sandbox_id, verbose=True)).info["info"]
    return int(json.loads(info)["pid"])


def _state(cd: Containerd, pod_sandbox_id: str) -> int:
    return cd.runtime_stub().PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=pod_sandbox_id)).status.state


@pytest.fixture(scope="module")
def scene(lab_dir, runtime_version):
    cd = Containerd(os.path.join(lab_dir, f"sbstats-{runtime_version}"), version=runtime_version).start()
    try:
        healthy = run_pod(cd, "healthy", "shop")
        healthy.add_container("app", SLEEP)
        oom = start_oom_pod(cd)
        pause_killed = run_pod(cd, "pause-killed", "shop")
        pause_killed.add_container("app", SLEEP)
        os.kill(_pid(cd, pause_killed.id), signal.SIGKILL)
        wait_for(lambda: _state(cd, pause_killed.id) == api.SANDBOX_NOTREADY, timeout=30,
                 what="the sandbox whose pause was killed to be NOTREADY")
        stopped = run_pod(cd, "stopped", "shop")
        stopped.add_container("app", SLEEP)
        cd.runtime_stub().StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=stopped.id))
        yield Scene(cd, healthy, oom, pause_killed, stopped)
    finally:
        cd.cleanup()


def test_list_pod_sandbox_stats_with_and_without_a_filter(scene, runtime_version):
    rt = scene.cd.runtime_stub()
    ready = scene.ready_ids()
    assert ready == {scene.healthy.id, scene.oom.id}
    try:
        unfiltered = {s.attributes.id for s in rt.ListPodSandboxStats(api.ListPodSandboxStatsRequest()).stats}
        assert runtime_version != "1.6", "1.6.20 answered a stopped sandbox without a filter"
        assert unfiltered == ready
    except grpc.RpcError as err:
        assert runtime_version == "1.6", err
        assert err.code() == grpc.StatusCode.UNKNOWN and "not in ready state" in err.details()
    # the exporter's client asks as the kubelet does: an empty filter, the ready sandboxes only
    client = CriClient(scene.cd.endpoint, timeout=10)
    try:
        assert {s.id for s in client.list_pod_sandbox_stats()} == ready
        for stopped in (scene.stopped.id, scene.pause_killed.id):
            with pytest.raises(CriError) as caught:
                client.pod_sandbox_stats(stopped)
            assert caught.value.code == ("UNKNOWN" if runtime_version == "1.6" else "UNAVAILABLE")
            assert unavailable_reason(caught.value) == SANDBOX_GONE
        with pytest.raises(CriError) as caught:
            client.pod_sandbox_stats("0" * 64)
        assert caught.value.code == "NOT_FOUND" and unavailable_reason(caught.value) == SANDBOX_GONE
    finally:
        client.close()


def test_stopped_and_oom_killed_pods_fail_no_stats(scene):
    """The stats collector succeeds, nothing counts as failed or unavailable, and the snapshot's
    values are CRI's (the writable layer comes only from it)."""
    with ExporterProcess(scene.cd.endpoint, "--stats-interval", "1", "--stats-idle-interval", "1") as exp:
        s = wait_for(lambda: (x := exp.scrape()).find("cri_stats_refreshes_total")
                     and x.get1("cri_stats_refreshes_total") >= 3 and x, timeout=60, what="three refreshes")
        assert s.get1("cri_scrape_collector_success", collector="stats") == 1, exp.log()[-3000:]
        assert s.get1("cri_stats_pod_sandbox_failures") == 0
        for reason in (TASK_GONE, SANDBOX_GONE):
            assert s.get1("cri_stats_pod_sandboxes_unavailable", reason=reason) == 0
        for method in ("ListContainerStats", "ListPodSandboxStats", "PodSandboxStats"):
            assert s.get1("cri_stats_refresh_failures_total", method=method) == 0, method
        want = {c.attributes.metadata.name: c.writable_layer.used_bytes.value
                for c in scene.cd.runtime_stub().ListContainerStats(api.ListContainerStatsRequest()).stats
                if c.attributes.labels.get("io.kubernetes.pod.name") == "healthy"}
        assert want == {"app": s.get1("cri_container_writable_layer_bytes", namespace="shop", pod="healthy",
                                      container="app")}
        assert s.get1("cri_pod_state", namespace="shop", pod="stopped", state="notready") == 1
        assert s.get1("cri_pod_state", namespace="shop", pod="pause-killed", state="notready") == 1


def test_oom_kills_never_fail_the_stats_collector(scene, runtime_version):
    """Pods whose hog is OOM-killed one after the other while the snapshot is refreshed every
    second and scraped meanwhile: no scrape may see the stats collector fail, nor a failed sandbox.
    A refresh that fell into an exit's window (1.6.20, 1.7.24) shows as task_gone for one refresh."""
    with ExporterProcess(scene.cd.endpoint, "--stats-interval", "1", "--stats-idle-interval", "1") as exp:
        wait_for(lambda: exp.scrape().find("cri_stats_snapshot_age_seconds"), timeout=60, what="a snapshot")
        pods = []
        for i in range(4):
            pod = run_pod(scene.cd, f"oom-burst-{i}", "batch")
            pod.add_container("side", SLEEP)
            # the shell sleeps, then dd's 64 MiB buffer meets the 32 MiB limit: staggered exits
            pod.add_container("hog", ["sh", "-c", f"sleep {1 + i}; exec {' '.join(HOG)}"], memory_limit=OOM_LIMIT)
            pods.append(pod)
        scrapes = []
        try:
            for pod in pods:
                status = oom_exit(pod, pod.containers["hog"][0], timeout=60)
                assert status.exit_code == 137, status
                scrapes.append(exp.scrape())
            # and until three refreshes after the last exit
            after = scrapes[-1].get1("cri_stats_refreshes_total")
            while (s := exp.scrape()).get1("cri_stats_refreshes_total") < after + 3:
                scrapes.append(s)
                time.sleep(0.2)  # poll interval; the loop ends on the refresh count (1 s interval)
            scrapes.append(s)
            for s in scrapes:
                assert s.get1("cri_scrape_collector_success", collector="stats") == 1, exp.log()[-4000:]
                assert s.get1("cri_stats_pod_sandbox_failures") == 0
            # every burst pod's stats are in the last snapshot again
            for pod in pods:
                assert s.find("cri_container_writable_layer_bytes", namespace="batch", pod=pod.name, container="side")
            assert s.get1("cri_stats_pod_sandboxes_unavailable", reason=TASK_GONE) == 0
            if runtime_version == "2.1":  # 2.x never asks a task for the pod's stats
                assert "PodSandboxStats unavailable" not in exp.log()
        finally:
            for pod in pods:
                pod.remove()


def test_doctor_pod_stats_passes_with_stopped_and_oom_killed_pods(scene):
    """The doctor asks as the kubelet does: stopped sandboxes and an OOM-killed container are no
    finding on any version (1.6.20 failed the check while asking without a filter)."""
    r = results("/", scene.cd.endpoint, checks=["cri.pod_stats"])["cri.pod_stats"]
    assert r.status.value == "pass", r.finding
    assert "(2 pods)" in r.finding.summary


def test_a_container_whose_exit_was_never_recorded(victim, runtime_version):
    """The lasting form: counted as task_gone (CriPodStatsUnavailable's input) where the runtime
    fails that pod's stats (1.6.20, 1.7.24), never as a failed collector, and named by the doctor
    with its fix; the fix (the disk writable again) clears it, stopping the sandbox does not."""
    healthy = run_pod(victim, "healthy", "shop")
    healthy.add_container("app", SLEEP)
    stuck = run_pod(victim, "stuck", "shop")
    cid = stuck.add_container("app", SLEEP)
    with ExporterProcess(victim.endpoint, "--stats-interval", "1", "--stats-idle-interval", "1") as exp:
        wait_for(lambda: exp.scrape().find("cri_stats_snapshot_age_seconds"), timeout=60, what="a snapshot")
        exit_ = unrecorded_exit(victim, cid)
        rt = victim.runtime_stub()
        # CRI's answers, the truth the exporter is held to
        assert rt.ContainerStatus(api.ContainerStatusRequest(container_id=cid)).status.state == api.CONTAINER_RUNNING
        listed = None
        try:
            listed = {p.attributes.id for p in rt.ListPodSandboxStats(
                api.ListPodSandboxStatsRequest(filter=api.PodSandboxStatsFilter())).stats}
        except grpc.RpcError as err:
            assert runtime_version == "1.6" and err.code() == grpc.StatusCode.NOT_FOUND, err
        try:
            rt.PodSandboxStats(api.PodSandboxStatsRequest(pod_sandbox_id=stuck.id))
            answered = True
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.NOT_FOUND and f"task {cid} not found" in err.details(), err
            answered = False
        if runtime_version == "2.1":
            assert answered and listed == {healthy.id, stuck.id}
        else:
            assert not answered and listed == (None if runtime_version == "1.6" else {healthy.id})

        after = exp.scrape().get1("cri_stats_refreshes_total")
        s = wait_for(lambda: (x := exp.scrape()).get1("cri_stats_refreshes_total") >= after + 2 and x,
                     timeout=60, what="two refreshes")
        assert s.get1("cri_scrape_collector_success", collector="stats") == 1, exp.log()[-3000:]
        assert s.get1("cri_stats_pod_sandbox_failures") == 0
        assert s.get1("cri_stats_pod_sandboxes_unavailable", reason=TASK_GONE) == (0 if answered else 1)
        assert s.find("cri_container_writable_layer_bytes", namespace="shop", pod="healthy", container="app")
        doctor = results("/", victim.endpoint, checks=["cri.pod_stats"])["cri.pod_stats"].finding
        if answered:
            assert doctor.status.value == "pass", doctor
        else:
            assert stuck.id in exp.log() and "PodSandboxStats unavailable" in exp.log()
            assert doctor.status.value == "fail", doctor
            assert "whose task is gone" in doctor.summary and f"{stuck.id[:13]} shop/stuck" in doctor.seen
            assert "failed to checkpoint status" in doctor.fix

        # Stopping the sandbox is no fix while the exit cannot be recorded: StopContainer finds no task and
        # returns, and the sandbox cannot be removed (1.6.20, 1.7.24, 2.1.9 alike).
        rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=stuck.id))
        with pytest.raises(grpc.RpcError) as refused:
            rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=stuck.id))
        assert "still running" in refused.value.details()
        # the runbook's fix: the disk writable again; containerd's next retry records the exit
        exit_.release()
        wait_for(lambda: rt.ContainerStatus(api.ContainerStatusRequest(container_id=cid)).status.state
                 == api.CONTAINER_EXITED, timeout=330, interval=1, what="containerd's retry (back-off up to 5 min)")
        rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=stuck.id))
        after = exp.scrape().get1("cri_stats_refreshes_total")
        s = wait_for(lambda: (x := exp.scrape()).get1("cri_stats_refreshes_total") >= after + 2 and x,
                     timeout=60, what="two refreshes after the fix")
        assert s.get1("cri_stats_pod_sandboxes_unavailable", reason=TASK_GONE) == 0
        assert s.get1("cri_scrape_collector_success", collector="stats") == 1
        assert results("/", victim.endpoint, checks=["cri.pod_stats"])["cri.pod_stats"].status.value == "pass"
