"""The shipped image, built from the Dockerfile and run as the DaemonSet runs it, on the real runtime (issue 16).

crilab.agent_image builds the repository's Dockerfile with buildah on a base
made here by debootstrap (no registry is reachable); the image is imported
into the lab's containerd under the manifest's own image name, and
crilab.manifest_pod starts deploy/kubernetes/daemonset.yaml's pod through CRI
as a kubelet would: host paths read-only at the same places, uid 0 with every
capability dropped, no_new_privs, RuntimeDefault seccomp, read-only root,
the node's network namespace, a pid namespace of its own, the same args, the
memory limit in the pod's cgroup. Nothing of the manifest is restated here.

The lab containerd's socket and config directory stand in for the node's
/run/containerd and /etc/containerd, and an empty directory for the kubelet's
root (crilab.manifest_pod.HostPaths); the node's / is this machine's, through a
shared recursive bind of it where this machine's / is private (node_root: the
manifest mounts / and /run/containerd with HostToContainer); every other hostPath
is this machine's own.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest
import yaml

import cri_exporter
from cri_exporter.cri import api_pb2 as api
from crilab import agent_image
from crilab.manifest_pod import ManifestPod, lab_host_paths, load_daemonset, node_root, quantity
from tests.exporter_proc import REPO, parse, wait_for
from tests.prometheus_proc import RELEASES, PrometheusProcess, release, release_id

# The image and the manifest are the subject, not the runtime: the newest containerd of the lab.
pytestmark = [pytest.mark.containerd, pytest.mark.newest_runtime]

DEPLOY = REPO / "deploy" / "kubernetes"
DAEMONSET = load_daemonset(DEPLOY / "daemonset.yaml")
AGENT = DAEMONSET["spec"]["template"]["spec"]["containers"][0]
COLLECTORS = ("runtime", "containers", "stats", "imagefs", "cgroups", "doctor")
# Findings that differ between the doctor in the agent and the doctor run as root on the node,
# each said in docs/install.md ("Running the doctor in the agent").
DIFFERS_IN_THE_AGENT = {
    "network.leaked_netns": "needs CAP_SYS_PTRACE to read /proc/<pid>/ns/net; the agent has no capability",
    "kernel.log": "/dev/kmsg: the device cgroup of an unprivileged container denies it (and dmesg_restrict "
                  "wants CAP_SYSLOG)",
}


def _listen_port() -> int:
    args = dict(a.partition("=")[::2] for a in AGENT["args"][1:])
    return int(args["--listen-address"].rsplit(":", 1)[1])


PORT = _listen_port()


def _node_ip() -> str:
    """The address a pod on the host network has: the node's (what Prometheus's endpoints SD yields)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: routes nothing, sends nothing; picks the source address
        return s.getsockname()[0]


def _get(path: str, host: str = "127.0.0.1", timeout: float = 15) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://{host}:{PORT}{path}", timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _scrape():
    return parse(_get("/metrics")[1].decode())


@pytest.fixture(scope="module")
def built():
    return agent_image.build()


@contextlib.contextmanager
def run_agent(containerd, built, root: str | None = None, ready: bool = True):
    """The DaemonSet's pod, running the built image under the manifest's image name;
    `root`: the node's / (crilab.manifest_pod.node_root, made here if not given), which
    the lab containerd's directory is reached through (the manifest mounts / and
    /run/containerd with HostToContainer: their sources must be shared, as on a node);
    `ready`: once its first scrape has every collector succeeding."""
    if root is None:
        with node_root() as root:
            with run_agent(containerd, built, root, ready) as pod:
                yield pod
        return
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", PORT))
        except OSError as err:
            pytest.fail(f"port {PORT} (the manifest's --listen-address) is taken on this machine: {err}")
    ctr = [str(containerd.version.bin_dir() / "ctr"), "-a", containerd.socket_path, "-n", "k8s.io"]
    subprocess.run([*ctr, "images", "import", str(built.archive)], check=True, capture_output=True)
    image = AGENT["image"]
    subprocess.run([*ctr, "images", "rm", image], capture_output=True)
    subprocess.run([*ctr, "images", "tag", built.tag, image], check=True, capture_output=True)
    scratch = Path(tempfile.mkdtemp(prefix="crilab-ds-", dir="/tmp"))
    pod = ManifestPod(containerd, DAEMONSET, image, lab_host_paths(root, containerd, scratch))
    try:
        pod.run()
        if ready:
            wait_for(_ready, timeout=90, what="the agent's first scrape with every collector succeeding")
        yield pod
    finally:
        pod.remove()
        subprocess.run(["rm", "-rf", str(scratch)], capture_output=True)


