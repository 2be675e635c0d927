"""In the guest (crilab/vm_guest.py): emptyDirs under project quotas, made the
way the kubelet makes them, measured by the agent's walker with and without
CAP_SYS_ADMIN, against the kernel's and the kubelet's own numbers.

The lab's host kernel has no quota format (CONFIG_QFMT_V2) and no XFS quota,
so neither ext4 nor XFS project quotas can be mounted there; Debian 12's kernel
in the guest has both. The guest image has mkfs.ext4 but no xfsprogs, so the
host's mkfs.xfs and xfs_quota (Debian 12's xfsprogs, which scripts/setup.sh
installs) and the libraries they need travel in the payload (`xfs_tools`).

On ext4 (`-O quota,project`, mounted `prjquota`) and on XFS (mounted
`prjquota`), each on a loop device: projects are set with the kubelet's own
commands (pkg/volume/util/fsquota/common: `xfs_quota -x -c 'limit -p bhard=N
bsoft=N <id>'` with N its maxQuota for the filesystem, then `project -s -p
<dir> <id>`), and the numbers are compared with the kubelet's own reading
(`xfs_quota 'quota -p -N -n -v -b|-i <id>'`), with quotactl() on the loop
device (not quotactl_fd, which the agent uses), with a walk, and, for a project
with a small limit, with statfs() of its directory.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

TOOLS = Path("/payload/tools")  # mkfs.xfs, xfs_quota and their libraries (xfs_tools)
XFS_BINARIES = ("/usr/sbin/mkfs.xfs", "/usr/sbin/xfs_quota")

Q_GETQUOTA, PRJQUOTA = 0x800007, 2
SYS_QUOTACTL = 179  # x86_64: the guest
# The kubelet's maxQuota per filesystem (bytes): its monitoring-only limit.
MAX_QUOTA = {"ext4": (1 << 58) - 1, "xfs": (1 << 63) - 1}
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


def assign_project(mnt: Path, path: Path, project: int, limit_bytes: int) -> None:
    """The kubelet's SetQuotaOnDir: its two xfs_quota commands, as it runs them."""
    for command in (f"limit -p bhard={limit_bytes} bsoft={limit_bytes} {project}", f"project -s -p {path} {project}"):
        xfs_quota(mnt, command)


def xfs_quota(mnt: Path, command: str) -> str:
    return run_cmd([str(TOOLS / "xfs_quota"), "-P/dev/null", "-D/dev/null", "-x", "-f", str(mnt), "-c", command])


def kubelet_reading(mnt: Path, project: int) -> dict:
    """GetConsumption and GetInodes as the kubelet reads them (bytes from KiB)."""
    def first_number(out: str) -> int:
        return int(out.split()[1])
    return {"bytes": first_number(xfs_quota(mnt, f"quota -p -N -n -v -b {project}")) * 1024,
            "inodes": first_number(xfs_quota(mnt, f"quota -p -N -n -v -i {project}"))}


def write_files(top: Path, files: int, size: int) -> None:
    (top / "sub/deeper").mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (top / ("sub" if i % 2 else "sub/deeper") / f"f{i}").write_bytes(os.urandom(size))
    with open(top / "sparse", "wb") as f:  # allocated blocks, not apparent size
        f.seek(8 << 20)
        f.write(b"x")
    os.link(top / "sub/f1", top / "hardlink")  # one inode, counted once by both
    os.symlink("/etc/passwd", top / "link")


def xfs_tools(dest: Path) -> None:
    """On the host: Debian 12's mkfs.xfs and xfs_quota into dest, with every library they
    load that is not glibc's (the guest lacks libinih, liburcu, libedit...)."""
    dest.mkdir(parents=True, exist_ok=True)
    for binary in XFS_BINARIES:
        if not Path(binary).exists():
            raise RuntimeError(f"{binary} is missing: scripts/setup.sh installs xfsprogs")
        shutil.copy(binary, dest)
        for line in run_cmd(["ldd", binary]).splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] == "=>" and not parts[0].startswith(("libc.so", "ld-linux")):
                shutil.copy(os.path.realpath(parts[2]), dest / parts[0])


def run_cmd(cmd: list[str]) -> str:
    env = {**os.environ, "LD_LIBRARY_PATH": str(TOOLS)}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
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


