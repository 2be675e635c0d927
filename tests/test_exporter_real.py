"""`cri-exporter serve` over the shared real containerd, compared with what CRI
and the cgroup files say at the same moment."""
from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time

import pytest

from cri_exporter.cri import CriClient
from tests import cgroup_truth
from tests.exporter_proc import ExporterProcess, parse, wait_for

pytestmark = pytest.mark.containerd


@pytest.fixture(scope="module")
def cri(containerd):
    client = CriClient(containerd.endpoint)
    yield client
    client.close()


@pytest.fixture(scope="module")
def samples(exporter):
    # Wait until the background stats snapshot covers the pods.
    wait_for(lambda: exporter.scrape().find("cri_pod_cpu_usage_seconds_total", pod="burner"), what="pod stats")
    return exporter.scrape()


def ident(pod, name):
    return {"namespace": pod.namespace, "pod": pod.name, "container": name}


def test_runtime_identity_and_conditions(samples, cri, containerd):
    v = cri.version()
    assert v.runtime_version.startswith(containerd.version.release())
    assert samples.get1("cri_up") == 1
    info = samples.labelsets("cri_runtime_info")
    assert info == [{"runtime_name": v.runtime_name, "runtime_version": v.runtime_version,
                     "runtime_api_version": v.runtime_api_version, "endpoint": cri.endpoint}]
    conditions = cri.status().conditions
    # 1.7 (from 1.7.14) and 2.x also report their deprecation warnings as a condition.
    extra = set() if containerd.version.name == "1.6" else {"ContainerdHasNoDeprecationWarnings"}
    assert {c.type for c in conditions} == {"RuntimeReady", "NetworkReady"} | extra
    for c in conditions:
        assert samples.get1("cri_runtime_condition", condition=c.type, reason=c.reason) == float(c.status)


def test_every_current_container_is_described_exactly(samples, cri, pods):
    listed = {c.id: c for c in cri.list_containers()}
    sandboxes = {p.id: p for p in cri.list_pod_sandboxes()}
    infos = samples.labelsets("cri_container_info")
    # the flaky pod's exited attempt 0 is not exported beside its running attempt 1
    assert len(infos) == len(listed) - 1
    for info in infos:
        c = listed[info["container_id"]]
        pod = sandboxes[c.pod_sandbox_id]
        assert info == {
            "namespace": pod.namespace, "pod": pod.name, "container": c.name, "container_id": c.id,
            "pod_id": pod.id, "pod_uid": pod.uid, "image": c.image, "image_id": c.image_id, "runtime_handler": "",
        }
        states = samples.find("cri_container_state", namespace=pod.namespace, pod=pod.name, container=c.name)
        assert {dict(k[1])["state"]: v for k, v in states.items()} == {
            s: float(s == c.state) for s in ("created", "running", "exited", "unknown")}


def test_restarted_container_is_one_series_with_its_restarts(samples, pods, cri):
    worker = ident(pods.flaky, "worker")
    running_id = pods.flaky.containers["worker"][1]
    assert samples.get1("cri_container_restarts", **worker) == 1
    assert samples.get1("cri_container_info", **worker)  # exactly one
    assert dict(next(iter(samples.find("cri_container_info", **worker)))[1])["container_id"] == running_id
    assert samples.get1("cri_container_state", state="running", **worker) == 1
    # the exited attempt 0 is described as the last termination
    first = cri.container_status(pods.flaky.containers["worker"][0])
    assert samples.get1("cri_container_last_terminated_exit_code", **worker) == first.exit_code == 1
    assert samples.get1("cri_container_last_terminated_reason", reason=first.reason, **worker) == 1
    assert samples.get1("cri_container_last_terminated_time_seconds", **worker) == pytest.approx(
        first.finished_at_ns / 1e9)
    # and the node counts every instance, the old attempt included
    listed = cri.list_containers()
    assert samples.get1("cri_containers", state="exited") == sum(c.state == "exited" for c in listed)
    assert sum(c.id in pods.flaky.containers["worker"] for c in listed) == 2


def test_exited_container(samples, pods, cri):
    job = ident(pods.batch, "job")
    status = cri.container_status(pods.batch.containers["job"][0])
    assert samples.get1("cri_container_state", state="exited", **job) == 1
    assert samples.get1("cri_container_last_terminated_exit_code", **job) == 3
    assert samples.get1("cri_container_start_time_seconds", **job) == pytest.approx(status.started_at_ns / 1e9)
    # an exited container uses no CPU: nothing is exported rather than a fake value
    assert not samples.find("cri_container_cpu_usage_seconds_total", **job)


