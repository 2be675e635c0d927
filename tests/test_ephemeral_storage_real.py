"""Ephemeral storage (issue 15.2) of a pod of the lab's real containerd
(every version of the matrix) writing into an emptyDir and to its log.

The lab runs no kubelet, so the test lays out under a host root of its own
what the kubelet would: a kubelet.service with --root-dir and a config file
naming podLogsDirectory, the pod's emptyDir directories under
<root-dir>/pods/<uid>/volumes/kubernetes.io~empty-dir/ bind-mounted into the
container (as the kubelet mounts them), a tmpfs on the memory one, and the
pod's log directory <podLogsDirectory>/<namespace>_<pod>_<uid>/ given to
containerd as the sandbox's log_directory, where containerd itself writes
the container's log. The exporter runs with that host root.
"""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from crilab import run_pod
from cri_exporter.cri import CriClient
from cri_exporter.ephemeral_storage import EMPTY_DIR, EphemeralStorageWalker, KubeletPaths, kubelet_paths
from cri_exporter.hostfs import HostFS
from tests.ephemeral_truth import du, kubelet_unit
from tests.exporter_proc import ExporterProcess, wait_for

pytestmark = pytest.mark.containerd

ROOT_DIR = "/data/kubelet"
LOGS_DIR = "/data/pod-logs"
INTERVAL = 1.0
WRITER = ("dd if=/dev/urandom of=/cache/blob bs=1k count=300 2>/dev/null; mkdir -p /cache/d; "
          "for i in $(seq 40); do echo $i > /cache/d/f$i; done; "
          "dd if=/dev/zero of=/mem/blob bs=1k count=512 2>/dev/null; "
          "for i in $(seq 300); do echo log line $i; done; touch /cache/done; exec sleep 3600")


@pytest.fixture
def writer_pod(containerd, tmp_path):
    host = tmp_path / "host"
    kubelet_unit(host, ROOT_DIR, LOGS_DIR)
    pod = run_pod(containerd, "ephem-writer", namespace="ephem", log_root=host / LOGS_DIR.lstrip("/"))
    volumes = host / ROOT_DIR.lstrip("/") / "pods" / pod.uid / "volumes" / EMPTY_DIR
    cache, mem = volumes / "cache", volumes / "mem"
    cache.mkdir(parents=True)
    mem.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mem)], check=True)
    try:
        pod.add_container("writer", ["sh", "-c", WRITER], mounts={"/cache": str(cache), "/mem": str(mem)})
        yield host, pod, cache, mem
    finally:
        pod.remove()
        subprocess.run(["umount", str(mem)], check=True)


