"""Kernel facts from /proc and /sys under the host root."""
from __future__ import annotations

import os
from dataclasses import dataclass

from cri_exporter.doctor.facts.files import list_dir, read_small
from cri_exporter.hostfs import HostFS

CAP_SYS_RESOURCE = 24


def sysctl(hostfs: HostFS, name: str) -> str | None:
    """`net.ipv4.ip_forward` -> the value of /proc/sys/net/ipv4/ip_forward."""
    return read_small(hostfs, "/proc/sys/" + name.replace(".", "/"))


def module_state(hostfs: HostFS, name: str) -> str | None:
    """"loaded", "builtin", or None.

    /proc/modules lists loadable modules that are loaded; /sys/module/<name>
    also exists for built-in modules that have parameters; modules.builtin
    under /lib/modules/<release> names the rest of the built-ins.
    """
    modules = read_small(hostfs, "/proc/modules") or ""
    if any(line.split(" ", 1)[0] == name for line in modules.splitlines()):
        return "loaded"
    if hostfs.is_dir(f"/sys/module/{name}"):
        return "loaded" if hostfs.exists(f"/sys/module/{name}/refcnt") else "builtin"
    # A built-in br_netfilter shows only through the sysctls it registers.
    if name == "br_netfilter" and hostfs.is_dir("/proc/sys/net/bridge"):
        return "builtin"
    release = read_small(hostfs, "/proc/sys/kernel/osrelease")
    if release:
        builtin = read_small(hostfs, f"/lib/modules/{release}/modules.builtin") or ""
        if any(os.path.basename(line).split(".ko")[0].replace("-", "_") == name for line in builtin.splitlines()):
            return "builtin"
    return None


@dataclass(frozen=True)
class CgroupInfo:
    version: int | None  # 2 unified, 1 legacy or hybrid, None unknown
    hybrid: bool
    controllers: frozenset[str]


def cgroups(hostfs: HostFS) -> CgroupInfo:
    root = "/sys/fs/cgroup"
    v2 = read_small(hostfs, f"{root}/cgroup.controllers")
    if v2 is not None:
        return CgroupInfo(2, False, frozenset(v2.split()))
    enabled = set()
    table = read_small(hostfs, "/proc/cgroups")
    if table:
        for line in table.splitlines():
            parts = line.split()
            if len(parts) == 4 and not line.startswith("#") and parts[3] == "1":
                enabled.add(parts[0])
    else:
        enabled = {n for n in list_dir(hostfs, root) if n not in ("unified", "systemd")}
    if not enabled and not list_dir(hostfs, root):
        return CgroupInfo(None, False, frozenset())
    return CgroupInfo(1, hostfs.exists(f"{root}/unified"), frozenset(enabled))


def swaps(hostfs: HostFS) -> list[str]:
    """Active swap devices (the lines of /proc/swaps after its header)."""
    text = read_small(hostfs, "/proc/swaps") or ""
    return [line.split()[0] for line in text.splitlines()[1:] if line.strip()]