def test_start_time_matches_container_status(samples, pods, cri):
    app = pods.web.containers["app"][0]
    assert samples.get1("cri_container_start_time_seconds", **ident(pods.web, "app")) == pytest.approx(
        cri.container_status(app).started_at_ns / 1e9)


def test_cpu_counters_are_live_cgroup_readings(exporter, pods):
    """On the scrape path CPU comes from the cgroup files, so each value lies
    between the file read just before the scrape and just after it."""
    burn = pods.burner.containers["burn"][0]
    before = cgroup_truth.cpu_usage_seconds(pods.burner.uid, burn)
    pod_before = cgroup_truth.cpu_usage_seconds(pods.burner.uid)
    s = exporter.scrape()
    after = cgroup_truth.cpu_usage_seconds(pods.burner.uid, burn)
    pod_after = cgroup_truth.cpu_usage_seconds(pods.burner.uid)
    value = s.get1("cri_container_cpu_usage_seconds_total", **ident(pods.burner, "burn"))
    assert before - 1e-6 <= value <= after + 1e-6
    pod_value = s.get1("cri_pod_cpu_usage_seconds_total", namespace=pods.burner.namespace, pod="burner")
    assert pod_before - 1e-6 <= pod_value <= pod_after + 1e-6


def test_cpu_user_system_and_memory_peak_are_live_cgroup_readings(exporter, pods):
    """cpuacct.stat (USER_HZ ticks) and memory.max_usage_in_bytes of the burner and
    its pod, read just before and just after the scrape, bracket what is exported."""
    burn = pods.burner.containers["burn"][0]
    uid, ns = pods.burner.uid, pods.burner.namespace
    targets = ((burn, "cri_container_", ident(pods.burner, "burn")), (None, "cri_pod_", {"namespace": ns, "pod": "burner"}))
    before = {p: (cgroup_truth.cpu_user_system_seconds(uid, c), cgroup_truth.memory_max_usage_bytes(uid, c))
              for c, p, _ in targets}
    s = exporter.scrape()
    after = {p: (cgroup_truth.cpu_user_system_seconds(uid, c), cgroup_truth.memory_max_usage_bytes(uid, c))
             for c, p, _ in targets}
    for _, prefix, labels in targets:
        (user_a, system_a), peak_a = before[prefix]
        (user_b, system_b), peak_b = after[prefix]
        assert user_a - 1e-9 <= s.get1(prefix + "cpu_user_seconds_total", **labels) <= user_b + 1e-9
        assert system_a - 1e-9 <= s.get1(prefix + "cpu_system_seconds_total", **labels) <= system_b + 1e-9
        assert 0 < peak_a <= s.get1(prefix + "memory_max_usage_bytes", **labels) <= peak_b
    assert before["cri_container_"][0][0] > 0  # the burner spins in user mode


def test_cpu_from_the_cri_snapshot_without_the_cgroup_collector(containerd, pods, lab_dir):
    """With cgroups disabled the same series come from the background CRI
    snapshot: never ahead of the cgroup file, and behind it by at most what the
    burner (10% quota) can use in the snapshot's age."""
    burn = pods.burner.containers["burn"][0]
    with ExporterProcess(containerd.endpoint, "--collectors", "-cgroups", "--stats-interval", "1") as exp:
        # Both from one scrape: the stats collector can run just before the first
        # refresh lands and the containers collector just after it.
        s = wait_for(lambda: (x := exp.scrape()).find("cri_container_cpu_usage_seconds_total", pod="burner")
                     and x.find("cri_stats_snapshot_age_seconds") and x, what="snapshot")
        truth = cgroup_truth.cpu_usage_seconds(pods.burner.uid, burn)
        value = s.get1("cri_container_cpu_usage_seconds_total", **ident(pods.burner, "burn"))
        age = s.get1("cri_stats_snapshot_age_seconds")
        assert 0 < value <= truth + 1e-6
        assert truth - value <= (age + 1.0) * 0.1 + 0.02
        assert not s.find("cri_container_cpu_cfs_throttled_periods_total")
        assert s.get1("cri_container_writable_layer_bytes", **ident(pods.burner, "burn")) >= 0


