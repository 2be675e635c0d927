"""The guest's unrecorded exit (crilab.scenario.unrecorded_exit, on the VM's systemd cgroup v2 node):
a container killed while its CRI status directory is read-only, so containerd deletes its task and
scope but keeps listing it running. Evidence only, judged by tests/test_cgroup_v2_node.py: CRI's
state, whether the container's and its pod's cgroups exist, the exporter's scrape once it names
the container (or the last one), and the doctor's cri.running_without_cgroup report.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from cri_exporter.cri import api_pb2 as api
from crilab.pods import run_pod

CGROUP = Path("/sys/fs/cgroup")
METRICS = "http://127.0.0.1:9921/metrics"
FAMILY = "cri_container_running_without_cgroup_since_time_seconds"


def _cgroup_of(pid: int) -> str:
    return next(line[3:] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if line.startswith("0::"))


def _journal() -> str:
    return subprocess.run(["journalctl", "-u", "containerd", "--no-pager"], capture_output=True, text=True,
                          timeout=60).stdout


def _scrape() -> str:
    with urllib.request.urlopen(METRICS, timeout=120) as r:
        body: bytes = r.read()
    return body.decode()


def run(rt, cgroup_parent, log, wait_for, out: Path) -> dict:
    """`cgroup_parent(qos, uid)`: the kubelet's for the systemd driver; `log`, `wait_for`: the guest's."""
    result: dict = {}
    uid = "5d1c0e6a-0000-4000-8000-000000000001"
    pod = run_pod(rt, "stuck", "dead", uid=uid, cgroup_parent=cgroup_parent("besteffort", uid))
    cid = pod.add_container("app", ["sleep", "2147483647"])
    stub = rt.runtime_stub()
    info = json.loads(stub.ContainerStatus(api.ContainerStatusRequest(container_id=cid, verbose=True)).info["info"])
    result["id"], result["cgroup"] = cid, _cgroup_of(int(info["pid"]))
    result["pod_cgroup"] = result["cgroup"].rsplit("/", 1)[0]
    with open(out / "exporter-unrecorded.log", "w") as logf:
        exporter = subprocess.Popen([sys.executable, "-m", "cri_exporter", "serve", "--listen-address",
                                     "127.0.0.1:9921", "--log-format", "json"], stdout=logf, stderr=subprocess.STDOUT)
    status_dir = None
    try:
        wait_for("the exporter reading the container", lambda: 'pod="stuck"' in _scrape(), 300)
        result["doctor_before"] = _doctor()
        (found,) = list(Path("/var/lib/containerd").glob(f"*/containers/{cid}/status"))
        status_dir = found.parent
        subprocess.run(["mount", "--bind", str(status_dir), str(status_dir)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(status_dir)], check=True)
        os.kill(int(info["pid"]), signal.SIGKILL)
        wait_for("containerd failing to record the exit", lambda: "failed to checkpoint status" in _journal(), 120)
        log("unrecorded exit: containerd failed to record it")
        text = ""

        def named() -> bool:
            nonlocal text
            text = _scrape()
            return FAMILY + "{" in text
        try:
            wait_for("the exporter naming the container", named, 300, 2)
        except TimeoutError as err:
            result["timeout"] = str(err)
        result["metrics"] = text
        result["state"] = api.ContainerState.Name(
            stub.ContainerStatus(api.ContainerStatusRequest(container_id=cid)).status.state)
        result["cgroup_exists"] = (CGROUP / result["cgroup"].lstrip("/")).exists()
        result["pod_cgroup_exists"] = (CGROUP / result["pod_cgroup"].lstrip("/")).exists()
        result["doctor"] = _doctor()
        log("unrecorded exit: evidence taken")
    finally:
        exporter.send_signal(signal.SIGTERM)
        exporter.wait(60)
        if status_dir is not None:
            subprocess.run(["umount", str(status_dir)])
    return result


def _doctor() -> dict:
    r = subprocess.run([sys.executable, "-m", "cri_exporter", "doctor", "--check", "cri.running_without_cgroup",
                        "--output", "json"], capture_output=True, text=True, timeout=300)
    try:
        report: dict = json.loads(r.stdout)
        return report
    except ValueError:
        return {"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr[-5000:]}

