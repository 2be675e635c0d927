"""The standard pod set that tests and the demo observe: one of each container
state and of each resource signal an exporter must report."""

import json
import os
import signal
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cri_exporter.cri import api_pb2 as api
from crilab.containerd import Containerd
from crilab.pods import Pod, restart_container, run_pod

SLEEP = ["sleep", "2147483647"]
OOM_LIMIT = 32 << 20


@dataclass
class StandardPods:
    """Container ids are in pod.containers[name][attempt]."""
    web: Pod     # shop/web: "app" and "sidecar" running
    burner: Pod  # "burn": busy loop under a 10% CPU quota, so throttling rises
    batch: Pod   # "job": exited by itself with code 3
    flaky: Pod   # "worker": attempt 0 exited with code 1, attempt 1 running


def start_standard_pods(cd: Containerd, namespace: str = "default") -> StandardPods:
    web = run_pod(cd, "web", "shop")
    web.add_container("app", SLEEP)
    web.add_container("sidecar", SLEEP)
    burner = run_pod(cd, "burner", namespace)
    burner.add_container("burn", ["sh", "-c", "while :; do :; done"],
                         cpu_quota=10000, cpu_period=100000)
    batch = run_pod(cd, "batch", namespace)
    batch.add_container("job", ["sh", "-c", "exit 3"])
    flaky = run_pod(cd, "flaky", namespace)
    flaky.add_container("worker", ["sh", "-c", "exit 1"])
    restart_container(flaky, "worker", SLEEP)
    batch.wait_exited(batch.containers["job"][0])
    return StandardPods(web, burner, batch, flaky)


# How long after an OOM-killed instance has exited CRI may still turn its reason
# from "Error" into "OOMKilled" (the exporter's terminations wait 10 s, SETTLE_SECONDS).
OOM_REPORT_SECONDS = 20.0
HOG = ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]  # 64 MiB in a 32 MiB limit
# Pods start_oom_pod starts at most to get one whose kill the runtime reports.
OOM_POD_TRIES = 3


def oom_exit(pod: Pod, container_id: str, timeout: float = 30.0,
             report_seconds: float = OOM_REPORT_SECONDS) -> api.ContainerStatus:
    """The status of an instance the memory cgroup kills, once its reason has settled.

    containerd handles a container's exit and its OOM event separately, so the
    reason reads "Error" (137) first and "OOMKilled" once the event is handled
    (1.6.20 a moment later). On cgroup v1 the event can also be lost for good:
    the shim's OOM watcher (pkg/oom/v1/v1.go, the same in 1.6 to 2.1) drops an
    OOM notification it reads after the container's cgroup was deleted, which
    under load happens when the exit is handled first (2.1.9, one CPU hog and
    other tests beside: 2 of 40 kills with no TaskOOM in containerd's log,
    reason Error for good). Then this returns Error/137 after `report_seconds`.
    """
    status = pod.wait_exited(container_id, timeout=timeout)
    end = time.monotonic() + report_seconds
    while status.reason != "OOMKilled" and time.monotonic() < end:
        time.sleep(0.05)  # poll interval of the wait for the reason
        status = pod.container_status(container_id)
    return status


@dataclass
class OomPod:
    """start_oom_pod's pod, and the exits of the pods it gave up on: their
    instance was killed too, but the runtime reports it as Error/137 (the OOM
    event lost, oom_exit); they count as terminations of the same container
    identity (namespace, pod, container)."""
    pod: Pod
    lost_oom_events: list[api.ContainerStatus]


def start_oom_pod(cd: Containerd, namespace: str = "default") -> Pod:
    """A pod whose container "hog" the memory cgroup kills: dd's 64 MiB
    buffer does not fit in 32 MiB, and CRI reports OOMKilled/137."""
    return start_oom_pod_counted(cd, namespace).pod


def start_oom_pod_counted(cd: Containerd, namespace: str = "default") -> OomPod:
    """start_oom_pod, saying which exits of pods given up on come before it.

    When the runtime loses the OOM event (oom_exit) the pod is removed and
    another of the same name started: the scenario is a kill the runtime
    reports. Raises when it loses OOM_POD_TRIES in a row, or on any other exit."""
    lost: list[api.ContainerStatus] = []
    for _ in range(OOM_POD_TRIES):
        pod = run_pod(cd, "oom", namespace)
        status = oom_exit(pod, pod.add_container("hog", HOG, memory_limit=OOM_LIMIT))
        if (status.reason, status.exit_code) == ("OOMKilled", 137):
            return OomPod(pod, lost)
        pod.remove()
        if (status.reason, status.exit_code) != ("Error", 137):
            break
        lost.append(status)
    raise RuntimeError(f"expected OOMKilled/137, got {status.reason}/{status.exit_code} "
                       f"(after {len(lost)} OOM kill(s) the runtime reported as Error/137)")


@dataclass
class LeakedSandbox:
    """A sandbox whose containerd state leak_sandbox removed: its shim (still
    running), and the pod's network namespace and cgroups that cleanup()
    (which asks CRI) cannot find. forget() removes those once the shim is gone."""
    sandbox_id: str
    shim_pid: int
    netns: list[str]
    cgroup_parents: list[str]

    def forget(self) -> None:
        for path in self.netns:
            subprocess.run(["umount", "-l", path], capture_output=True)
            Path(path).unlink(missing_ok=True)
        for parent in self.cgroup_parents:
            for ctl in Path("/sys/fs/cgroup").iterdir():
                for d in sorted((ctl / parent.lstrip("/")).glob("**/"), key=lambda p: -len(p.parts)):
                    try:
                        d.rmdir()
                    except OSError:
                        pass