def test_memory_matches_cgroup(samples, pods):
    app = pods.web.containers["app"][0]
    labels = ident(pods.web, "app")
    ws = samples.get1("cri_container_memory_working_set_bytes", **labels)
    assert ws == pytest.approx(cgroup_truth.working_set_bytes(pods.web.uid, app), abs=64 * 1024)
    stat = cgroup_truth.memory_stat(pods.web.uid, app)
    assert samples.get1("cri_container_memory_rss_bytes", **labels) == pytest.approx(
        stat["total_rss"], abs=64 * 1024)
    assert samples.get1("cri_container_memory_page_faults_total", **labels) == pytest.approx(
        stat["total_pgfault"], rel=0.2)
    assert samples.get1("cri_container_memory_major_page_faults_total", **labels) == stat["total_pgmajfault"]


def test_writable_layer_and_pod_network_match_cri(exporter, cri, pods):
    s = exporter.scrape()
    snap_time = s.get1("cri_stats_snapshot_timestamp_seconds")
    stats = {x.id: x for x in cri.list_container_stats()}
    app = pods.web.containers["app"][0]
    labels = ident(pods.web, "app")
    assert s.get1("cri_container_writable_layer_bytes", **labels) == stats[app].writable_layer_bytes
    assert s.get1("cri_container_writable_layer_inodes", **labels) == stats[app].writable_layer_inodes
    pod = next(p for p in cri.list_pod_sandbox_stats() if p.id == pods.web.id)
    eth0 = next(i for i in pod.interfaces if i.name == "eth0")
    exported = s.get1("cri_pod_network_receive_bytes_total", namespace="shop", pod="web", interface="eth0")
    assert 0 < exported <= eth0.rx_bytes
    assert time.time() - snap_time < 10
    assert s.get1("cri_pod_processes", namespace="shop", pod="web") == pod.process_count == 2


def test_pod_network_counters_move_with_real_traffic(exporter, containerd, pods):
    """Ping the bridge gateway from inside the web pod; the pod's tx bytes grow by at least that."""
    before = exporter.scrape().get1("cri_pod_network_transmit_bytes_total", namespace="shop", pod="web",
                                    interface="eth0")
    app = pods.web.containers["app"][0]
    pid = _container_pid(containerd, app)
    # The pod's own busybox ping (-m), in the pod's network namespace (-n).
    subprocess.run(["nsenter", "-t", str(pid), "-m", "-n", "ping", "-c", "5", "-i", "0.2", "-s", "1000",
                    containerd.gateway], check=True, capture_output=True, timeout=20)
    wait_for(lambda: exporter.scrape().get1("cri_pod_network_transmit_bytes_total", namespace="shop", pod="web",
                                            interface="eth0") >= before + 5 * 1000, what="tx bytes to grow")


def _container_pid(containerd, container_id: str) -> int:
    uid_dir = next(p for p in cgroup_truth.cgroup_dir("pids", "").parent.iterdir() if (p / container_id).exists())
    return int((uid_dir / container_id / "cgroup.procs").read_text().split()[0])


def test_imagefs_matches_cri_and_statvfs(exporter, cri):
    # containerd 1.6.20 computes snapshot usage in the background: right after
    # start ImageFsInfo says 0, later the real figure. Compare the same moment.
    def same_moment():
        s = exporter.scrape()
        fs = cri.image_fs_info()
        labels = {"fs": "image", "mountpoint": fs[0].mountpoint}
        used = s.get1("cri_imagefs_used_bytes", **labels), s.get1("cri_imagefs_inodes_used", **labels)
        return used == (fs[0].used_bytes, fs[0].inodes_used) and (s, fs)

    samples, fs = wait_for(same_moment, what="exporter and ImageFsInfo to agree")
    assert [f.kind for f in fs] == ["image"]  # containerd 1.6 reports no container filesystem
    labels = {"fs": "image", "mountpoint": fs[0].mountpoint}
    st = os.statvfs(fs[0].mountpoint)
    assert samples.get1("cri_imagefs_capacity_bytes", **labels) == st.f_blocks * st.f_frsize
    assert samples.get1("cri_imagefs_inodes", **labels) == st.f_files
    images = cri.list_images()
    assert samples.get1("cri_images") == len(images) == 2
    assert samples.get1("cri_images_size_bytes") == sum(i.size_bytes for i in images)


def test_self_metrics(exporter):
    s = exporter.scrape()
    for name in ("runtime", "containers", "terminations", "stats", "imagefs", "container_logs"):
        assert s.get1("cri_scrape_collector_success", collector=name) == 1
        assert 0 <= s.get1("cri_scrape_collector_duration_seconds", collector=name) < 5
    assert s.get1("cri_exporter_build_info")
    assert s.find("cri_request_duration_seconds_count", method="ListContainers")
    assert s.find("process_resident_memory_bytes")


