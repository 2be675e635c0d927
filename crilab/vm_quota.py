"""In the guest (crilab/vm_guest.py): emptyDirs under project quotas, made the
way the kubelet makes them, measured by the agent's walker with and without
CAP_SYS_ADMIN, against the kernel's own numbers.

The lab's host kernel has no quota format (CONFIG_QFMT_V2) and no XFS quota,
so neither ext4 nor XFS project quotas can be mounted there; Debian 12's kernel
in the guest has both. The guest image has mkfs.ext4 but no xfsprogs or
quota tools, so this is ext4 only, and the kernel's numbers come from
quotactl() on the loop device (not quotactl_fd, which the agent uses) and, for a
project with a small limit, from statfs() of its directory.

What the kubelet does (pkg/volume/util/fsquota, see cri_exporter/project_quota.py):
one project ID per emptyDir, PROJINHERIT on its directory, and a block limit of
the filesystem's largest quota (2^58-1 bytes on ext4) so it only monitors.
"""
from __future__ import annotations

import ctypes
import fcntl
import json
import os
import struct
import subprocess
import sys
import traceback
from pathlib import Path

FS_IOC_FSGETXATTR = 0x801C581F
FS_IOC_FSSETXATTR = 0x401C5820
FS_XFLAG_PROJINHERIT = 0x200
_FSXATTR = struct.Struct("=IIIII8x")
Q_GETQUOTA, Q_SETQUOTA, PRJQUOTA = 0x800007, 0x800008, 2
QIF_BLIMITS = 1
SYS_QUOTACTL = 179  # x86_64: the guest
EXT4_MAX_QUOTA = (1 << 58) - 1  # the kubelet's maxQuota for ext4fs, bytes (its (1<<63-1) & (1<<58-1))
KUBELET_FIRST_ID = 1048577  # where the kubelet starts looking for a free project ID (project.go)
ROOT_DIR = "/var/lib/kubelet"
POD = "7d0c2a4e-0000-4000-8000-00000000a001"  # projects of their own, as the kubelet makes them
SHARED_POD = "7d0c2a4e-0000-4000-8000-00000000a002"  # two volumes in one project: never the kubelet's doing