@pytest.fixture(scope="module")
def agent(containerd, pods, built):
    with run_agent(containerd, built) as pod:
        yield pod


def _ready():
    try:
        s = _scrape()
    except OSError:
        return None
    ok = all(list(s.find("cri_scrape_collector_success", collector=c).values()) == [1.0] for c in COLLECTORS)
    return s if ok and s.find("cri_doctor_last_run_timestamp_seconds") else None


def _status(pid: int) -> dict:
    return dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)


def _mounts(pid: int) -> dict[str, list[str]]:
    """mount point -> its per-mount options, as the container sees them."""
    out = {}
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        f = line.split()
        out[f[4]] = f[5].split(",")
    return out


def test_image_is_built_from_the_dockerfile_on_the_local_base(built):
    config = json.loads(agent_image.buildah("inspect", "--type", "image", built.tag).stdout)
    oci = config["OCIv1"]["config"]
    dockerfile = (REPO / "Dockerfile").read_text()
    assert oci["User"] == re.search(r"^USER (\S+)", dockerfile, re.M).group(1)
    assert oci["Entrypoint"] == json.loads(re.search(r"^ENTRYPOINT (.+)$", dockerfile, re.M).group(1))
    assert "CRI_EXPORTER_LOG_FORMAT=json" in oci["Env"]
    # The final stage starts from the stand-in base: its one layer, then the virtualenv.
    base = json.loads(agent_image.buildah("inspect", "--type", "image", agent_image.BASE_IMAGE).stdout)
    assert config["OCIv1"]["rootfs"]["diff_ids"][:1] == base["OCIv1"]["rootfs"]["diff_ids"]
    assert built.archive.is_file() and str(built.archive).startswith(str(agent_image.CACHE))


def test_a_second_build_with_nothing_changed_builds_nothing(built):
    again = agent_image.build()
    assert (again.image_id, again.archive) == (built.image_id, built.archive)