def test_promtool_check_metrics_is_clean(exporter):
    text = exporter.text()
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr


def test_gzip_when_asked(exporter):
    status, headers, body = exporter.get("/metrics", {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert parse(gzip.decompress(body).decode()).get1("cri_up") == 1
    status, headers, body = exporter.get("/metrics")
    assert "Content-Encoding" not in headers and body.startswith(b"#")


def test_landing_page_and_health(exporter):
    status, headers, body = exporter.get("/")
    assert status == 200 and b'href="/metrics"' in body
    assert exporter.get("/healthz")[0] == 200
    assert exporter.get("/nope")[0] == 404


def _net_dev(pid: int) -> dict[str, list[int]]:
    lines = open(f"/proc/{pid}/net/dev").read().splitlines()[2:]
    return {name.strip(): [int(x) for x in rest.split()] for name, rest in (line.split(":", 1) for line in lines)}


def test_pod_network_is_live_and_covers_every_interface(exporter, containerd):
    """CRI reports only eth0; the exporter reads the pod's netns, so a second
    interface shows up, and eth0's counters lie between /proc/<pid>/net/dev
    read just before and just after the scrape."""
    from crilab import run_pod

    pod = run_pod(containerd, "twonics", "net")
    cid = pod.add_container("c", ["sleep", "2147483647"])
    pid = _container_pid(containerd, cid)
    # a veth pair with both ends in the pod (this kernel has no dummy module)
    subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "link", "add", "extra0", "type", "veth", "peer", "name",
                    "extra1"], check=True)
    # Frames of an ethertype no protocol takes (0x88b5, local experimental) sent from extra1: the
    # kernel drops them on receive at extra0 (rx_dropped, net/dev's rx "drop" column).
    for link in ("extra0", "extra1"):
        subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "link", "set", link, "up"], check=True)
    subprocess.run(["nsenter", "-t", str(pid), "-n", sys.executable, "-c",
                    "import socket; s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(('extra1', 0))\n"
                    "for _ in range(3): s.send(b'\\xff' * 6 + b'\\x02' * 6 + b'\\x88\\xb5' + b'x' * 50)"], check=True)
    wait_for(lambda: _net_dev(pid)["extra0"][3] >= 3, what="extra0 to drop the frames")
    wait_for(lambda: exporter.scrape().find("cri_pod_network_receive_bytes_total", pod="twonics"), what="pod")
    before = _net_dev(pid)
    s = exporter.scrape()
    after = _net_dev(pid)
    ifaces = {d["interface"] for d in s.labelsets("cri_pod_network_receive_bytes_total") if d["pod"] == "twonics"}
    assert ifaces == {"eth0", "extra0", "extra1"}  # lo is left out, as the kubelet does
    # /proc/net/dev columns: rx bytes 0, packets 1, drop 3; tx bytes 8, packets 9, drop 11
    columns = (("cri_pod_network_receive_bytes_total", 0), ("cri_pod_network_transmit_bytes_total", 8),
               ("cri_pod_network_receive_packets_total", 1), ("cri_pod_network_transmit_packets_total", 9),
               ("cri_pod_network_receive_packets_dropped_total", 3),
               ("cri_pod_network_transmit_packets_dropped_total", 11))
    for iface in ("eth0", "extra0"):
        for name, col in columns:
            value = s.get1(name, namespace="net", pod="twonics", interface=iface)
            assert before[iface][col] <= value <= after[iface][col], (name, iface)
    assert s.get1("cri_pod_network_receive_packets_total", namespace="net", pod="twonics", interface="eth0") > 0
    assert s.get1("cri_pod_network_receive_packets_dropped_total", namespace="net", pod="twonics",
                  interface="extra0") >= 3
    assert s.get1("cri_pod_network_transmit_packets_total", namespace="net", pod="twonics", interface="extra1") >= 3


def test_doctor_runs_in_serve_mode(exporter):
    """serve runs the doctor off the scrape path; /doctor and the metrics agree."""
    import json

    status, headers, body = wait_for(lambda: (r := exporter.get("/doctor"))[0] == 200 and r, what="a doctor run")
    assert headers["Content-Type"] == "application/json"
    report = json.loads(body)
    by_id = {c["id"]: c for c in report["checks"]}
    assert by_id["cri.runtime_ready"]["status"] == "pass"
    s = exporter.scrape()
    assert s.get1("cri_scrape_collector_success", collector="doctor") == 1
    for check in report["checks"]:
        ok = s.find("cri_doctor_check_ok", check=check["id"])
        if check["status"] == "skip":
            assert not ok
        else:
            assert list(ok.values()) == [1.0 if check["status"] == "pass" else 0.0], check["id"]
        assert s.get1("cri_doctor_check_status", check=check["id"], status=check["status"]) == 1