def meminfo(hostfs: HostFS) -> dict[str, int]:
    out = {}
    for line in (read_small(hostfs, "/proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return out


@dataclass(frozen=True)
class Process:
    pid: int
    comm: str
    start_time: float | None  # unix seconds
    cap_eff: int | None
    uid_map: str | None
    uid: int | None = None  # real uid (/proc/<pid>/status Uid:)
    # The command line as the process was started: which config file a
    # runtime reads is often only written here (k3s: `containerd -c ...`).
    args: tuple[str, ...] = ()
    # In a pid namespace nested in the node's (NSpid: one pid per level): a
    # kind node's, docker-in-docker's or sysbox's processes, whose runtime
    # names the same /run/containerd path in its own mount namespace.
    nested: bool = False


def _boot_time(hostfs: HostFS) -> float | None:
    for line in (read_small(hostfs, "/proc/stat") or "").splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return None


def _start_time(hostfs: HostFS, pid: int, btime: float | None) -> float | None:
    stat = read_small(hostfs, f"/proc/{pid}/stat")
    if not stat or btime is None or ")" not in stat:
        return None
    # Field 22 (starttime, clock ticks after boot); the comm field may hold
    # spaces and parentheses, so split after its last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    try:
        ticks = int(fields[19])
    except (IndexError, ValueError):
        return None
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def find_processes(hostfs: HostFS, names: tuple[str, ...]) -> list[Process]:
    """Processes whose comm is one of `names`, in pid order."""
    btime = _boot_time(hostfs)
    found = []
    for entry in list_dir(hostfs, "/proc"):
        if not entry.isdigit():
            continue
        comm = read_small(hostfs, f"/proc/{entry}/comm")
        if comm not in names:
            continue
        pid = int(entry)
        cap = uid = None
        nested = False
        for line in (read_small(hostfs, f"/proc/{pid}/status") or "").splitlines():
            try:
                if line.startswith("CapEff:"):
                    cap = int(line.split()[1], 16)
                elif line.startswith("Uid:"):
                    uid = int(line.split()[1])
                elif line.startswith("NSpid:"):
                    nested = len(line.split()) > 2
            except (IndexError, ValueError):
                pass
        found.append(Process(pid, comm, _start_time(hostfs, pid, btime), cap, read_small(hostfs, f"/proc/{pid}/uid_map"),
                             uid, cmdline(hostfs, pid), nested))
    return sorted(found, key=lambda p: p.pid)


CMDLINE_LIMIT = 256 * 1024


def cmdline(hostfs: HostFS, pid: int) -> tuple[str, ...]:
    """argv of a process (NUL-separated in /proc/<pid>/cmdline); () when
    unreadable or a kernel thread. Readable without ptrace rights, unlike
    /proc/<pid>/cwd and environ."""
    try:
        text = hostfs.read_text(f"/proc/{pid}/cmdline", limit=CMDLINE_LIMIT)
    except OSError:
        return ()
    if text.endswith("\0"):
        text = text[:-1]
    return tuple(text.split("\0")) if text else ()


def cwd(hostfs: HostFS, pid: int) -> tuple[str | None, str]:
    """(the working directory of a process as a host path, "") or (None, why
    not). The link is read, never followed: its target is a path in the
    process's mount namespace, which for a runtime on the node is the host's.
    Reading it needs ptrace rights over the process (CAP_SYS_PTRACE in a
    container), so a DaemonSet without that capability gets EACCES here."""
    try:
        return hostfs.readlink(f"/proc/{pid}/cwd"), ""
    except OSError as e:
        return None, f"/proc/{pid}/cwd: {e.strerror or e}"


def in_initial_user_ns(uid_map: str | None) -> bool:
    """The initial user namespace maps all 2^32-1 ids from 0 to 0."""
    if uid_map is None:
        return True
    return uid_map.split() == ["0", "0", "4294967295"]


def netns_inodes(hostfs: HostFS) -> tuple[set[int], int]:
    """Network namespace inodes of every process, and how many pod processes
    would not tell. Reading ns/net of a process with capabilities the agent
    lacks needs CAP_SYS_PTRACE, which the DaemonSet drops: then every pause
    process is unreadable. A denied process outside the kubepods cgroups
    (an init in another user namespace, say) cannot be a sandbox and is
    ignored; /proc/<pid>/cgroup stays readable without ptrace rights."""
    inodes, denied = set(), 0
    for entry in list_dir(hostfs, "/proc"):
        if entry.isdigit():
            try:
                inodes.add(os.stat(hostfs.path(f"/proc/{entry}/ns/net")).st_ino)
            except PermissionError:
                try:
                    denied += "kubepods" in hostfs.read_text(f"/proc/{entry}/cgroup", limit=16384)
                except OSError:
                    continue
            except OSError:
                continue  # the process exited meanwhile
    return inodes, denied


def netns_files(hostfs: HostFS, directory: str, prefix: str) -> dict[str, tuple[int, float]]:
    """Name -> (inode, mtime) of the namespace files named `prefix`* in
    `directory` (ip-netns bind mounts: the inode is the namespace's, and
    nsfs stamps it when the namespace is first bound, so mtime is when the
    runtime created it)."""
    out = {}
    for name in list_dir(hostfs, directory):
        if name.startswith(prefix):
            try:
                st = os.stat(hostfs.path(f"{directory}/{name}"))
            except OSError:
                continue  # deleted meanwhile
            out[name] = (st.st_ino, st.st_mtime)
    return out
