"""emptyDir usage read from the filesystem's project quota instead of a walk.

Where the kubelet's LocalStorageCapacityIsolationFSQuotaMonitoring gate is on
and an emptyDir's filesystem (XFS, or ext4 with the `project` feature) is
mounted with project quota accounting, the kubelet gives each disk-backed
emptyDir a project ID of its own and reads its usage from the quota, not from a
walk (pkg/volume/util/fsquota, 1.15+). How it does it (quota_linux.go,
common/quota_linux_common_impl.go, project.go, read in their 1.2x-1.3x sources):
- one project ID per volume (AssignQuota replaces the pod UID by a fresh UUID:
  "set individual quotas on each volume"), chosen unused, recorded in
  /etc/projects and /etc/projid;
- `xfs_quota -x -c 'limit -p bhard=N bsoft=N <id>'` with N the filesystem's
  largest quota (2^63-1 bytes on XFS, 2^58-1 on ext4): monitoring only, never
  enforced; then `project -s -p <dir> <id>`, which sets the directory's project
  ID and FS_XFLAG_PROJINHERIT (FS_IOC_FSSETXATTR), so everything made under it
  is charged to the project;
- usage: `xfs_quota 'quota -p -N -n -v -b|-i <id>'` (quotactl on the project).
The gate: alpha 1.15-1.30 (default off); beta, still default off, from 1.31,
where the kubelet also assigns quotas only to pods in a user namespace
(`hostUsers: false`, which needs UserNamespacesSupport; kubernetes#126014).

Reading it here, per emptyDir directory:
- its project ID: ioctl FS_IOC_FSGETXATTR on the directory (no privilege);
  0 means no project (the gate is off, or the pod runs in the host's user
  namespace): walked;
- the project's bytes (dqb_curspace, exact bytes: the kubelet's xfs_quota
  output rounds to KiB) and inodes: quotactl_fd(Q_GETQUOTA, PRJQUOTA) on the
  directory's descriptor (Linux 5.14+; no device node needed, so it works from
  a container whose /dev lacks the host's disks), else quotactl() on the
  filesystem's block device when the agent can see it. Reading another
  project's quota needs CAP_SYS_ADMIN (fs/quota/quota.c,
  check_quotactl_permission), which the agent does not hold by default: then
  the directory is walked, as when quota accounting is off on the filesystem
  (ESRCH) or the filesystem has no quotas (ENOSYS, EINVAL).
- statfs() on the directory would show the project's usage without privilege
  (ext4_statfs_project, xfs_qm_statvfs), but only when the project's limit is
  below the filesystem's size; the kubelet's monitoring limit never is, so
  statfs shows the whole filesystem there. Not used.
- a project ID that two emptyDirs of one pod share would give each their sum:
  those are walked (the kubelet never shares one, see above).

The quota and the walk count the same: every inode made under the directory
carries its project ID (rename() and link() into it from another project fail
with EXDEV), and both count allocated blocks, hard links once. Measured equal
on ext4 and XFS, Debian 12's kernel 6.1 (tests/test_cgroup_v2_node.py).
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import stat
import struct
import threading
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)

FS_IOC_FSGETXATTR = 0x801C581F  # _IOR('X', 31, struct fsxattr)
FS_XFLAG_PROJINHERIT = 0x00000200
_FSXATTR = struct.Struct("=IIII I 8x")  # xflags, extsize, nextents, projid, cowextsize, pad
Q_GETQUOTA = 0x800007
PRJQUOTA = 2
_QCMD_GETQUOTA_PRJ = (Q_GETQUOTA << 8) | PRJQUOTA
# quotactl_fd came after the unified syscall table: the same number everywhere (5.14+).
SYS_QUOTACTL_FD = 443
SYS_QUOTACTL = {"x86_64": 179, "aarch64": 60, "ppc64le": 131, "s390x": 131, "riscv64": 60}.get(platform.machine())
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK

# How a volume was measured (cri_pod_emptydir_method_info{method}).
QUOTA = "quota"
WALK = "walk"
# Why a volume was walked (cri_pod_emptydir_method_info{reason}); "" when read from the quota.
NO_PROJECT = "no_project"  # project ID 0: the kubelet assigned none
NOT_SUPPORTED = "not_supported"  # no project IDs or no quotactl on this filesystem or kernel
NO_CAPABILITY = "no_capability"  # quotactl refused: the agent lacks CAP_SYS_ADMIN
ACCOUNTING_OFF = "accounting_off"  # project quota accounting is not on for the filesystem
SHARED_PROJECT = "shared_project"  # another emptyDir of the pod has the same project ID
ERROR = "error"  # anything else (the log says what)
DISABLED = "disabled"  # the reader was made off (tests, benchmarks)
REASONS = (NO_PROJECT, NOT_SUPPORTED, NO_CAPABILITY, ACCOUNTING_OFF, SHARED_PROJECT, ERROR, DISABLED)


class _IfDqblk(ctypes.Structure):
    """struct if_dqblk (include/uapi/linux/quota.h): dqb_curspace in bytes, limits in 1 KiB blocks."""

    _fields_ = [("dqb_bhardlimit", ctypes.c_uint64), ("dqb_bsoftlimit", ctypes.c_uint64),
                ("dqb_curspace", ctypes.c_uint64), ("dqb_ihardlimit", ctypes.c_uint64),
                ("dqb_isoftlimit", ctypes.c_uint64), ("dqb_curinodes", ctypes.c_uint64),
                ("dqb_btime", ctypes.c_uint64), ("dqb_itime", ctypes.c_uint64), ("dqb_valid", ctypes.c_uint32)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


@dataclass(frozen=True, slots=True)
class ProjectUsage:
    project: int
    bytes: int
    inodes: int
    bhardlimit: int  # the project's hard block limit in bytes (0: none)


class QuotaUnavailable(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail


def project_id(fd: int) -> tuple[int, bool]:
    """(project ID, PROJINHERIT set) of the open file `fd`; QuotaUnavailable
    when the filesystem has no project IDs (the ioctl is unknown to it)."""
    buf = bytearray(_FSXATTR.size)
    try:
        fcntl.ioctl(fd, FS_IOC_FSGETXATTR, buf)
    except OSError as err:
        if err.errno in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise QuotaUnavailable(NOT_SUPPORTED, f"FS_IOC_FSGETXATTR: {os.strerror(err.errno)}") from None
        raise QuotaUnavailable(ERROR, f"FS_IOC_FSGETXATTR: {err}") from None
    xflags, _, _, projid, _ = _FSXATTR.unpack(buf)
    return projid, bool(xflags & FS_XFLAG_PROJINHERIT)


def _reason(err: int) -> str:
    if err in (errno.EPERM, errno.EACCES):
        return NO_CAPABILITY
    if err == errno.ESRCH:
        return ACCOUNTING_OFF
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTTY):
        return NOT_SUPPORTED
    return ERROR


def block_device(dev: int, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The mount source of device `dev` from mountinfo, when it is a block
    device this process can open (quotactl() takes its path)."""
    want = f"{os.major(dev)}:{os.minor(dev)}"
    try:
        with open(mountinfo) as f:
            for line in f:
                fields = line.split()
                if len(fields) < 10 or fields[2] != want:
                    continue
                source = fields[fields.index("-") + 2]
                try:
                    st = os.stat(source)
                except OSError:
                    return None
                return source if stat.S_ISBLK(st.st_mode) and st.st_rdev == dev else None
    except (OSError, ValueError):
        return None
    return None


