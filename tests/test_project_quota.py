"""emptyDirs read from project quotas (cri_exporter/project_quota.py), on this
host's own filesystems: what the agent does where the kubelet assigned no
project, or the filesystem keeps no project quota.

This host's kernel can mount neither ext4 nor XFS with project quotas (no
CONFIG_QFMT_V2, no CONFIG_XFS_QUOTA: checked by the first test, which fails
if that changes so the quota tests below move here). The quota path itself
runs in the Debian 12 guest (crilab/vm_quota.py, judged in
tests/test_cgroup_v2_node.py): ext4 with prjquota on a loop device, project IDs
set as the kubelet sets them, read with and without CAP_SYS_ADMIN.
"""
from __future__ import annotations

import gzip
import os
import threading
from pathlib import Path

import pytest

from cri_exporter import project_quota as pq
from cri_exporter.ephemeral_storage import EMPTY_DIR, EphemeralStorageWalker, KubeletPaths, Pacer, TreeWalker, \
    WalkCounters
from cri_exporter.hostfs import HostFS
from tests.ephemeral_truth import du

UID = "0b5e-uid-quota"


def _kernel_config() -> dict[str, str]:
    try:
        text = gzip.open("/proc/config.gz", "rt").read()
    except OSError:
        pytest.fail("no /proc/config.gz: cannot tell whether this kernel has project quotas")
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def test_this_hosts_kernel_cannot_mount_project_quotas_so_the_guest_tests_them():
    config = _kernel_config()
    assert config.get("CONFIG_BLK_DEV_LOOP") in ("y", "m"), "no loop devices in this lab's kernel"
    assert config.get("CONFIG_QFMT_V2") not in ("y", "m") and config.get("CONFIG_XFS_QUOTA") != "y", (
        "this kernel has project quotas now: test the quota path here too (see crilab/vm_quota.py)")


def _fd(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY)


def test_a_directory_of_no_project_has_id_0_without_privilege(tmp_path):
    fd = _fd(str(tmp_path))
    try:
        assert pq.project_id(fd) == (0, False)
    finally:
        os.close(fd)


@pytest.mark.parametrize("path", ["/tmp", "/dev/shm", "/proc"])
def test_a_filesystem_without_project_quotas_gives_a_reason_never_a_traceback(path):
    fd = _fd(path)
    try:
        with pytest.raises(pq.QuotaUnavailable) as err:
            pq.get_project_quota(fd, 1048577)
        assert err.value.reason in (pq.ACCOUNTING_OFF, pq.NOT_SUPPORTED), err.value.detail
    finally:
        os.close(fd)


def test_the_kernel_has_quotactl_fd():
    """5.14+: the agent needs no device node for the quota (older kernels: quotactl on the device)."""
    assert pq.has_quotactl_fd()


def test_a_volume_the_kubelet_gave_no_project_is_walked_and_says_why(tmp_path):
    vol = tmp_path / "var/lib/kubelet/pods" / UID / "volumes" / EMPTY_DIR / "cache"
    vol.mkdir(parents=True)
    for i in range(20):
        (vol / f"f{i}").write_bytes(os.urandom(3000))
    paths = KubeletPaths("/var/lib/kubelet", "/var/log/pods", {}, "")
    walker = EphemeralStorageWalker(HostFS(str(tmp_path)), 60, 0, paths=lambda _: paths)
    walker.walk_once()
    pod = walker.sample().pods[UID]
    assert pod.emptydir_method == {"cache": (pq.WALK, pq.NO_PROJECT)}
    assert (pod.emptydirs["cache"].bytes, pod.emptydirs["cache"].inodes) == du(vol)


def test_reading_quotas_can_be_turned_off(tmp_path):
    vol = tmp_path / "var/lib/kubelet/pods" / UID / "volumes" / EMPTY_DIR / "cache"
    vol.mkdir(parents=True)
    paths = KubeletPaths("/var/lib/kubelet", "/var/log/pods", {}, "")
    walker = EphemeralStorageWalker(HostFS(str(tmp_path)), 60, 0, paths=lambda _: paths,
                                    quotas=pq.ProjectQuotaReader(enabled=False))
    walker.walk_once()
    assert walker.sample().pods[UID].emptydir_method == {"cache": (pq.WALK, pq.DISABLED)}
    plain = TreeWalker(Pacer(0, threading.Event()), WalkCounters()).usage(str(vol))
    assert walker.sample().pods[UID].emptydirs["cache"] == plain


def test_the_block_device_of_a_mount_is_found_only_when_visible(tmp_path):
    dev = os.stat("/").st_dev
    info = tmp_path / "mountinfo"
    info.write_text(f"22 1 {os.major(dev)}:{os.minor(dev)} / / rw - ext4 /dev/no-such-disk rw\n")
    assert pq.block_device(dev, str(info)) is None
    assert pq.block_device(dev, str(Path(tmp_path) / "missing")) is None