def make_fs(fstype: str, img: Path) -> str:
    """A loop device holding a fresh `fstype` with project quota accounting; its path."""
    run_cmd(["truncate", "-s", "320M", str(img)])  # mkfs.xfs 6.1 wants 300 MB at least
    try:
        device = run_cmd(["losetup", "-f", "--show", str(img)])
    except RuntimeError as err:
        raise RuntimeError(f"this lab cannot make a loop device: {err}") from None
    if fstype == "ext4":
        run_cmd(["mkfs.ext4", "-q", "-F", "-O", "quota,project", "-E", "quotatype=prjquota", "-I", "256", device])
    else:
        run_cmd([str(TOOLS / "mkfs.xfs"), "-q", "-f", device])
    return device


def run_fs(fstype: str, work: Path) -> dict:
    """One filesystem's evidence (errors in it, never raised)."""
    res: dict = {"errors": []}
    mnt = work / fstype
    device = None
    mounted = False
    try:
        mnt.mkdir(parents=True, exist_ok=True)
        device = make_fs(fstype, work / f"{fstype}.img")
        run_cmd(["mount", "-t", fstype, "-o", "prjquota", device, str(mnt)])
        mounted = True
        res["mount"] = next(line for line in Path("/proc/self/mounts").read_text().splitlines()
                            if line.startswith(device + " "))
        res["state"] = xfs_quota(mnt, "state -p")
        base = mnt / ROOT_DIR.lstrip("/") / "pods"
        projects: dict[str, dict[str, int]] = {POD: {}, SHARED_POD: {}}
        top_limit = MAX_QUOTA[fstype]
        # POD: two volumes under the kubelet's monitoring limit, one with no project (the gate off, or a pod
        # in the host's user namespace), one with a small limit (statfs then shows the project);
        # SHARED_POD: two volumes in one project.
        layout = {POD: {"cache": (KUBELET_FIRST_ID, top_limit, 40), "scratch": (KUBELET_FIRST_ID + 1, top_limit, 3),
                        "plain": (0, 0, 5), "limited": (KUBELET_FIRST_ID + 2, 64 << 20, 7)},
                  SHARED_POD: {"a": (KUBELET_FIRST_ID + 3, top_limit, 4), "b": (KUBELET_FIRST_ID + 3, top_limit, 6)}}
        for uid, vols in layout.items():
            for name, (project, limit, files) in vols.items():
                top = base / uid / "volumes/kubernetes.io~empty-dir" / name
                top.mkdir(parents=True)
                os.chmod(top, 0o777)
                if project:
                    assign_project(mnt, top, project, limit)
                    projects[uid][name] = project
                write_files(top, files, 12345)
        os.sync()
        res["projects"] = projects
        ids = sorted({p for vols in projects.values() for p in vols.values()})
        res["kernel_quota"] = {str(p): kernel_quota(device, p) for p in ids}
        res["kubelet_reading"] = {str(p): kubelet_reading(mnt, p) for p in ids}
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
        if mounted:
            subprocess.run(["umount", str(mnt)], capture_output=True, timeout=60)
        if device:
            subprocess.run(["losetup", "-d", device], capture_output=True, timeout=60)
    return res


def run(work: Path) -> dict:
    """Every filesystem's evidence: {"ext4": {...}, "xfs": {...}}."""
    out: dict = {"kernel": os.uname().release}
    missing = TOOLS / "MISSING"  # the host could not provide xfsprogs (the fixture says why)
    try:
        if missing.exists():
            raise RuntimeError(f"no xfs_quota or mkfs.xfs in the payload: {missing.read_text()}")
        run_cmd(["modprobe", "loop"])
    except RuntimeError as err:
        return {**out, "ext4": {"errors": [str(err)]}, "xfs": {"errors": [str(err)]}}
    for fstype in ("ext4", "xfs"):
        out[fstype] = run_fs(fstype, work)
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["measure"]:
        print(json.dumps(measure(argv[1])))
        return 0
    out = Path(argv[0])
    res = run(Path("/var/tmp/crilab-quota"))
    (out / "quota.json").write_text(json.dumps(res))
    print(json.dumps(res, indent=1), file=sys.stderr)
    return 1 if res["ext4"]["errors"] or res["xfs"]["errors"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
