"""Where serve's policy may also grant TRUNCATE: cgroup filesystems, found
by statfs at start, so that Landlock's check on each open stops early.

Why (security/landlock/fs.c, Linux 6.2+, Landlock ABI 3+): hook_file_open
asks for the open's rights *plus* TRUNCATE (and IOCTL_DEV on a device file:
is_device(), block and character devices only) and walks from the file up
to the root until every asked right is granted by some rule (or nothing is
left above). Our ruleset handles TRUNCATE and grants it nowhere, so each
open walks every directory up to "/": measured on this project's fake tree
of 1,000 containers, about 1.9 µs more per open, +16% agent CPU a scrape.
A rule granting READ_FILE|TRUNCATE on a directory stops the walk there.

Why it is safe on a cgroup filesystem: cgroup v1 and v2 are kernfs, whose
setattr (fs/kernfs/inode.c, kernfs_iop_setattr: "this ignores size
changes") copies owner, mode and times but never the size, so truncate(2),
ftruncate and O_TRUNC change no byte of a cgroup file; at most they set its
mtime/ctime. Writing (WRITE_FILE) stays denied everywhere. IOCTL_DEV is not
granted: cgroupfs holds no device files, so the open never asks for it.

Decided by the filesystem's magic number (statfs f_type), never by a path's
name: a planted or fake host root whose sys/fs/cgroup holds plain files gets
no such grant. The grants sit as deep as directories that exist at start and
stay: each cgroup mount's root, and beneath it the kubelet's pod roots and
QoS-class directories (cgroupfs and systemd drivers); a pod root made later
is still covered by its mount's rule, only with a longer walk.

procfs is left out: it holds a few reads a pod per scrape (against about 48
cgroup files a container), its walk is short already (file, pid, /proc, /),
and its setattr differs by entry (proc_setattr, proc_notify_change,
proc_sys_setattr), more to verify than the few directories it would save.
"""
from __future__ import annotations

import ctypes
import os

CGROUP_SUPER_MAGIC = 0x27E0EB  # include/uapi/linux/magic.h: cgroup v1 (kernfs)
CGROUP2_SUPER_MAGIC = 0x63677270  # cgroup v2 (kernfs)
CGROUP_MAGICS = (CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC)

# The kubelet's pod roots and QoS-class directories, beneath a cgroup mount's
# root (cgroupfs driver, then systemd's).
POD_ROOTS = (
    "kubepods", "kubepods/burstable", "kubepods/besteffort",
    "kubepods.slice", "kubepods.slice/kubepods-burstable.slice", "kubepods.slice/kubepods-besteffort.slice",
)
# At most this many cgroup mounts are looked at (v1 has about a dozen).
MAX_MOUNTS = 32

_libc = ctypes.CDLL(None, use_errno=True)


def fs_magic(path: str) -> int | None:
    """The filesystem's f_type (statfs(2)) of `path`, None if it cannot be asked.
    f_type is the first field of struct statfs, a native long on every 64-bit
    Linux architecture (and on 32-bit ones, a 32-bit word)."""
    buf = ctypes.create_string_buffer(512)  # struct statfs is 120 bytes on x86_64 and arm64
    if _libc.statfs(os.fsencode(path), buf) != 0:
        return None
    return ctypes.c_ulong.from_buffer(buf).value & 0xFFFFFFFF


def is_cgroupfs(path: str) -> bool:
    return fs_magic(path) in CGROUP_MAGICS


def cgroup_dirs(host_root: str, cgroup_root: str = "sys/fs/cgroup") -> list[str]:
    """Local directories under the host root that are on a cgroup filesystem
    at start and stay: the mount roots (v2's /sys/fs/cgroup itself, or v1's
    and hybrid's sys/fs/cgroup/<controller> and unified), then their pod
    roots and QoS-class directories that exist. A path through a symlink is
    skipped (v1's cpu -> cpu,cpuacct: the target is listed by its own name;
    a link out of the host root: not the host's to grant)."""
    base = os.path.join(os.path.realpath(host_root), cgroup_root)
    if _is_real_dir(base) and is_cgroupfs(base):
        mounts = [base]
    else:
        try:
            names = sorted(e.name for e in os.scandir(base) if e.is_dir(follow_symlinks=False))
        except OSError:
            return []
        mounts = [m for m in (os.path.join(base, n) for n in names[:MAX_MOUNTS]) if _is_real_dir(m) and is_cgroupfs(m)]
    out = []
    for mount in mounts:
        out.append(mount)
        for rel in POD_ROOTS:
            d = os.path.join(mount, rel)
            if _is_real_dir(d) and is_cgroupfs(d):
                out.append(d)
    return out


def _is_real_dir(path: str) -> bool:
    """A directory reached through no symlink."""
    return os.path.isdir(path) and os.path.realpath(path) == os.path.abspath(path)