_HAS_QUOTACTL_FD: bool | None = None


def has_quotactl_fd() -> bool:
    """Whether the kernel has quotactl_fd: asked with a bad descriptor (EBADF
    if it has). ENOSYS from a real call also means a filesystem without quotas."""
    global _HAS_QUOTACTL_FD
    if _HAS_QUOTACTL_FD is None:
        rc = _syscall(ctypes.c_long(SYS_QUOTACTL_FD), ctypes.c_uint(0xFFFFFFFF), ctypes.c_uint(_QCMD_GETQUOTA_PRJ),
                      ctypes.c_uint(0), None)
        _HAS_QUOTACTL_FD = not (rc != 0 and ctypes.get_errno() == errno.ENOSYS)
    return _HAS_QUOTACTL_FD


def get_project_quota(fd: int, project: int) -> ProjectUsage:
    """The project's quota on the filesystem holding `fd`: quotactl_fd, else
    quotactl on its block device. QuotaUnavailable with the reason otherwise."""
    q = _IfDqblk()
    if has_quotactl_fd():
        rc = _syscall(ctypes.c_long(SYS_QUOTACTL_FD), ctypes.c_uint(fd), ctypes.c_uint(_QCMD_GETQUOTA_PRJ),
                      ctypes.c_uint(project), ctypes.byref(q))
        err = ctypes.get_errno() if rc != 0 else 0
    elif SYS_QUOTACTL is None:
        raise QuotaUnavailable(NOT_SUPPORTED, f"no quotactl_fd (Linux < 5.14) and no quotactl known on "
                                              f"{platform.machine()}")
    else:  # before Linux 5.14: quotactl() takes the block device's path
        device = block_device(os.fstat(fd).st_dev)
        if device is None:
            raise QuotaUnavailable(NOT_SUPPORTED, "no quotactl_fd (Linux < 5.14) and the filesystem's "
                                                  "block device is not visible")
        rc = _syscall(ctypes.c_long(SYS_QUOTACTL), ctypes.c_uint(_QCMD_GETQUOTA_PRJ), device.encode(),
                      ctypes.c_uint(project), ctypes.byref(q))
        err = ctypes.get_errno() if rc != 0 else 0
    if rc != 0:
        raise QuotaUnavailable(_reason(err), f"quotactl(Q_GETQUOTA, PRJQUOTA, {project}): {os.strerror(err)}")
    return ProjectUsage(project, int(q.dqb_curspace), int(q.dqb_curinodes), int(q.dqb_bhardlimit) * 1024)


