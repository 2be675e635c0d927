"""The guest's side of tests/test_cgroup_v2_node.py: runs inside the cgroup v2 +
systemd node that crilab.vm boots, with the guest's python3, the project's
wheel from the payload, and the node's own containerd 2.x.

It gathers evidence and judges nothing: pods run through CRI the way the
kubelet runs them with the systemd driver; the exporter's /metrics with every
pod's and container's cgroup files read just before and just after the
scrape; the doctor's reports on the healthy node and with a kubelet config
that says cgroupfs. All of it goes to OUT/results.json, which the test on the
host reads and compares. Progress goes to the console, so a guest that hangs
shows where.

    PYTHONPATH=/payload/site python3 -m crilab.vm_guest /payload/out
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
import urllib.request
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc

import cri_exporter
from cri_exporter.cri import api_pb2 as api
from cri_exporter.cri import api_pb2_grpc as api_grpc
from crilab.containerd import _Deadline
from crilab.pods import run_pod
from crilab.vm_image import ENDPOINT, kubelet_config
from crilab.vm_quota import run as project_quota_run
from crilab import vm_unrecorded_exit

SOCKET = ENDPOINT.removeprefix("unix://")
KUBELET_CONFIG = Path("/var/lib/kubelet/config.yaml")
METRICS = "http://127.0.0.1:9920/metrics"
CGROUP = Path("/sys/fs/cgroup")
# Every cgroup file the exporter reads on v2, read here too as the ground truth.
CGROUP_FILES = ("cpu.stat", "cpu.max", "cpu.weight", "memory.current", "memory.stat", "memory.events", "memory.max",
                "memory.peak", "memory.swap.current", "pids.current", "pids.max", "io.stat", "cpu.pressure", "memory.pressure",
                "io.pressure")
SLEEP = ["sleep", "2147483647"]
BUSY = ["sh", "-c", "while :; do :; done"]
# fsync'd writes to the container's own layer (ext4 on /dev/vda): io.stat gets a device line. Once,
# then still: a file rewritten in a loop makes the page cache (a gauge) swing between the reads
# before and after a scrape.
WRITER = ["sh", "-c", "dd if=/dev/zero of=/tmp/blob bs=1M count=4 conv=fsync; exec sleep 2147483647"]
# dd's 64 MiB buffer does not fit in the 32 MiB limit: the kernel kills it. As the container's
# only process ("hog": the whole container dies, as with the kubelet's memory.oom.group=1 on v2
# since 1.32), and as a child whose container lives on ("leaky": singleProcessOOMKill).
HOG = ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]
LEAKY = ["sh", "-c", "dd if=/dev/zero of=/dev/null bs=64M count=1; exec sleep 2147483647"]
CPU_QUOTA = 20000  # 0.2 core of a 100 ms period
OOM_LIMIT = 32 << 20
# (namespace, pod, QoS class, [(container, command, cpu quota, memory limit)])
PODS = (
    ("shop", "web", "besteffort", [("app", SLEEP, None, None), ("writer", WRITER, None, None)]),
    ("default", "burner", "burstable", [("burn", BUSY, CPU_QUOTA, None)]),
    ("default", "steady", "guaranteed", [("main", SLEEP, 50000, 64 << 20)]),
    ("oomtest", "oom", "burstable", [("hog", HOG, None, OOM_LIMIT), ("leaky", LEAKY, None, OOM_LIMIT)]),
)
STARTED = time.monotonic()


def log(msg: str) -> None:
    print(f"crilab-guest [{time.monotonic() - STARTED:6.1f} s, uptime {_uptime():.0f} s]: {msg}", flush=True)


def _uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def kubelet_cgroup_parent(qos: str, uid: str) -> str:
    """What the kubelet sends as cgroup_parent with the systemd driver: the
    expanded path (CgroupName.ToSystemd calls ExpandSlice), uid dashes as
    underscores. A bare slice name still runs pods, but containerd's
    ListPodSandboxStats then fails with "cgroups: invalid group path"
    (1.6.20 and 2.1.9, seen)."""
    u = uid.replace("-", "_")
    if qos == "guaranteed":
        return f"/kubepods.slice/kubepods-pod{u}.slice"
    return f"/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{u}.slice"


class NodeRuntime:
    """What crilab.pods needs of a runtime: stubs on the node's containerd and a log dir."""

    def __init__(self, timeout: float = 120.0):
        self.base = Path("/var/log/crilab")
        self.channel = grpc.insecure_channel(ENDPOINT)
        self.timeout = timeout

    def runtime_stub(self, timeout: float | None = None):
        return _Deadline(api_grpc.RuntimeServiceStub(self.channel), timeout or self.timeout)


