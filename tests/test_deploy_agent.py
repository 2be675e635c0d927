"""The agent run as the DaemonSet runs it, against the real lab containerd.

A copy of the node is laid out under a temp dir exactly as the DaemonSet mounts
it under /host: every hostPath volume of deploy/kubernetes/daemonset.yaml is
bind-mounted read-only at <dir> + (its mountPath less the --host-root of the
manifest's args), inside a private mount namespace (unshare -m) so nothing
leaks to the machine. The lab's pieces stand in for the node's: its socket
directory for /run/containerd, its config dir for /etc/containerd, its root
under the same path (the host root's share: the image filesystem). Then
`cri-exporter serve` gets the manifest's args (but --host-root and the listen
address) with the manifest's privileges (uid 0, every capability dropped,
no_new_privs), and must read runtime, cgroup, image filesystem and pod network
metrics of the lab's pods; `cri-exporter doctor --host-root <dir>` must run too.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.exporter_proc import REPO, ExporterProcess, wait_for

pytestmark = pytest.mark.containerd

MANIFEST = REPO / "deploy" / "kubernetes" / "daemonset.yaml"


def _daemonset() -> tuple[dict, dict]:
    ds = next(d for d in yaml.safe_load_all(MANIFEST.read_text()) if d and d["kind"] == "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    return pod, next(c for c in pod["containers"] if c["name"] == "cri-exporter")


def _args(container: dict) -> list[tuple[str, str]]:
    assert container["args"][0] == "serve"
    return [tuple(a.partition("=")[::2]) for a in container["args"][1:]]


def _setpriv(container: dict) -> list[str]:
    """setpriv reproducing the container's securityContext (only what it uses)."""
    sc = container["securityContext"]
    assert sc["runAsUser"] == 0 and sc["capabilities"] == {"drop": ["ALL"]}, "update this test's privilege model"
    cmd = ["setpriv", "--reuid=0", "--regid=0", "--clear-groups", "--bounding-set=-all", "--inh-caps=-all"]
    if sc.get("allowPrivilegeEscalation") is False:
        cmd.append("--no-new-privs")
    return cmd


