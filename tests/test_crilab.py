"""The lab harness itself: a real containerd and real pods (root needed)."""

import os
import signal

import pytest

from cri_exporter.cri import api_pb2 as api
from crilab import Containerd, run_pod
from crilab.scenario import start_oom_pod
from tests.exporter_proc import wait_for

pytestmark = pytest.mark.containerd


def states(cd):
    return {(c.labels["io.kubernetes.pod.name"], c.metadata.name, c.metadata.attempt):
            api.ContainerState.Name(c.state)
            for c in cd.runtime_stub().ListContainers(api.ListContainersRequest()).containers}


def test_standard_pods_states_and_labels(lab):
    cd, pods = lab
    standard = {"web", "burner", "batch", "flaky"}  # other tests add pods to the shared lab
    assert {k: v for k, v in states(cd).items() if k[0] in standard} == {
        ("web", "app", 0): "CONTAINER_RUNNING",
        ("web", "sidecar", 0): "CONTAINER_RUNNING",
        ("burner", "burn", 0): "CONTAINER_RUNNING",
        ("batch", "job", 0): "CONTAINER_EXITED",
        ("flaky", "worker", 0): "CONTAINER_EXITED",
        ("flaky", "worker", 1): "CONTAINER_RUNNING",
    }
    job = pods.batch.container_status(pods.batch.containers["job"][0])
    assert job.exit_code == 3
    worker = pods.flaky.container_status(pods.flaky.containers["worker"][1])
    assert worker.labels["io.kubernetes.pod.uid"] == pods.flaky.uid
    assert worker.annotations["io.kubernetes.container.restartCount"] == "1"
    sandboxes = cd.runtime_stub().ListPodSandbox(api.ListPodSandboxRequest()).items
    web = next(s for s in sandboxes if s.id == pods.web.id)
    assert web.labels["io.kubernetes.pod.namespace"] == "shop"


def test_burner_is_throttled(lab):
    _, pods = lab
    burn = pods.burner.containers["burn"][0]
    stat = f"/sys/fs/cgroup/cpu/kubepods/burstable/pod{pods.burner.uid}/{burn}/cpu.stat"
    wait_for(lambda: int(dict(line.split() for line in open(stat))["nr_throttled"]) > 0, timeout=30,
             interval=0.1, what=f"{stat}: nr_throttled above 0")


def test_oom_pod(lab):
    cd, _ = lab
    pod = start_oom_pod(cd)  # itself checks OOMKilled / 137
    assert pod.container_status(pod.containers["hog"][0]).reason == "OOMKilled"


def test_second_instance_restart_kill_and_cleanup(lab, tmp_path, runtime_version):
    first, _ = lab
    cd = Containerd(tmp_path, version=runtime_version).start()
    assert cd.net != first.net
    pod = run_pod(cd, "solo", "lab")
    cid = pod.add_container("main", ["sleep", "600"])
    cd.restart()  # state and running containers survive a restart
    assert pod.container_status(cid).state == api.CONTAINER_RUNNING
    cd.kill()
    assert cd.shim_pids()  # a crash leaves the shims running
    cd.cleanup()
    assert not cd.shim_pids()
    assert not any(str(tmp_path) in line for line in open("/proc/self/mountinfo"))
    assert not os.path.exists(f"/sys/class/net/{cd.bridge}")
    # the first instance is untouched, and a later one works on the freed network
    assert states(first)[("web", "app", 0)] == "CONTAINER_RUNNING"
    with Containerd(tmp_path / "again", net=cd.net, version=runtime_version) as again:
        run_pod(again, "solo", "lab").add_container("main", ["true"])


@pytest.mark.newest_runtime
def test_cleanup_of_a_wedged_containerd_returns(tmp_path, runtime_version):
    """A runtime that answers nothing (SIGSTOP) fails cleanup's calls at their
    deadlines; cleanup then kills it and frees its network: a demo's Ctrl-C
    cannot hang on it."""
    cd = Containerd(tmp_path, version=runtime_version).start()
    pid = cd.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        cd.cleanup(budget=1)
        assert not cd.running and not os.path.exists(f"/proc/{pid}")  # SIGKILLed and reaped
        with Containerd(tmp_path / "again", net=cd.net, version=runtime_version):
            pass  # its network is free again
    finally:
        if cd.running:
            cd.kill()


def test_no_cni_means_network_not_ready(tmp_path, runtime_version):
    with Containerd(tmp_path, cni=False, version=runtime_version) as cd:
        conditions = cd.runtime_stub().Status(api.StatusRequest()).status.conditions
        assert {c.type: c.status for c in conditions}["NetworkReady"] is False