def run(cmd: list[str], timeout: float = 600) -> dict:
    started = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr[-20000:],
                "seconds": round(time.monotonic() - started, 2)}
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"rc": None, "stdout": "", "stderr": str(e), "seconds": round(time.monotonic() - started, 2)}


def wait_for(what: str, probe, timeout: float, interval: float = 1.0):
    end = time.monotonic() + timeout
    while True:
        try:
            value = probe()
            if value:
                return value
            error = "not yet"
        except Exception as e:  # noqa: BLE001 - whatever the probe meets, retried until the deadline
            error = f"{type(e).__name__}: {e}"
        if time.monotonic() > end:
            raise TimeoutError(f"{what}: not after {timeout} s ({error})")
        time.sleep(interval)  # poll interval


def node_facts() -> dict:
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    return {
        "pid1": Path("/proc/1/comm").read_text().strip(),
        "cmdline": Path("/proc/cmdline").read_text().strip(),
        "kernel": os.uname().release,
        "cgroup_mounts": [m for m in mounts if m[2].startswith("cgroup")],
        "controllers": (CGROUP / "cgroup.controllers").read_text().split(),
        "subtree_control": (CGROUP / "cgroup.subtree_control").read_text().split(),
        "containerd_config": Path("/etc/containerd/config.toml").read_text(),
        "containerd_version": run(["containerd", "--version"])["stdout"].strip(),
        "runc_version": run(["runc", "--version"])["stdout"].strip(),
        "python": sys.version,
        # Where the agent runs from: the project's wheel, installed into the payload.
        "agent": {"module": cri_exporter.__file__, "version": metadata.version("cri-exporter"),
                  "wheel": metadata.distribution("cri-exporter").read_text("WHEEL")},
        "systemd_running": run(["systemctl", "is-system-running"])["stdout"].strip(),
    }