def test_pod_runs_with_the_manifests_settings(agent):
    pid = agent.container_pid("cri-exporter")
    sc = AGENT["securityContext"]
    status = _status(pid)
    assert status["Uid"].split()[0] == str(sc["runAsUser"]) and status["Gid"].split()[0] == str(sc["runAsGroup"])
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[caps], 16) == 0, (caps, status[caps])  # drop: [ALL]
    assert status["NoNewPrivs"].strip() == "1"  # allowPrivilegeEscalation: false
    assert status["Seccomp"].strip() == "2"     # seccompProfile RuntimeDefault: a filter
    # The manifest's args, after the image's entrypoint (no command in the manifest, no shell).
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    assert [a.decode() for a in argv[-len(AGENT["args"]):]] == AGENT["args"]
    assert argv[0].endswith(b"python") or b"python3" in argv[0], argv
    assert argv[1] == b"/opt/cri-exporter/bin/cri-exporter", argv
    # Namespaces: the node's network (hostNetwork), a pid namespace of its own (no hostPID).
    spec = DAEMONSET["spec"]["template"]["spec"]
    same = lambda ns: os.readlink(f"/proc/{pid}/ns/{ns}") == os.readlink(f"/proc/self/ns/{ns}")  # noqa: E731
    assert same("net") is bool(spec["hostNetwork"])
    assert same("pid") is bool(spec["hostPID"])
    assert same("ipc") is bool(spec["hostIPC"])
    # Read-only root and read-only host paths at the manifest's places; only /tmp writable.
    mounts = _mounts(pid)
    assert "ro" in mounts["/"], mounts["/"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for m in AGENT["volumeMounts"]:
        if volumes[m["name"]].get("hostPath", {}).get("path") in agent.paths.absent:
            # Made for the start only (no kubelet or CRI-O here), then removed: the pod sees what the host sees.
            assert m["mountPath"] not in mounts, m
            continue
        assert ("ro" in mounts[m["mountPath"]]) is bool(m.get("readOnly")), (m, mounts[m["mountPath"]])
    # The memory limit is the container's cgroup limit (v1 here; memory.max on v2).
    cgroup = dict(line.split(":", 2)[1:] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines())
    limit = int(quantity(AGENT["resources"]["limits"]["memory"]))
    if "memory" in cgroup:
        got = Path(f"/sys/fs/cgroup/memory{cgroup['memory']}/memory.limit_in_bytes").read_text()
    else:
        got = Path(f"/sys/fs/cgroup{cgroup['']}/memory.max").read_text()
    assert int(got) == limit
    assert agent.cgroup_parent in (cgroup.get("memory") or cgroup[""])
    # Every process of the container is the agent's python: it never needed a shell.
    procs = Path(f"/sys/fs/cgroup/memory{cgroup['memory']}/cgroup.procs").read_text().split() \
        if "memory" in cgroup else Path(f"/sys/fs/cgroup{cgroup['']}/cgroup.procs").read_text().split()
    exes = {os.readlink(f"/proc/{p}/exe") for p in procs if os.path.exists(f"/proc/{p}")}
    assert all(re.search(r"/python3\.\d+$", e) for e in exes), exes


def _mount_types(pid: int) -> dict[str, str]:
    """mount point -> filesystem type, as the container sees them."""
    out = {}
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        f = line.split()
        out[f[4]] = f[f.index("-") + 1]
    return out


@contextlib.contextmanager
def _node_tmpfs_in_agent(pid: int, point: Path, inside: str):
    """A tmpfs the node mounts at `point` after the agent (`pid`) started, which must show at
    `inside` in the agent while the block runs, and be gone from there after the node's unmount."""
    assert inside not in _mount_types(pid)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(point)], check=True)
    try:
        wait_for(lambda: _mount_types(pid).get(inside) == "tmpfs", timeout=10,
                 what=f"the node's new tmpfs at {point} in the agent's {inside}")
        yield
    finally:
        subprocess.run(["umount", str(point)], check=True)
    wait_for(lambda: inside not in _mount_types(pid), timeout=10, what=f"the unmount to reach the agent's {inside}")


def test_mounts_under_the_kubelet_root_reach_the_running_agent(agent):
    """A mount the kubelet makes after the agent started (here a tmpfs where it mounts a new
    pod's memory emptyDir) shows in the agent's /host<root-dir>, and its unmount too: the
    manifest's HostToContainer. Without it the agent sees the empty directory beneath,
    which the ephemeral-storage walk would count as a disk emptyDir."""
    pid = agent.container_pid("cri-exporter")
    (mount,) = [m for m in AGENT["volumeMounts"] if m["name"] == "kubelet"]
    assert mount["mountPropagation"] == "HostToContainer"
    volume = agent.paths.used["/var/lib/kubelet"]
    memory = Path(volume) / "pods" / "d0c0ffee-0000-4000-8000-000000000001" / "volumes" / "kubernetes.io~empty-dir" / "mem"
    memory.mkdir(parents=True)
    inside = mount["mountPath"] + str(memory)[len(volume):]
    try:
        with _node_tmpfs_in_agent(pid, memory, inside):
            r = agent.exec_sync("cri-exporter", ["python", "-c", f"import os; print(os.stat({inside!r}).st_dev "
                                                 f"!= os.stat({os.path.dirname(inside)!r}).st_dev)"])
            assert r.stdout.strip() == b"True", r.stderr  # the agent sees a mount point on its own device
    finally:
        subprocess.run(["rm", "-rf", str(Path(volume) / "pods")], check=True)


PROPAGATED = [m["name"] for m in AGENT["volumeMounts"] if m.get("mountPropagation") == "HostToContainer"]