# Where containerd's runtime v2 keeps a task's bundle (state) and work dir (root), per namespace.
TASK_DIR = "io.containerd.runtime.v2.task/k8s.io"


def leak_sandbox(cd: Containerd, pod: Pod) -> LeakedSandbox:
    """Leak the shim of `pod`, and only it: SIGKILL containerd, move the task
    bundles of the pod's sandbox and containers away, start containerd again,
    and stop and remove the sandbox over CRI, as the kubelet does with a
    sandbox that is no longer ready.

    Measured on 1.6.20, 1.7.24 and 2.1.9 (tests/test_runtime_processes_real.py):
    containerd starts again knowing no task of the pod (a bundle holds the
    shim's address: `address` on 1.6 and 1.7, `bootstrap.json` on 2.1, where
    a container's bundle also names its sandbox in `sandbox`). Every bundle
    of the pod goes: through a container's bundle left behind containerd
    reaches the shim again and that container reads RUNNING (1.6.20, 2.1.9).
    CRI lists the sandbox NOTREADY and its containers EXITED from their
    metadata; StopPodSandbox finds no task to stop and RemovePodSandbox drops
    the metadata. The shim, its pause and its containers keep running; CRI
    lists neither the sandbox nor its containers, and every other pod keeps
    running, is READY and serves Exec. Call cd.cleanup() (it kills the shims
    serving its socket, this one too, and unmounts the moved bundles' rootfs),
    then forget() on the result."""
    rt = cd.runtime_stub()
    info = json.loads(rt.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=pod.id, verbose=True)).info["info"])
    netns = [ns["path"] for ns in info["runtimeSpec"]["linux"]["namespaces"]
             if ns["type"] == "network" and ns.get("path")]
    shims = [pid for pid in cd.shim_pids() if f"-id\0{pod.id}\0" in Path(f"/proc/{pid}/cmdline").read_text()]
    if len(shims) != 1:
        raise RuntimeError(f"expected one shim serving sandbox {pod.id}, found {shims}")
    ids = [pod.id, *(c.id for c in rt.ListContainers(api.ListContainersRequest(
        filter=api.ContainerFilter(pod_sandbox_id=pod.id))).containers)]
    cd.kill()
    away = cd.base / f"leaked-{pod.id[:12]}"
    for top in ("state", "root"):
        for id_ in ids:
            bundle = cd.base / top / TASK_DIR / id_
            if bundle.exists():  # rootfs stays mounted: a rename moves the mount with it
                away.mkdir(exist_ok=True)
                shutil.move(bundle, away / f"{top}-{id_}")
    cd.start()
    rt = cd.runtime_stub()
    rt.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod.id))
    rt.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
    return LeakedSandbox(pod.id, shims[0], netns, [info["config"]["linux"]["cgroup_parent"]])


@dataclass
class UnrecordedExit:
    """A container that exited while containerd could not record it (unrecorded_exit)."""
    container_id: str
    status_dir: Path

    def release(self) -> None:
        """Make the status directory writable again (the disk fixed): containerd records the exit at
        its next retry (its back-off doubles from 1 s to 5 minutes) or when the container is stopped."""
        subprocess.run(["umount", str(self.status_dir)], check=True, capture_output=True)


def unrecorded_exit(cd: Containerd, container_id: str, timeout: float = 30.0) -> UnrecordedExit:
    """Kill a running container while containerd cannot write its CRI status checkpoint (the
    container's directory under the CRI plugin's root made read-only, as a full or read-only
    /var/lib/containerd makes it), and wait until containerd has handled the exit and failed.

    Measured on 1.6.20, 1.7.24 and 2.1.9 alike: the exit handler deletes the task, then fails to
    checkpoint the new status ("failed to checkpoint status ... read-only file system") and keeps
    the old one, so CRI lists the container RUNNING with no task, and retries with a back-off.
    On 1.6.20 every ListPodSandboxStats fails NOT_FOUND and so does PodSandboxStats of its pod;
    1.7.24 leaves the pod out of the list and fails its PodSandboxStats alike; 2.1.9 answers both
    (it never asks the task). cd.cleanup() unmounts it if release() was not called."""
    found = list((cd.base / "root").glob(f"*/containers/{container_id}/status"))
    if len(found) != 1:
        raise RuntimeError(f"expected one CRI status file of {container_id}, found {found}")
    status_dir = found[0].parent
    subprocess.run(["mount", "--bind", str(status_dir), str(status_dir)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(status_dir)], check=True, capture_output=True)
    rt = cd.runtime_stub()
    info = rt.ContainerStatus(api.ContainerStatusRequest(container_id=container_id, verbose=True)).info["info"]
    os.kill(json.loads(info)["pid"], signal.SIGKILL)
    end = time.monotonic() + timeout
    while f"failed to checkpoint status to \\\"{status_dir}" not in cd.log_path.read_text(errors="replace"):
        if time.monotonic() > end:
            raise TimeoutError(f"containerd did not try to record the exit of {container_id} within {timeout}s")
        time.sleep(0.1)  # poll interval of the wait for containerd's log line
    return UnrecordedExit(container_id, status_dir)