def read_cgroup(rel: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in CGROUP_FILES:
        try:
            out[name] = (CGROUP / rel.lstrip("/") / name).read_text()
        except OSError:
            out[name] = None
    return out


def proc_cgroup(pid: int) -> str:
    """The process's v2 cgroup ("0::/path"): where it really is, whatever any resolver thinks."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    raise RuntimeError(f"/proc/{pid}/cgroup has no v2 line")


def verbose_pid(info: dict) -> int:
    return int(json.loads(info["info"])["pid"])


def start_pods(rt: NodeRuntime) -> list[dict]:
    pods = []
    for namespace, name, qos, containers in PODS:
        uid = str(uuid.uuid4())
        parent = kubelet_cgroup_parent(qos, uid)
        pod = run_pod(rt, name, namespace, uid=uid, cgroup_parent=parent)
        stub = rt.runtime_stub()
        sandbox_pid = verbose_pid(stub.PodSandboxStatus(api.PodSandboxStatusRequest(
            pod_sandbox_id=pod.id, verbose=True)).info)
        entry: dict[str, Any] = {"namespace": namespace, "pod": name, "uid": uid, "qos": qos, "id": pod.id,
                 "cgroup_parent": parent, "sandbox_cgroup": proc_cgroup(sandbox_pid), "containers": {}}
        entry["pod_cgroup"] = entry["sandbox_cgroup"].rsplit("/", 1)[0]
        for cname, command, quota, memory in containers:
            cid = pod.add_container(cname, command, cpu_quota=quota, memory_limit=memory)
            entry["containers"][cname] = {"id": cid, "cpu_quota": quota, "memory_limit": memory}
        pods.append(entry)
        log(f"pod {namespace}/{name} ({qos}) in {entry['sandbox_cgroup']}")
    return pods


def locate_containers(rt: NodeRuntime, pods: list[dict]) -> None:
    """Each running container's cgroup, from its own PID; each pod's, the parent of its sandbox's scope."""
    stub = rt.runtime_stub()
    for entry in pods:
        for c in entry["containers"].values():
            status = stub.ContainerStatus(api.ContainerStatusRequest(container_id=c["id"], verbose=True))
            c["state"] = api.ContainerState.Name(status.status.state)
            c["reason"], c["exit_code"] = status.status.reason, status.status.exit_code
            if status.status.state == api.CONTAINER_RUNNING:
                c["cgroup"] = proc_cgroup(verbose_pid(status.info))
                scope = c["cgroup"].rsplit("/", 1)[1]
                c["unit"] = run(["systemctl", "show", "-p", "Id,Slice,ControlGroup,ActiveState", scope])["stdout"]


def wait_oom(rt: NodeRuntime, pods: list[dict]) -> None:
    """Until both dd's are killed: the hog's container with it, the leaky one's child only."""
    entry = next(p for p in pods if p["pod"] == "oom")
    hog = entry["containers"]["hog"]["id"]
    stub = rt.runtime_stub()

    def exited():
        return stub.ContainerStatus(api.ContainerStatusRequest(container_id=hog)).status.state == api.CONTAINER_EXITED

    def oom_killed():
        # containerd may record the exit before the OOM event: "Error" first, "OOMKilled" a moment later.
        return stub.ContainerStatus(api.ContainerStatusRequest(container_id=hog)).status.reason == "OOMKilled"

    def both_killed():
        pod_events = (CGROUP / entry["pod_cgroup"].lstrip("/") / "memory.events").read_text()
        return dict(line.split() for line in pod_events.splitlines())["oom_kill"] == "2"

    wait_for("the hog container exited", exited, 180)
    try:
        wait_for("containerd's OOMKilled for the hog container", oom_killed, 15)
    except TimeoutError as e:
        log(str(e))  # the test reads the reason it ended with
    wait_for("both OOM kills in the pod's memory.events", both_killed, 180)
    log("OOM kills done")


def snapshot(pods: list[dict]) -> dict[str, dict]:
    out = {}
    for entry in pods:
        out[entry["pod_cgroup"]] = read_cgroup(entry["pod_cgroup"])
        for c in entry["containers"].values():
            if "cgroup" in c:
                out[c["cgroup"]] = read_cgroup(c["cgroup"])
    return out


def scrape() -> tuple[str, float]:
    started = time.monotonic()
    with urllib.request.urlopen(METRICS, timeout=120) as r:
        return r.read().decode(), round(time.monotonic() - started, 3)


def sample(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def throttled(pods: list[dict]) -> int:
    burn = next(p for p in pods if p["pod"] == "burner")["containers"]["burn"]
    stat = (CGROUP / burn["cgroup"].lstrip("/") / "cpu.stat").read_text()
    return int(dict(line.split() for line in stat.splitlines())["nr_throttled"])


def block_devices() -> dict[str, str]:
    """major:minor -> device name, as the kernel names them (/sys/dev/block/254:0 -> .../vda)."""
    return {d.name: d.resolve().name for d in Path("/sys/dev/block").iterdir()}


def doctor(name: str, results: dict) -> None:
    log(f"doctor ({name})")
    r = run([sys.executable, "-m", "cri_exporter", "doctor", "--output", "json"])
    try:
        r["report"] = json.loads(r["stdout"])
        del r["stdout"]
    except ValueError:
        pass
    results["doctor"][name] = r
    log(f"doctor ({name}) exited {r['rc']} in {r['seconds']} s")


def kill_pods() -> None:
    """The lab's pause (busybox sleep as the pod's PID 1) ignores SIGTERM, so a shutdown
    would wait 90 s for it; removing 4 pods through CRI takes half a minute under
    emulation. The node is thrown away (snapshot=on): SIGKILL every pod's processes."""
    run(["systemctl", "kill", "--signal=SIGKILL", "kubepods.slice"], 60)


def main(out: Path) -> int:
    results: dict = {"errors": [], "timings": {}, "doctor": {}}
    exporter = None

    def mark(step: str) -> None:
        results["timings"][step] = {"uptime": round(_uptime(), 1), "seconds": round(time.monotonic() - STARTED, 1)}
        log(step)

    try:
        results["node"] = node_facts()
        results["block_devices"] = block_devices()
        mark("facts")
        rt = NodeRuntime()
        results["version"] = wait_for("containerd answering CRI on " + SOCKET, lambda: str(
            rt.runtime_stub(10).Version(api.VersionRequest())), 300, 2)
        mark("containerd ready")
        imported = run(["ctr", "-n", "k8s.io", "images", "import", "/payload/images.tar"])
        if imported["rc"] != 0:
            raise RuntimeError(f"ctr images import: {imported}")
        status = rt.runtime_stub().Status(api.StatusRequest(verbose=True))
        results["conditions"] = {c.type: c.status for c in status.status.conditions}
        results["pods"] = start_pods(rt)
        mark("pods started")
        wait_oom(rt, results["pods"])
        locate_containers(rt, results["pods"])
        mark("pods located")
        with open(out / "exporter.log", "w") as logf:
            exporter = subprocess.Popen([sys.executable, "-m", "cri_exporter", "serve", "--listen-address",
                                         "127.0.0.1:9920", "--log-format", "json"], stdout=logf, stderr=subprocess.STDOUT)
        wait_for("the exporter's /metrics", scrape, 300, 2)
        mark("exporter serving")
        # Wait for the background stats snapshot (ListPodSandboxStats on the systemd
        # layout) and for the CPU quota to have throttled the busy loop a while.
        wait_for("a stats refresh and 20 throttled periods", lambda: (
            (sample(scrape()[0], "cri_stats_refreshes_total") or 0) >= 1 and throttled(results["pods"]) >= 20),
            300, 2)
        mark("throttled")
        before = snapshot(results["pods"])
        text, seconds = scrape()
        after = snapshot(results["pods"])
        results["scrape"] = {"before": before, "metrics": text, "after": after, "seconds": seconds}
        mark("scraped")
        exporter.send_signal(signal.SIGTERM)
        exporter.wait(60)
        exporter = None
        doctor("healthy", results)
        KUBELET_CONFIG.write_text(kubelet_config("cgroupfs"))
        doctor("kubelet_cgroupfs", results)
        # A kubelet that does not take the runtime's driver over its own (KubeletCgroupDriverFromCRI
        # off; on by default from 1.31) runs with cgroupfs for certain.
        KUBELET_CONFIG.write_text(kubelet_config("cgroupfs") + "featureGates:\n  KubeletCgroupDriverFromCRI: false\n")
        doctor("kubelet_cgroupfs_own_driver", results)
        KUBELET_CONFIG.write_text(kubelet_config("systemd"))
        mark("doctor")
        # emptyDirs under ext4 project quotas (crilab/vm_quota.py): its own errors, its own tests.
        results["project_quota"] = project_quota_run(Path("/var/tmp/crilab-quota"))
        mark("project quota")
        try:  # its own errors, its own tests (tests/test_cgroup_v2_node.py)
            results["unrecorded_exit"] = vm_unrecorded_exit.run(rt, kubelet_cgroup_parent, log, wait_for, out)
        except Exception:  # noqa: BLE001 - recorded for its tests, which fail on it
            results["unrecorded_exit"] = {"error": traceback.format_exc()}
            log("unrecorded exit failed:\n" + traceback.format_exc())
        mark("unrecorded exit")
    except Exception:  # noqa: BLE001 - recorded for the test, which fails on it
        results["errors"].append(traceback.format_exc())
        log("failed:\n" + traceback.format_exc())
    finally:
        if exporter is not None:
            exporter.kill()
        results["containerd_log"] = run(["journalctl", "-u", "containerd", "--no-pager", "-o", "short-monotonic"],
                                        60)["stdout"][-200000:]
        kill_pods()
        (out / "results.json").write_text(json.dumps(results))
        log(f"results written to {out}/results.json")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