@pytest.mark.parametrize("name", PROPAGATED)
def test_every_host_to_container_mount_follows_the_nodes_mounts(agent, name):
    """Each mount the manifest asks HostToContainer for (the node's /, the runtimes' socket
    directories, the kubelet's root) is a slave of the node's: a mount the node makes under it
    after the agent started reaches the agent, and its unmount does too, so the agent never holds
    a node mount the node let go (tests/test_image_host_mounts.py: a block device's)."""
    pid = agent.container_pid("cri-exporter")
    (mount,) = [m for m in AGENT["volumeMounts"] if m["name"] == name]
    volumes = {v["name"]: v for v in DAEMONSET["spec"]["template"]["spec"]["volumes"]}
    host_path = volumes[name]["hostPath"]["path"]
    source = agent.paths.used[host_path]
    # Under the node's /tmp for its /: this machine's own / (node_root) stays as it was.
    probe = Path(tempfile.mkdtemp(prefix="crilab-probe-", dir=source + "/tmp" if host_path == "/" else source))
    inside = os.path.normpath(mount["mountPath"] + "/" + str(probe)[len(source):])
    try:
        with _node_tmpfs_in_agent(pid, probe, inside):
            pass
    finally:
        probe.rmdir()


def test_the_image_needs_no_shell_and_writes_nowhere(agent):
    r = agent.exec_sync("cri-exporter", ["cri-exporter", "version"])
    assert r.exit_code == 0, r.stderr
    assert cri_exporter.__version__ in r.stdout.decode()
    r = agent.exec_sync("cri-exporter", ["cri-exporter", "doctor", "--help"])
    assert r.exit_code == 0 and b"--host-root" in r.stdout, r.stderr
    r = agent.exec_sync("cri-exporter", ["python", "-c", "open('/opt/cri-exporter/x', 'w')"])
    assert r.exit_code != 0 and b"Read-only file system" in r.stderr, r.stderr
    r = agent.exec_sync("cri-exporter", ["python", "-c", "open('/host/etc/x', 'w')"])
    assert r.exit_code != 0 and b"Read-only file system" in r.stderr, r.stderr
    r = agent.exec_sync("cri-exporter", ["python", "-c", "open('/tmp/x', 'w').write('ok')"])
    assert r.exit_code == 0, r.stderr


def test_metrics_from_the_host(agent, pods):
    assert _get("/healthz")[0] == 200  # the manifest's liveness probe
    s = wait_for(_ready, timeout=30, what="every collector succeeding")
    assert s.get1("cri_up") == 1
    # The node's other pods, with their Kubernetes identity.
    for pod, containers in ((pods.web, ["app", "sidecar"]), (pods.burner, ["burn"]), (pods.flaky, ["worker"])):
        for c in containers:
            assert s.find("cri_container_info", namespace=pod.namespace, pod=pod.name, container=c), (pod.name, c)
    # The agent sees itself too, as the DaemonSet's pod in its namespace.
    assert s.find("cri_container_info", namespace=agent.namespace, pod=agent.name, container="cri-exporter")
    # Throttling of the CPU-limited pod, from the host's cgroup files under /host/sys.
    assert s.find("cri_container_cpu_cfs_throttled_periods_total", pod="burner", container="burn")
    assert sum(s.find("cri_container_cpu_cfs_throttled_periods_total", pod="burner", container="burn").values()) > 0
    # Pod network counters of a pod on the CNI bridge.
    assert s.find("cri_pod_network_receive_bytes_total", namespace="shop", pod="web")
    assert s.find("cri_pod_network_transmit_bytes_total", namespace="shop", pod="web")
    assert s.find("cri_imagefs_capacity_bytes")
    assert s.get1("cri_doctor_run_failures_total") == 0
    # Under the manifest's RuntimeDefault seccomp profile the agent confined itself (Landlock).
    from tests.test_confine import kernel_abi
    abi = kernel_abi()
    assert s.get1("cri_exporter_confinement_info", state="enforced" if abi >= 3 else "partial", abi=str(abi)) == 1


def _doctor_statuses(report: dict) -> dict[str, str]:
    return {c["id"]: c["status"] for c in report["checks"]}