def test_a_pod_writing_shows_its_emptydir_and_log_usage_within_an_interval(containerd, writer_pod):
    host, pod, cache, mem = writer_pod
    log_dir = host / LOGS_DIR.lstrip("/") / f"ephem_ephem-writer_{pod.uid}"
    log_file = log_dir / "writer" / "0.log"
    wait_for(lambda: (cache / "done").exists() and log_file.exists() and "log line 300" in log_file.read_text(),
             timeout=60, what="the writer to finish its emptyDir data and its log")
    written_at = time.time()
    cache_truth, log_truth = du(cache), du(log_dir)
    assert cache_truth[0] > 300 * 1024 and cache_truth[1] > 40
    with ExporterProcess(containerd.endpoint, "--host-root", str(host), "--collectors", "ephemeral_storage,stats",
                         "--stats-interval", "1", "--ephemeral-storage-interval", str(INTERVAL)) as exp:
        def served():
            s = exp.scrape()
            at = s.find("cri_pod_ephemeral_storage_measured_timestamp_seconds", namespace="ephem", pod="ephem-writer")
            if not at or next(iter(at.values())) < written_at:
                return None  # walked before the writer was done
            # The writable layer comes from the stats snapshot, refreshed apart from the walk.
            if not s.find("cri_pod_ephemeral_storage_bytes", namespace="ephem", pod="ephem-writer",
                          source="writable_layer"):
                return None
            return s
        try:
            s = wait_for(served, timeout=60, what="a walk of the pod after it wrote")
        except AssertionError:
            print("\n".join(l for l in exp.text().splitlines() if "ephemeral" in l or "eviction" in l or "scrape_collector" in l))
            print(exp.log()[-3000:])
            raise
        # The writable layer as the runtime reports it, summed over the pod's containers. containerd
        # sizes a snapshot in a periodic sync, so a new container's layer can read 0 in the agent's
        # snapshot and its real size in a later call: held to the runtime's answer once both agree.
        client = CriClient(containerd.endpoint, timeout=10)
        try:
            def layer_agrees():
                layer = {st.id: st for st in client.list_container_stats()}[pod.containers["writer"][-1]]
                got = exp.scrape().find("cri_pod_ephemeral_storage_bytes", namespace="ephem", pod="ephem-writer",
                                        source="writable_layer")
                if layer.writable_layer_bytes is not None and list(got.values()) == [float(layer.writable_layer_bytes)]:
                    return layer
                print(f"writable layer: served {list(got.values())}, runtime {layer.writable_layer_bytes}")
                return None
            wait_for(layer_agrees, timeout=30, interval=1.0, what="the served writable layer to equal the runtime's")
        finally:
            client.close()
    labels = {"namespace": "ephem", "pod": "ephem-writer"}
    assert s.get1("cri_pod_ephemeral_storage_bytes", source="emptydir", **labels) == cache_truth[0]
    assert s.get1("cri_pod_ephemeral_storage_inodes", source="emptydir", **labels) == cache_truth[1]
    assert s.get1("cri_pod_emptydir_bytes", volume="cache", **labels) == cache_truth[0]
    assert s.get1("cri_pod_emptydir_inodes", volume="cache", **labels) == cache_truth[1]
    # The lab's kubelet-less pods get no project ID: walked, and the metric says why.
    assert s.get1("cri_pod_emptydir_method_info", volume="cache", method="walk", reason="no_project", **labels) == 1
    assert len(s.find("cri_pod_emptydir_method_info", volume="cache", **labels)) == 1
    # The memory emptyDir (a tmpfs on its directory) is memory, not ephemeral storage.
    assert not s.find("cri_pod_emptydir_bytes", volume="mem")
    assert s.get1("cri_pod_ephemeral_storage_bytes", source="logs", **labels) == log_truth[0]
    assert s.get1("cri_pod_ephemeral_storage_inodes", source="logs", **labels) == log_truth[1]
    assert s.get1("cri_ephemeral_storage_walk_errors_total", reason="permission") == 0
    # nodefs headroom on the kubelet's --root-dir, threshold the kubelet default 10% / 5%.
    st = os.statvfs(host / ROOT_DIR.lstrip("/"))
    assert s.get1("cri_eviction_threshold_bytes", signal="nodefs.available", path=ROOT_DIR) == \
        pytest.approx(0.10 * st.f_blocks * st.f_frsize, rel=1e-12)
    assert s.get1("cri_eviction_threshold_inodes", signal="nodefs.inodesFree", path=ROOT_DIR) == \
        pytest.approx(0.05 * st.f_files, rel=1e-12)


def test_imagefs_headroom_on_the_runtimes_image_filesystem(containerd):
    """The imagefs signals apply to the filesystem CRI ImageFsInfo names, as the
    kubelet's CRI stats provider reads it."""
    client = CriClient(containerd.endpoint, timeout=10)
    try:
        mounts = [f.mountpoint for f in client.image_fs_info() if f.kind == "image"]
        defaults = kubelet_paths(HostFS("/"))
        walker = EphemeralStorageWalker(HostFS("/"), 60, 0, lambda: mounts,
                                        paths=lambda _: KubeletPaths("/nonexistent-kubelet-root", "/nonexistent-logs",
                                                                     defaults.eviction, defaults.eviction_where))
        walker.walk_once()
    finally:
        client.close()
    got = {h.signal: h for h in walker.sample().headroom}
    assert set(got) == {"imagefs.available", "imagefs.inodesFree"}
    st = os.statvfs(mounts[0])
    assert got["imagefs.available"].path == mounts[0]
    assert got["imagefs.available"].threshold == pytest.approx(0.15 * st.f_blocks * st.f_frsize, rel=1e-12)
    assert got["imagefs.inodesFree"].threshold == pytest.approx(0.05 * st.f_files, rel=1e-12)