def test_every_exported_metric_is_documented(exporter):
    """docs/metrics.md is the contract: every family the exporter serves has a row there."""
    import re
    from pathlib import Path

    from prometheus_client.parser import text_string_to_metric_families

    documented = set(re.findall(r"^\| `([a-z_]+)`", (Path(__file__).parents[1] / "docs/metrics.md").read_text(),
                                re.M))
    wait_for(lambda: exporter.get("/doctor")[0] == 200, what="a doctor run")
    served = set()
    for family in text_string_to_metric_families(exporter.text()):
        if family.name.startswith(("process_", "python_")):
            continue
        suffix = "_total" if family.type == "counter" else ""
        served.add(family.name + suffix)
    # the cgroup section documents each cri_pod_* twin through its cri_container_* row
    twin = {n for n in served if n.startswith("cri_pod_") and n.replace("cri_pod_", "cri_container_", 1) in documented}
    assert served - documented - twin == set()


def test_hostile_names_are_escaped_not_mangled(exporter, containerd):
    """containerd 1.6.20 accepts quotes, backslashes and newlines in pod and
    container names and returns them verbatim; exposition must escape them
    so the text still parses to exactly the original values."""
    from crilab import run_pod

    pod_name, container_name = 'we"ird\\pod\nname', 'c\\"x\ny'
    pod = run_pod(containerd, pod_name, "hostile")
    pod.add_container(container_name, ["sleep", "2147483647"])
    s = wait_for(lambda: (x := exporter.scrape()).find("cri_container_info", namespace="hostile") and x,
                 what="the hostile pod")
    assert s.get1("cri_container_state", namespace="hostile", pod=pod_name, container=container_name,
                  state="running") == 1
    r = subprocess.run(["promtool", "check", "metrics"], input=exporter.text(), capture_output=True, text=True)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


def test_endpoint_found_by_probing_under_the_host_root(containerd, tmp_path):
    """Without --runtime-endpoint the first of crictl's sockets that answers
    wins, looked up under the host root: a dead containerd socket is passed
    over for a live CRI-O path."""
    import socket as sk

    from cri_exporter.cri import resolve_endpoint

    (tmp_path / "run/containerd").mkdir(parents=True)
    (tmp_path / "run/crio").mkdir(parents=True)
    dead = sk.socket(sk.AF_UNIX)
    dead.bind(str(tmp_path / "run/containerd/containerd.sock"))  # exists, nobody listens
    try:
        # a hard link is the same socket inode, as a hostPath mount would show it
        # (a symlink would be resolved inside the host root, where its target is not)
        os.link(containerd.socket_path, tmp_path / "run/crio/crio.sock")
        endpoint, probed = resolve_endpoint(None, str(tmp_path))
        assert probed and endpoint == f"unix://{tmp_path}/run/crio/crio.sock"
        # an explicit endpoint is taken as is, a bare path gets its scheme
        assert resolve_endpoint("/x.sock", str(tmp_path)) == ("unix:///x.sock", False)
    finally:
        dead.close()


def test_stats_refresh_slows_down_while_cgroups_give_usage_live(containerd, pods):
    """With every running container read live from cgroups the snapshot only
    carries writable layers: it is refreshed at the idle interval. With the
    cgroup collector off it feeds CPU and memory, and refreshes every interval."""
    def refreshes_over(exp, seconds):
        before = exp.scrape().get1("cri_stats_refreshes_total")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            exp.scrape()
            time.sleep(0.25)  # the behaviour under test: a scraper every 0.25 s for `seconds`, refreshes counted
        return exp.scrape().get1("cri_stats_refreshes_total") - before

    with ExporterProcess(containerd.endpoint, "--stats-interval", "0.5", "--stats-idle-interval", "600") as exp:
        wait_for(lambda: exp.scrape().find("cri_stats_snapshot_age_seconds"), what="the first refresh")
        assert refreshes_over(exp, 3) <= 1  # at most the one already under way when the first scrape came
    with ExporterProcess(containerd.endpoint, "--collectors", "-cgroups", "--stats-interval", "0.5",
                         "--stats-idle-interval", "600") as exp:
        wait_for(lambda: exp.scrape().find("cri_stats_snapshot_age_seconds"), what="the first refresh")
        assert refreshes_over(exp, 3) >= 3