def test_doctor_in_the_pod_gives_the_hosts_findings(agent, containerd):
    r = agent.exec_sync("cri-exporter", ["cri-exporter", "doctor", "--host-root", "/host", "--output", "json"],
                        timeout=180)
    inside = json.loads(r.stdout or b"{}")
    assert inside.get("checks"), r.stderr[-3000:]
    host = subprocess.run([sys.executable, "-m", "cri_exporter", "doctor", "--runtime-endpoint", containerd.endpoint,
                           "--output", "json"], capture_output=True, text=True, timeout=180, cwd=REPO)
    outside = json.loads(host.stdout or "{}")
    assert outside.get("checks"), host.stderr[-3000:]
    a, b = _doctor_statuses(inside), _doctor_statuses(outside)
    assert set(a) == set(b)
    differ = {k: (b[k], a[k]) for k in a if a[k] != b[k]}
    assert set(differ) <= set(DIFFERS_IN_THE_AGENT), {k: v for k, v in differ.items()
                                                      if k not in DIFFERS_IN_THE_AGENT}
    assert a["cri.runtime_ready"] == "pass" and a["cri.socket"] == "pass", inside
    assert inside["summary"]["host_root"] == "/host"
    # exec'd, it is no child of serve: it confines itself (RuntimeDefault seccomp allows Landlock), as on the node
    assert inside["confinement"]["state"] in ("enforced", "partial"), inside["confinement"]
    assert outside["confinement"]["state"] in ("enforced", "partial"), outside["confinement"]
    docs = (REPO / "docs" / "install.md").read_text().split("## Running the doctor in the agent")[1].split("\n## ")[0]
    for check in DIFFERS_IN_THE_AGENT:
        assert f"`{check}`" in docs, f"docs/install.md does not say that {check} differs in the agent"


def test_memory_stays_under_the_manifests_limit(agent):
    pid = agent.container_pid("cri-exporter")
    cgroup = dict(line.split(":", 2)[1:] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines())
    peak_file = Path(f"/sys/fs/cgroup/memory{cgroup['memory']}/memory.max_usage_in_bytes") if "memory" in cgroup \
        else Path(f"/sys/fs/cgroup{cgroup['']}/memory.peak")
    limit = quantity(AGENT["resources"]["limits"]["memory"])
    request = quantity(AGENT["resources"]["requests"]["memory"])
    rss = int(_status(pid)["VmRSS"].split()[0]) * 1024
    # Peak of the whole container (agent, its doctor child, the doctor runs exec'd above).
    assert int(peak_file.read_text()) < limit
    assert rss < request, f"agent RSS {rss >> 20} MiB over the request {request / (1 << 20):.0f} MiB"
    status = agent.cd.runtime_stub().ContainerStatus(
        api.ContainerStatusRequest(container_id=agent.container_ids["cri-exporter"])).status
    assert status.state == api.CONTAINER_RUNNING and status.metadata.attempt == 0  # never restarted


# ---- Prometheus, configured as the prometheus-operator configures it from the ServiceMonitor ----

def _service_monitor() -> dict:
    return next(d for d in yaml.safe_load_all((DEPLOY / "servicemonitor.yaml").read_text()) if d)


def _service() -> dict:
    return next(d for d in yaml.safe_load_all((DEPLOY / "service.yaml").read_text()) if d)