class _IfDqblk(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("bhard", "bsoft", "curspace", "ihard", "isoft", "curinodes",
                                               "btime", "itime")] + [("valid", ctypes.c_uint32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def quotactl(cmd: int, device: str, project: int, q: _IfDqblk) -> None:
    rc = _libc.syscall(ctypes.c_long(SYS_QUOTACTL), ctypes.c_uint((cmd << 8) | PRJQUOTA), device.encode(),
                       ctypes.c_uint(project), ctypes.byref(q))
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"quotactl({cmd:#x}, {device}, {project}): {os.strerror(err)}")


def kernel_quota(device: str, project: int) -> dict:
    q = _IfDqblk()
    quotactl(Q_GETQUOTA, device, project, q)
    return {"bytes": q.curspace, "inodes": q.curinodes, "bhard_kib": q.bhard}


def assign_project(path: Path, project: int, device: str, limit_bytes: int) -> None:
    """What the kubelet's xfs_quota `limit -p bhard=N bsoft=N` and `project -s -p` do."""
    q = _IfDqblk(bhard=limit_bytes // 1024, bsoft=limit_bytes // 1024, valid=QIF_BLIMITS)
    quotactl(Q_SETQUOTA, device, project, q)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        buf = bytearray(_FSXATTR.size)
        fcntl.ioctl(fd, FS_IOC_FSGETXATTR, buf)
        xflags, extsize, nextents, _, cow = _FSXATTR.unpack(buf)
        fcntl.ioctl(fd, FS_IOC_FSSETXATTR, _FSXATTR.pack(xflags | FS_XFLAG_PROJINHERIT, extsize, nextents, project,
                                                         cow))
    finally:
        os.close(fd)


def write_files(top: Path, files: int, size: int) -> None:
    (top / "sub/deeper").mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (top / ("sub" if i % 2 else "sub/deeper") / f"f{i}").write_bytes(os.urandom(size))
    with open(top / "sparse", "wb") as f:  # allocated blocks, not apparent size
        f.seek(8 << 20)
        f.write(b"x")
    os.link(top / "sub/f1", top / "hardlink")  # one inode, counted once by both
    os.symlink("/etc/passwd", top / "link")


def run_cmd(cmd: list[str]) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()}")
    return r.stdout.strip()


def measure(host_root: str) -> dict:
    """The agent's walker over host_root, as `serve` runs it; in this process's capabilities."""
    from cri_exporter.ephemeral_storage import EphemeralStorageWalker, KubeletPaths, TreeWalker
    from cri_exporter.hostfs import HostFS

    paths = KubeletPaths(ROOT_DIR, "/var/log/pods", {}, "")
    walker = EphemeralStorageWalker(HostFS(host_root), 60, 0, paths=lambda _: paths)
    walker.walk_once()
    plain = TreeWalker(walker.pacer, walker.counters)
    out: dict = {"last_error": walker.last_error, "cap_eff": _cap_eff(), "pods": {}}
    for uid, usage in walker.sample().pods.items():
        vols = {}
        for name, used in usage.emptydirs.items():
            local = f"{host_root}{ROOT_DIR}/pods/{uid}/volumes/kubernetes.io~empty-dir/{name}"
            walked = plain.usage(local)
            vols[name] = {"bytes": used.bytes, "inodes": used.inodes, "method": usage.emptydir_method.get(name),
                          "walk": {"bytes": walked.bytes, "inodes": walked.inodes} if walked else None}
        out["pods"][uid] = vols
    return out


def _cap_eff() -> str:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return line.split()[1]
    return ""


def run(work: Path) -> dict:
    """Builds the filesystem, measures, returns the evidence (errors in it, never raised)."""
    res: dict = {"errors": []}
    mnt = work / "mnt"
    device = None
    try:
        run_cmd(["modprobe", "loop"])
        res["kernel"] = os.uname().release
        img = work / "prj.img"
        mnt.mkdir(parents=True, exist_ok=True)
        run_cmd(["truncate", "-s", "96M", str(img)])
        try:
            device = run_cmd(["losetup", "-f", "--show", str(img)])
        except RuntimeError as err:
            raise RuntimeError(f"this lab cannot make a loop device: {err}") from None
        run_cmd(["mkfs.ext4", "-q", "-F", "-O", "quota,project", "-E", "quotatype=prjquota", "-I", "256", device])
        run_cmd(["mount", "-t", "ext4", "-o", "prjquota", device, str(mnt)])
        res["mount"] = next(line for line in Path("/proc/self/mounts").read_text().splitlines()
                            if line.startswith(device + " "))
        base = mnt / ROOT_DIR.lstrip("/") / "pods"
        projects: dict[str, dict[str, int]] = {POD: {}, SHARED_POD: {}}
        # POD: two volumes under the kubelet's monitoring limit, one with no project (gate off for it),
        # one with a small limit (statfs then shows the project); SHARED_POD: two volumes in one project.
        layout = {POD: {"cache": (KUBELET_FIRST_ID, EXT4_MAX_QUOTA, 40), "scratch": (KUBELET_FIRST_ID + 1,
                                                                                   EXT4_MAX_QUOTA, 3),
                        "plain": (0, 0, 5), "limited": (KUBELET_FIRST_ID + 2, 64 << 20, 7)},
                  SHARED_POD: {"a": (KUBELET_FIRST_ID + 3, EXT4_MAX_QUOTA, 4), "b": (KUBELET_FIRST_ID + 3,
                                                                                     EXT4_MAX_QUOTA, 6)}}
        for uid, vols in layout.items():
            for name, (project, limit, files) in vols.items():
                top = base / uid / "volumes/kubernetes.io~empty-dir" / name
                top.mkdir(parents=True)
                os.chmod(top, 0o777)
                if project:
                    assign_project(top, project, device, limit)
                    projects[uid][name] = project
                write_files(top, files, 12345)
        os.sync()
        res["projects"] = projects
        res["kernel_quota"] = {str(p): kernel_quota(device, p) for vols in projects.values() for p in vols.values()}
        res["statfs"] = {}
        for name in ("limited", "cache"):
            st = os.statvfs(base / POD / "volumes/kubernetes.io~empty-dir" / name)
            res["statfs"][name] = {"used_bytes": (st.f_blocks - st.f_bfree) * st.f_frsize,
                                   "blocks_bytes": st.f_blocks * st.f_frsize}
        fs = os.statvfs(mnt)
        res["statfs"]["filesystem"] = {"used_bytes": (fs.f_blocks - fs.f_bfree) * fs.f_frsize,
                                       "blocks_bytes": fs.f_blocks * fs.f_frsize}
        res["with_cap"] = measure(str(mnt))
        # The agent's default: no CAP_SYS_ADMIN (root keeps every other capability here).
        child = run_cmd(["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin", "--",
                         sys.executable, "-m", "crilab.vm_quota", "measure", str(mnt)])
        lines = child.splitlines()
        res["without_cap"] = json.loads(lines[-1])
        res["without_cap_log"] = lines[:-1]  # the agent's log: the reason, once
    except Exception:  # noqa: BLE001 - recorded for the test, which fails on it
        res["errors"].append(traceback.format_exc())
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True, timeout=60)
        if device:
            subprocess.run(["losetup", "-d", device], capture_output=True, timeout=60)
    return res


def main(argv: list[str]) -> int:
    if argv[:1] == ["measure"]:
        print(json.dumps(measure(argv[1])))
        return 0
    out = Path(argv[0])
    res = run(Path("/var/tmp/crilab-quota"))
    (out / "quota.json").write_text(json.dumps(res))
    print(json.dumps(res, indent=1), file=sys.stderr)
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
