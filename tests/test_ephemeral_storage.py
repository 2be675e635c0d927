"""The ephemeral-storage walk (issue 15.2) on real directory trees: the
kubelet's numbers (compared with os.lstat and with coreutils du), its
settings read from its config, pacing across intervals, confinement,
unreadable directories counted, memory emptyDirs left out.
The real-runtime test (a pod writing) is test_ephemeral_storage_real.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path


from cri_exporter.ephemeral_storage import (
    EMPTY_DIR, EphemeralStorageWalker, Pacer, TreeWalker, WalkCounters, kubelet_paths, threshold_amount,
)
from cri_exporter.hostfs import HostFS
from tests.ephemeral_truth import du, gnu_du, kubelet_unit
from tests.exporter_proc import REPO, wait_for

UID = "0b5e-uid-1"


def volume(host: Path, name: str, root: str = "var/lib/kubelet", uid: str = UID) -> Path:
    path = host / root / "pods" / uid / "volumes" / EMPTY_DIR / name
    path.mkdir(parents=True)
    return path


def fill(path: Path, files: int, size: int = 1000) -> None:
    data = os.urandom(size)
    for i in range(files):
        sub = path / f"d{i % 7}"
        sub.mkdir(exist_ok=True)
        (sub / f"f{i}").write_bytes(data)


def test_a_tree_is_counted_as_du_counts_it(tmp_path):
    vol = volume(tmp_path, "cache")
    fill(vol, 40)
    (vol / "sparse").touch()
    os.truncate(vol / "sparse", 1 << 30)  # 1 GiB apparent, no blocks
    os.link(vol / "d0" / "f0", vol / "hardlink")  # counted once
    os.symlink("/etc", vol / "etc")  # the link itself, never its target
    walker = TreeWalker(Pacer(0, threading.Event()), WalkCounters())
    got = walker.usage(str(vol))
    assert (got.bytes, got.inodes) == du(vol) == gnu_du(vol)
    assert got.bytes < 1 << 20


def test_pods_emptydirs_and_logs_with_the_kubelet_dirs_from_its_config(tmp_path):
    kubelet_unit(tmp_path, "/data/kubelet", "/data/logs", 'evictionHard:\n  nodefs.available: "1Gi"\n')
    cache = volume(tmp_path, "cache", root="data/kubelet")
    fill(cache, 10)
    scratch = volume(tmp_path, "scratch", root="data/kubelet")
    logs = tmp_path / "data/logs" / f"ns_web-1_{UID}" / "app"
    logs.mkdir(parents=True)
    (logs / "0.log").write_text("line\n" * 1000)
    decoy = volume(tmp_path, "decoy")  # under the default root, which this kubelet does not use
    fill(decoy, 5)

    paths = kubelet_paths(HostFS(str(tmp_path)))
    assert (paths.root_dir, paths.pod_logs_dir) == ("/data/kubelet", "/data/logs")
    # A partial evictionHard in the config file leaves the other signals unset (0): as the kubelet.
    assert paths.eviction == {"nodefs.available": "1Gi"}

    walker = EphemeralStorageWalker(HostFS(str(tmp_path)), 60, 0)
    walker.walk_once()
    assert walker.last_error is None
    pod = walker.sample().pods[UID]
    assert {name: (u.bytes, u.inodes) for name, u in pod.emptydirs.items()} == {"cache": du(cache), "scratch": du(scratch)}
    assert (pod.logs.bytes, pod.logs.inodes) == du(logs.parent)
    headroom = {h.signal: h for h in walker.sample().headroom}
    assert set(headroom) == {"nodefs.available"}
    st = os.statvfs(tmp_path / "data/kubelet")
    assert headroom["nodefs.available"].threshold == 2**30
    assert headroom["nodefs.available"].path == "/data/kubelet"
    assert abs(headroom["nodefs.available"].available - st.f_bavail * st.f_frsize) < 64 << 20  # others write meanwhile


def test_thresholds_as_the_kubelet_applies_them():
    assert threshold_amount("10%", 1000.0) == 100.0
    assert threshold_amount("500Mi", 1.0) == 500 * 2**20
    assert threshold_amount("x%", 1.0) is None


def test_a_walk_longer_than_the_interval_goes_on_over_several_intervals(tmp_path):
    """500 entries a second, a 1 s interval and a tree of 2,500 entries: the
    walk spans several intervals and ends once with the whole tree counted
    (progress, not restart). Its duration is bounded below by the pacing,
    whatever the machine's load."""
    vol = volume(tmp_path, "big")
    fill(vol, 2500, size=10)
    truth = du(vol)
    walker = EphemeralStorageWalker(HostFS(str(tmp_path)), 1.0, 500)
    walker.start()
    try:
        wait_for(lambda: walker.counters.walks >= 1, timeout=120, what="the first complete walk")
    finally:
        walker.stop()
    got = walker.sample().pods[UID].emptydirs["big"]
    assert (got.bytes, got.inodes) == truth
    files = walker.counters.last_walk_files
    assert files < truth[1] + 50  # the tree once, plus the few directories listed to find it
    assert walker.counters.last_duration >= (truth[1] - 64) / 500 > 4 * walker.interval