class HostCopy:
    """The mount plan: [(source on this machine, target under the copy)]."""

    def __init__(self, containerd, root: Path, scratch: Path):
        pod, agent = _daemonset()
        self.host_root = dict(_args(agent))["--host-root"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        self.root = root
        self.mounts: list[tuple[str, Path]] = []
        # Where this machine keeps what the node keeps at each host path.
        stand_ins = {
            "/run/containerd": str(containerd.base),   # holds containerd.sock, containerd's default name
            "/etc/containerd": str(containerd.base),   # holds config.toml
        }
        host_paths = []
        for m in agent["volumeMounts"]:
            hp = volumes[m["name"]].get("hostPath")
            if not hp:
                continue
            assert m.get("readOnly") is True, m
            host_paths.append(hp["path"])
            rel = os.path.relpath(m["mountPath"], self.host_root)
            assert not rel.startswith(".."), f"{m['mountPath']} is not under --host-root {self.host_root}"
            if rel == ".":
                # The node's root: here, only the part of it the lab's containerd
                # keeps its root and state in (ImageFsInfo's mountpoint is there).
                self.mounts.insert(0, (str(containerd.base), root / str(containerd.base).lstrip("/")))
                continue
            source = stand_ins.get(hp["path"], hp["path"])
            if not os.path.exists(source):
                # DirectoryOrCreate on a node without it: an empty directory.
                source = str(scratch / rel)
                os.makedirs(source, exist_ok=True)
            self.mounts.append((source, root / rel))
        self.host_paths = host_paths

    def script(self) -> str:
        lines = ["set -e"]
        for source, target in self.mounts:
            lines += [f"mkdir -p {shlex.quote(str(target))}",
                      f"mount --rbind {shlex.quote(source)} {shlex.quote(str(target))}",
                      f"mount -o remount,bind,ro {shlex.quote(str(target))}"]
        lines.append('exec "$@"')
        return "\n".join(lines)

    def wrap(self, container: dict) -> list[str]:
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", self.script(), "sh", *_setpriv(container)]


@pytest.fixture(scope="module")
def host_copy(lab):
    containerd, _ = lab
    with tempfile.TemporaryDirectory(prefix="cri-host-") as d:
        root, scratch = Path(d) / "host", Path(d) / "absent"
        root.mkdir()
        yield HostCopy(containerd, root, scratch)


def _serve(host_copy: HostCopy, *extra: str) -> ExporterProcess:
    _, agent = _daemonset()
    args = []
    for flag, value in _args(agent):
        if flag == "--listen-address":
            continue  # the test's own port; the manifest's is checked in test_deploy.py
        if flag == "--host-root":
            value = str(host_copy.root)
        args.append(f"{flag}={value}" if value else flag)
    # No --runtime-endpoint (the manifest has none): the agent must find the
    # socket by probing under the host root, where the manifest mounts it.
    return ExporterProcess(None, *args, *extra, wrap=host_copy.wrap(agent))


def test_manifest_mounts_what_the_agent_reads():
    _, agent = _daemonset()
    assert dict(_args(agent))["--host-root"] == "/host"


def test_agent_reads_every_source_through_the_manifests_mounts(lab, host_copy):
    containerd, pods = lab
    with _serve(host_copy) as exp:
        def ready():
            s = exp.scrape()
            stats = s.find("cri_scrape_collector_success", collector="stats")
            return s if stats and all(v == 1 for v in stats.values()) else None
        s = wait_for(ready, timeout=30, what="the first CRI stats snapshot")
        log = exp.log()
        assert s.get1("cri_up") == 1, log
        for collector in ("runtime", "containers", "terminations", "stats", "imagefs", "cgroups", "container_logs", "doctor"):
            assert s.get1("cri_scrape_collector_success", collector=collector) == 1, (collector, log[-3000:])
        # Found by probing containerd's default socket under the host root.
        sock = f"unix://{host_copy.root}/run/containerd/containerd.sock"
        assert f'"endpoint": "{sock}"' in log and '"found_by_probing": true' in log, log[:2000]
        # cgroup files under <root>/sys/fs/cgroup: the throttled pod's counters.
        assert s.find("cri_container_cpu_cfs_throttled_periods_total", pod="burner", container="burn")
        assert s.find("cri_container_spec_cpu_quota_seconds", pod="burner", container="burn")
        # statvfs of containerd's image filesystem under the host root.
        assert s.find("cri_imagefs_capacity_bytes") and s.find("cri_imagefs_available_bytes")
        assert s.find("cri_pod_network_receive_bytes_total", namespace="shop", pod="web")
        # The doctor's serve-mode run: a child process with the same privileges and mounts.
        s = wait_for(lambda: (lambda s: s if s.find("cri_doctor_last_run_timestamp_seconds") else None)(exp.scrape()),
                     timeout=30, what="the doctor's first run in its child process")
        assert s.get1("cri_doctor_run_failures_total") == 0, exp.log()[-3000:]
        assert list(s.find("cri_doctor_check_ok", check="cri.runtime_ready").values()) == [1.0]


def test_pod_network_is_read_from_the_hosts_proc(lab, host_copy):
    """Without CRI stats, pod network counters can only come from
    <root>/proc/<sandbox pid>/net/dev: the manifest's /proc mount."""
    with _serve(host_copy, "--collectors=-stats") as exp:
        s = wait_for(lambda: (lambda s: s if s.find("cri_pod_network_receive_bytes_total", pod="web") else None)(
            exp.scrape()), timeout=15, what="live pod network counters")
        assert s.find("cri_pod_network_transmit_bytes_total", namespace="shop", pod="web", interface="eth0")
        assert s.get1("cri_scrape_collector_success", collector="cgroups") == 1


def test_doctor_runs_in_the_agents_view(lab, host_copy):
    _, agent = _daemonset()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("CONTAINER_RUNTIME_ENDPOINT", None)
    r = subprocess.run([*host_copy.wrap(agent), sys.executable, "-m", "cri_exporter", "doctor",
                        "--host-root", str(host_copy.root), "--output", "json"],
                       capture_output=True, text=True, env=env, timeout=120, cwd="/")
    report = json.loads(r.stdout or "{}")
    assert report.get("checks"), r.stderr[-3000:]
    status = {c["id"]: c["status"] for c in report["checks"]}
    # The runtime answered through the mounted socket, and its config was read.
    assert status.get("cri.socket") == "pass", report
    assert status.get("cri.runtime_ready") == "pass", report
    assert any(k.startswith("containerd.") and v != "skip" for k, v in status.items()), status


def test_fds_and_tcp_states_with_the_manifests_privileges(lab, host_copy):
    """The container_fds collector as the DaemonSet runs it (root, no
    capability, --host-root=/host): /proc/<pid>/fd of root's container
    processes is listed (uid 0 owns it), so fds and the fd limit ratio are
    served; the fd links need ptrace access to a process holding capabilities
    the agent lacks, so sockets are absent, never a wrong 0; the tcp files
    are world-readable, so TCP states are served."""
    with _serve(host_copy, "--fd-sample-interval=1") as exp:
        def served():
            s = exp.scrape()
            return s if s.find("cri_container_file_descriptors", namespace="shop", pod="web") and \
                s.find("cri_pod_tcp_connections", namespace="shop", pod="web") else None
        s = wait_for(served, timeout=30, what="fds and TCP states under the manifest's privileges")
        assert s.get1("cri_scrape_collector_success", collector="container_fds") == 1
        assert all(v >= 3 for v in s.find("cri_container_file_descriptors", namespace="shop", pod="web").values())
        assert s.find("cri_container_file_descriptors_limit_ratio", namespace="shop", pod="web")
        assert not s.find("cri_container_sockets")
        assert len(s.find("cri_pod_tcp_connections", namespace="shop", pod="web")) == 11