def _label(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def scrape_config(sm: dict, service: dict, pod: ManifestPod, node: str, address: str) -> dict:
    """The job the prometheus-operator generates for the ServiceMonitor's first endpoint
    (role endpoints; its relabelings, in the operator's order), with the target the
    endpoints SD would find given as a static target carrying the same __meta labels."""
    (ep,) = sm["spec"]["endpoints"]
    port = next(p for p in service["spec"]["ports"] if p["name"] == ep["port"])
    meta = {
        "__meta_kubernetes_namespace": service["metadata"]["namespace"],
        "__meta_kubernetes_service_name": service["metadata"]["name"],
        "__meta_kubernetes_endpoint_port_name": port["name"],
        "__meta_kubernetes_endpoint_address_target_kind": "Pod",
        "__meta_kubernetes_endpoint_address_target_name": pod.name,
        "__meta_kubernetes_pod_name": pod.name,
        "__meta_kubernetes_pod_container_name": AGENT["name"],
        "__meta_kubernetes_pod_node_name": node,
        "__meta_kubernetes_pod_phase": "Running",
    }
    for k, v in service["metadata"]["labels"].items():
        meta[f"__meta_kubernetes_service_label_{_label(k)}"] = v
        meta[f"__meta_kubernetes_service_labelpresent_{_label(k)}"] = "true"
    relabel = []
    for k, v in sm["spec"]["selector"]["matchLabels"].items():
        relabel.append({"action": "keep", "source_labels": [f"__meta_kubernetes_service_label_{_label(k)}",
                                                            f"__meta_kubernetes_service_labelpresent_{_label(k)}"],
                        "regex": f"({v});true"})
    relabel += [
        {"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"], "regex": ep["port"]},
        {"source_labels": ["__meta_kubernetes_endpoint_address_target_kind",
                           "__meta_kubernetes_endpoint_address_target_name"],
         "separator": ";", "regex": "Node;(.*)", "replacement": "${1}", "target_label": "node"},
        {"source_labels": ["__meta_kubernetes_endpoint_address_target_kind",
                           "__meta_kubernetes_endpoint_address_target_name"],
         "separator": ";", "regex": "Pod;(.*)", "replacement": "${1}", "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"},
        # job: the Service's name (no jobLabel in the ServiceMonitor).
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job", "replacement": "${1}"},
        {"target_label": "endpoint", "replacement": ep["port"]},
    ]
    for r in ep.get("relabelings") or []:
        known = {"sourceLabels": "source_labels", "targetLabel": "target_label", "action": "action",
                 "regex": "regex", "replacement": "replacement", "separator": "separator"}
        assert set(r) <= set(known), f"relabeling fields this translation does not know: {r}"
        relabel.append({known[k]: v for k, v in r.items()})
    return {
        "job_name": f"serviceMonitor/{sm['metadata']['namespace']}/{sm['metadata']['name']}/0",
        "honor_labels": bool(ep.get("honorLabels", False)),
        "scrape_interval": ep["interval"], "scrape_timeout": ep["scrapeTimeout"],
        "metrics_path": ep["path"], "scheme": ep["scheme"],
        "static_configs": [{"targets": [address], "labels": meta}],
        "relabel_configs": relabel,
    }


@pytest.mark.parametrize("prometheus", RELEASES, ids=release_id)
def test_prometheus_scrapes_it_as_the_servicemonitor_says(agent, prometheus):
    node = socket.gethostname()
    address = f"{_node_ip()}:{PORT}"
    job = scrape_config(_service_monitor(), _service(), agent, node, address)
    prom = PrometheusProcess([], release=release(prometheus), extra_jobs=[job])
    try:
        # The ServiceMonitor's 30 s interval: the first scrape comes within one interval.
        wait_for(lambda: prom.query("cri_up == 1"), timeout=90, interval=1, what="Prometheus's first scrape")
        targets = prom.api("targets")["activeTargets"]
        assert [(t["health"], t["lastError"]) for t in targets] == [("up", "")], targets
        (target,) = targets
        assert target["scrapeUrl"] == f"http://{address}/metrics"
        labels = prom.query("cri_up")[0]["metric"]
        assert labels["job"] == _service()["metadata"]["name"] == "cri-exporter"
        assert labels["instance"] == address
        assert labels["node"] == node and labels["pod"] == agent.name and labels["namespace"] == agent.namespace
        # The dashboards' node selector: $job from label_values(cri_up, job), then
        # $instance from label_values(cri_up{job="$job"}, instance) (dashboards/common.py).
        # (Grafana asks /api/v1/series for label_values(metric, label); it accepts POST, label/<name>/values not.)
        jobs = {s["job"] for s in prom.api("series", **{"match[]": "cri_up"})}
        assert jobs == {"cri-exporter"}
        instances = {s["instance"] for s in prom.api("series", **{"match[]": 'cri_up{job="cri-exporter"}'})}
        assert instances == {address}
        selected = prom.query('count({job="cri-exporter", instance="%s"})' % address)
        stored = prom.query('count({job="cri-exporter"})')
        assert selected and selected[0]["value"][1] == stored[0]["value"][1]
        # The series keep the agent's own namespace/pod/container labels: the target's
        # (the agent pod's, from the operator's relabelings) must not push them to exported_*.
        assert not prom.query('count({job="cri-exporter", exported_pod!=""})'), \
            "the ServiceMonitor needs honorLabels: true"
        assert prom.query('cri_container_cpu_cfs_throttled_periods_total{job="cri-exporter", instance="%s", '
                          'pod="burner"}' % address)
    finally:
        prom.stop()
