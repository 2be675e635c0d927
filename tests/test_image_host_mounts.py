"""The DaemonSet's pod must not keep the node's mounts alive.

The manifest bind-mounts the node's / at /host recursively: every mount the node has
when the agent starts (pod volumes, CSI staging mounts, container rootfs overlays) is
copied into the agent's mount namespace, and /run/containerd too, which holds the
agent's own rootfs with its /host (mounted first), so every node mount is copied twice.
Unless the node's unmounts propagate to the copies (mountPropagation: HostToContainer on
both), a block device's filesystem stays mounted in the agent after the node unmounted
it, and the device stays busy (detach, rbd unmap, iSCSI logout fail with EBUSY) until
its mount point directory is removed (Linux 3.18+ detaches other namespaces' mounts on
rmdir). Here a loop device's ext4 stands in for such a volume, mounted on the node
before the agent starts.

The node: a directory bound onto itself as a shared mount (systemd makes a node's /
shared; this machine's is private and stays so), holding a containerd of its own
whose directory stands in for /run/containerd, so the agent's rootfs lies under the
node's /run/containerd as on a node (the shared lab containerd's does not: its
directory is reached through a copy of /, crilab.manifest_pod.node_root).

A module of its own: the agent must start after the mount, and the pod listens on the
manifest's host port, which test_image's module-scoped agent holds while it runs.
"""
from __future__ import annotations

import errno
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.exporter_proc import wait_for
from crilab.containerd import Containerd
from crilab.manifest_pod import HostPaths, ManifestPod
from tests.test_image import AGENT, DAEMONSET, built  # noqa: F401 (built: the fixture)

pytestmark = [pytest.mark.containerd, pytest.mark.newest_runtime]


def _mountinfo(pid: int) -> dict[str, tuple[str, str]]:
    """mount point -> (filesystem type, source), as the process sees them."""
    out = {}
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        f = line.split()
        sep = f.index("-")
        out[f[4]] = (f[sep + 1], f[sep + 2])
    return out


def _holders(device: str) -> dict[int, list[str]]:
    """Every process whose mount namespace has the device mounted: pid -> its mount points."""
    out = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                points = [p for p, (_, source) in _mountinfo(int(proc.name)).items() if source == device]
            except OSError:
                continue
            if points:
                out[int(proc.name)] = points
    return out


def _busy(device: str) -> bool:
    """Whether a filesystem holds the block device: a mounted superblock claims it
    exclusively, so an O_EXCL open fails with EBUSY (what mkfs, cryptsetup and a second
    mount of it meet)."""
    try:
        fd = os.open(device, os.O_RDONLY | os.O_EXCL)
    except OSError as err:
        if err.errno == errno.EBUSY:
            return True
        raise
    os.close(fd)
    return False


@pytest.fixture(scope="module")
def node(runtime_version):
    """The node's / (a shared mount) and its containerd, its directory at <node>/run/containerd."""
    root = Path(tempfile.mkdtemp(prefix="crilab-node-", dir="/tmp"))
    subprocess.run(["mount", "--bind", str(root), str(root)], check=True, capture_output=True)
    cd = None
    try:
        subprocess.run(["mount", "--make-shared", str(root)], check=True, capture_output=True)
        for d in ("proc", "sys", "tmp", "var/lib/kubelet", "etc/containerd", "etc/crio", "run/crio"):
            (root / d).mkdir(parents=True)
        cd = Containerd(str(root / "run" / "containerd"), version=runtime_version).start()
        # Its configuration only: the lab's stand-in for /etc/containerd elsewhere is its whole directory.
        (root / "etc" / "containerd" / "config.toml").write_bytes((cd.base / "config.toml").read_bytes())
        yield root, cd
    finally:
        if cd is not None:
            cd.cleanup()
        subprocess.run(["umount", "-l", str(root)], capture_output=True)
        subprocess.run(["rm", "-rf", "--one-file-system", str(root)], capture_output=True)


@pytest.fixture(scope="module")
def volume(node):
    """A loop device's ext4, mounted on the node (a block-device pod volume's stand-in):
    the device, its mount point on this machine and its path on the node."""
    root, _ = node
    scratch = Path(tempfile.mkdtemp(prefix="crilab-vol-", dir=root / "tmp"))
    image, point = scratch / "disk.img", scratch / "mnt"
    point.mkdir()
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    device = subprocess.run(["losetup", "--find", "--show", str(image)], check=True,
                            capture_output=True, text=True).stdout.strip()
    try:
        subprocess.run(["mount", device, str(point)], check=True, capture_output=True)
        yield device, point, "/" + str(point.relative_to(root))
    finally:
        subprocess.run(["umount", str(point)], capture_output=True)
        subprocess.run(["rm", "-rf", "--one-file-system", str(scratch)], capture_output=True)  # rmdir: detaches copies left
        subprocess.run(["losetup", "-d", device], capture_output=True)


@pytest.fixture(scope="module")
def agent_after_volume(node, volume, built):  # noqa: F811
    """The DaemonSet's pod on the node, started after the volume's mount. Running is
    enough: the mounts are the subject, not the scrape."""
    root, cd = node
    ctr = [str(cd.version.bin_dir() / "ctr"), "-a", cd.socket_path, "-n", "k8s.io"]
    subprocess.run([*ctr, "images", "import", str(built.archive)], check=True, capture_output=True)
    subprocess.run([*ctr, "images", "tag", built.tag, AGENT["image"]], check=True, capture_output=True)
    scratch = Path(tempfile.mkdtemp(prefix="crilab-ds-", dir="/tmp"))
    (scratch / "kubelet").mkdir()
    paths = HostPaths({"/": str(root), "/run/containerd": str(cd.base), "/etc/containerd": str(root / "etc" / "containerd"),
                       "/run/crio": str(root / "run" / "crio"), "/var/lib/kubelet": str(scratch / "kubelet")}, scratch)
    pod = ManifestPod(cd, DAEMONSET, AGENT["image"], paths)
    try:
        pod.run()
        yield pod
    finally:
        pod.remove()
        subprocess.run(["rm", "-rf", str(scratch)], capture_output=True)


def test_a_host_unmount_releases_the_device_while_the_agent_runs(volume, agent_after_volume):
    device, point, on_node = volume
    pid = agent_after_volume.container_pid("cri-exporter")
    (host,) = [m["mountPath"] for m in AGENT["volumeMounts"] if m["name"] == "host-root"]
    inside = host + on_node
    # The agent's copy of the mount made before it started: the precondition.
    assert _mountinfo(pid).get(inside) == ("ext4", device), _mountinfo(pid).get(inside)
    assert _busy(device)
    subprocess.run(["umount", str(point)], check=True)
    assert str(point) not in _mountinfo(os.getpid())
    # The directory stays (the kubelet removes it only after the unmount, a CSI driver maybe never).
    assert point.is_dir()
    try:
        wait_for(lambda: inside not in _mountinfo(pid) and not _busy(device), timeout=10,
                 what=f"the node's unmount of {point} to reach the agent's {inside} and free {device}")
    except AssertionError as err:
        raise AssertionError(f"{err}: the agent still has {inside}: {_mountinfo(pid).get(inside)}, "
                             f"{device} busy: {_busy(device)}, mounted for {_holders(device)}") from None
