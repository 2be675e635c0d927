"""The standard pod set that tests and the demo observe: one of each container
state and of each resource signal an exporter must report."""

import time
from dataclasses import dataclass

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


def start_oom_pod(cd: Containerd, namespace: str = "default") -> Pod:
    """A pod whose container "hog" the memory cgroup kills: dd's 64 MiB
    buffer does not fit in 32 MiB. Raises unless CRI reports OOMKilled/137."""
    pod = run_pod(cd, "oom", namespace)
    cid = pod.add_container("hog", ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
                            memory_limit=OOM_LIMIT)
    status = pod.wait_exited(cid)
    # containerd may process the exit before the OOM event: the reason reads
    # "Error" first and "OOMKilled" once the event is handled (1.6.20 a moment
    # later; 2.1.9 on a loaded machine many seconds later, or never: then this
    # fails after a minute rather than report a kill CRI does not name).
    end = time.monotonic() + 60
    while status.reason != "OOMKilled" and time.monotonic() < end:
        time.sleep(0.05)
        status = pod.container_status(cid)
    if (status.reason, status.exit_code) != ("OOMKilled", 137):
        raise RuntimeError(f"expected OOMKilled/137, got {status.reason}/{status.exit_code}")
    return pod