@dataclass(frozen=True, slots=True)
class Measured:
    """One volume read from its project quota."""

    project: int
    bytes: int
    inodes: int


class ProjectQuotaReader:
    """Reads a pod's emptyDirs from their project quotas where it can, says
    why not elsewhere, and logs each reason once (the metric carries it on)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._denied = False  # quotactl refused once: capabilities do not come back
        self._logged: set[str] = set()
        self._lock = threading.Lock()

    def _note(self, reason: str, path: str, detail: str) -> None:
        with self._lock:
            if reason in self._logged:
                return
            self._logged.add(reason)
        if reason == NO_CAPABILITY:
            log.info("emptyDir project quotas not read, walking instead: the agent lacks CAP_SYS_ADMIN "
                     "(opt in: docs/metrics.md, Ephemeral storage)", path=path, detail=detail)
        elif reason != NO_PROJECT:
            log.info("emptyDir project quota not read, walking instead", reason=reason, path=path, detail=detail)

    def read_pod(self, volumes: list[tuple[str, str]], dev: int) -> tuple[dict[str, Measured], dict[str, str]]:
        """(volume -> quota reading, volume -> reason it must be walked) for the
        pod's emptyDir directories `volumes` ((name, local path)); a directory
        on another device than `dev` (a memory emptyDir) is in neither."""
        read: dict[str, Measured] = {}
        walk: dict[str, str] = {}
        if not self.enabled:
            return read, {name: DISABLED for name, _ in volumes}
        projects: dict[str, int] = {}
        for name, path in volumes:
            try:
                fd = os.open(path, _DIR_FLAGS)
            except OSError:
                continue  # the walk counts the error
            try:
                if os.fstat(fd).st_dev != dev:
                    continue
                projid, _ = project_id(fd)
                if projid == 0:
                    walk[name] = NO_PROJECT
                    continue
                if self._denied:
                    walk[name] = NO_CAPABILITY
                    continue
                used = get_project_quota(fd, projid)
                projects[name] = projid
                read[name] = Measured(projid, used.bytes, used.inodes)
            except QuotaUnavailable as err:
                if err.reason == NO_CAPABILITY:
                    self._denied = True
                self._note(err.reason, path, err.detail)
                walk[name] = err.reason
            except OSError as err:
                self._note(ERROR, path, str(err))
                walk[name] = ERROR
            finally:
                os.close(fd)
        counts: dict[int, int] = {}
        for projid in projects.values():
            counts[projid] = counts.get(projid, 0) + 1
        for name, projid in projects.items():
            if counts[projid] > 1:
                del read[name]
                walk[name] = SHARED_PROJECT
                self._note(SHARED_PROJECT, name, f"project {projid}")
        return read, walk