def test_symlinks_never_lead_out_of_the_host_root(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    fill(outside, 20)
    host = tmp_path / "host"
    # The pods directory itself a symlink to an absolute path: resolved inside the root, where nothing is.
    (host / "var/lib/kubelet").mkdir(parents=True)
    (host / "var/lib/kubelet/pods").symlink_to(outside)
    # A volume that is a symlink: never followed.
    logs = host / "var/log/pods"
    logs.mkdir(parents=True)
    (logs / f"ns_p_{UID}").symlink_to(outside)
    walker = EphemeralStorageWalker(HostFS(str(host)), 60, 0)
    walker.walk_once()
    assert walker.sample().pods == {}
    assert walker.counters.files <= 2


def test_a_memory_emptydir_is_left_out(tmp_path):
    """medium: Memory is a tmpfs the kubelet mounts on the volume's directory:
    it counts as memory, and the walk tells it by its other device."""
    disk = volume(tmp_path, "disk")
    fill(disk, 3)
    mem = volume(tmp_path, "mem")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mem)], check=True)
    try:
        (mem / "blob").write_bytes(os.urandom(1 << 20))
        walker = EphemeralStorageWalker(HostFS(str(tmp_path)), 60, 0)
        walker.walk_once()
        pod = walker.sample().pods[UID]
    finally:
        subprocess.run(["umount", str(mem)], check=True)
    assert set(pod.emptydirs) == {"disk"}


_WALK_SCRIPT = """
import json, sys
from cri_exporter.ephemeral_storage import EphemeralStorageWalker
from cri_exporter.hostfs import HostFS
w = EphemeralStorageWalker(HostFS(sys.argv[1]), 60, 0)
w.walk_once()
pod = w.sample().pods[sys.argv[2]]
print(json.dumps({"errors": w.counters.errors, "last_error": w.last_error,
                  "cache": [pod.emptydirs["cache"].bytes, pod.emptydirs["cache"].inodes]}))
"""


def test_unreadable_directories_are_counted_not_raised(tmp_path):
    """Run as root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (the
    DaemonSet's least privilege), so mode 000 directories stop the walk there."""
    vol = volume(tmp_path, "cache")
    fill(vol, 14)
    locked = [vol / "d1", vol / "d2"]
    for d in locked:
        d.chmod(0)
    try:
        out = subprocess.run(
            ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
             "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-c", _WALK_SCRIPT,
             str(tmp_path), UID],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    finally:
        for d in locked:
            d.chmod(0o755)
    got = json.loads(out.stdout)
    assert got["errors"]["permission"] == 2
    assert got["last_error"] is None
    # The locked directories themselves count (their lstat needs no permission), not what is in them.
    b, i = du(vol)
    assert got["cache"][1] == i - 2 * 2  # two files in each locked directory
    assert got["cache"][0] < b
