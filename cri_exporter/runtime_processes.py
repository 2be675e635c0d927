"""The runtime's own processes, read from the host's /proc: the daemon serving
the CRI socket (containerd, CRI-O), its shims (containerd-shim-runc-v2 and the
other containerd-shim-*, conmon, conmonrs), and the zombies under them.

Read by hand, not with psutil (the tests' independent reader, not a dependency of the agent):
- Cost. One walk reads /proc/<pid>/stat of every process on the node (to find
  the shims and the zombies in their subtrees). Measured on the development
  machine: 7 us a process read bare, 40 us through psutil.process_iter, 68 us
  for psutil's ppid, status, memory, CPU and threads of one process; at 1,000
  containers (some 1,600 processes) that is 12 ms against 64-110 ms. The one
  stat line already holds state, parent, CPU, threads and start time; only
  the runtime's own processes get more reads (statm, fd, limits, cmdline).
- Confinement. psutil.PROCFS_PATH moves its file reads under --host-root, but
  it is one global for the whole process, its reads follow links, and
  Process.rlimit() is the prlimit(2) syscall on a pid: in the DaemonSet (no
  hostPID) a host pid names nothing, or another process, in the agent's pid
  namespace. /proc/<pid>/limits is world-readable and says the same.
Every path here goes through HostFS, so --host-root=/host reads the node's
procfs mounted at /host/proc.

Privileges (measured as root with no capability, the DaemonSet's): stat,
status, limits and cmdline of every process are readable, and so is the
listing of /proc/<pid>/fd (its mode lets its owner, uid 0, in), so open fds
are counted; /proc/<pid>/exe and the fd links need CAP_SYS_PTRACE, so the
runtime is found by name and command line, never by exe or socket inode.
Which daemon serves the endpoint is the doctor's reader's answer
(doctor/facts/runtime_daemon.py: the config and its imports, the process's
mount namespace through /proc/<pid>/root where readable), so the exporter
and the doctor never disagree about it.

The walk costs a read per process, so it runs off the scrape path on its own
interval (RuntimeProcessSampler); the collector serves the latest sample.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from array import array
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

from cri_exporter.doctor.facts import procfs, runtime_daemon
from cri_exporter.hostfs import HostFS
from cri_exporter.periodic import PeriodicReader

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# comm of the shims: containerd-shim-runc-v2, -kata-v2, -runsc-v1... all read
# "containerd-shim" (cut at 15); the full name comes from argv[0].
SHIM_COMM_PREFIX = "containerd-shim"
CRIO_SHIMS = ("conmon", "conmonrs")
# The containerd namespace the CRI plugin keeps its pods in (a constant of
# containerd's CRI plugin, 1.x and 2.x): only its shims are compared with CRI.
CRI_NAMESPACE = "k8s.io"

# What one hostile /proc file may cost.
_STAT_LIMIT = 4096
_CMDLINE_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class ProcStat:
    """One /proc/<pid>/stat line, the fields used here."""

    pid: int
    comm: str
    state: str
    ppid: int
    cpu_ticks: int  # utime + stime
    threads: int
    start_ticks: int  # since boot
    rss_pages: int


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """One runtime process as the metrics describe it."""

    pid: int
    name: str  # argv[0]'s base name: containerd, containerd-shim-runc-v2, conmon...
    cpu_seconds: float
    resident_bytes: int
    threads: int
    start_time_seconds: float  # Unix time
    open_fds: int | None  # None: /proc/<pid>/fd unreadable
    max_fds: int | None  # soft RLIMIT_NOFILE; None: unreadable
    # containerd shims: -namespace and -id (the sandbox id with CRI's grouping,
    # else the container id); conmon: the container id. "" if not given.
    namespace: str = ""
    id: str = ""
    start_ticks: int = 0


class Shims(Sequence[ProcessInfo]):
    """The shims of one walk, a column each: one shim a pod makes thousands on a
    large node, and as ProcessInfo objects (numbers, names and ids each an
    object of their own) a walk kept 1.45 MB at 2,500 pods, twice while the
    next walk was made. Here a shim is a few numbers in C arrays; its name and
    namespace are interned (a handful of values), its id too, so it is the
    string the CRI client interned for the inventory (cri/client.py) where that
    sandbox is listed. Read as ProcessInfo where one is asked for (tests,
    the support bundle); the collector reads the columns."""

    __slots__ = ("names", "namespaces", "ids", "pids", "start_ticks", "cpu_seconds", "start_time_seconds",
                 "resident_bytes", "threads", "open_fds", "max_fds")

    def __init__(self, shims: Iterable[ProcessInfo] = ()):
        self.names: list[str] = []
        self.namespaces: list[str] = []
        self.ids: list[str] = []
        self.pids, self.start_ticks = array("q"), array("q")
        self.cpu_seconds, self.start_time_seconds = array("d"), array("d")
        # -1: None (unreadable)
        self.resident_bytes, self.threads, self.open_fds, self.max_fds = array("q"), array("q"), array("q"), array("q")
        for shim in shims:
            self.append(shim)

    def append(self, p: ProcessInfo) -> None:
        self.names.append(sys.intern(p.name))
        self.namespaces.append(sys.intern(p.namespace))
        self.ids.append(sys.intern(p.id))
        self.pids.append(p.pid)
        self.start_ticks.append(p.start_ticks)
        self.cpu_seconds.append(p.cpu_seconds)
        self.start_time_seconds.append(p.start_time_seconds)
        self.resident_bytes.append(p.resident_bytes)
        self.threads.append(p.threads)
        self.open_fds.append(-1 if p.open_fds is None else p.open_fds)
        self.max_fds.append(-1 if p.max_fds is None else p.max_fds)

    def __len__(self) -> int:
        return len(self.pids)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return tuple(self[k] for k in range(*i.indices(len(self))))
        fds, limit = self.open_fds[i], self.max_fds[i]
        return ProcessInfo(self.pids[i], self.names[i], self.cpu_seconds[i], self.resident_bytes[i], self.threads[i],
                           self.start_time_seconds[i], None if fds < 0 else fds, None if limit < 0 else limit,
                           self.namespaces[i], self.ids[i], self.start_ticks[i])

    def __iter__(self) -> Iterator[ProcessInfo]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Shims, tuple, list)):
            return tuple(self) == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Shims({tuple(self)!r})"


@dataclass(frozen=True)
class RuntimeSample:
    """One walk of /proc."""

    taken_at: float  # wall clock
    duration: float  # seconds the walk took
    processes: int  # processes read
    daemon: ProcessInfo | None
    shims: Shims  # given as any sequence of ProcessInfo, kept as Shims
    # process name -> zombies in the subtrees of the shims of that name, and
    # zombie children of the daemon (shims it did not reap) under its name
    zombies: dict[str, int] = field(default_factory=dict)
    # shim name -> CPU seconds as a counter (RuntimeProcessSampler)
    shim_cpu_seconds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.shims, Shims):
            object.__setattr__(self, "shims", Shims(self.shims))


def parse_stat(pid: int, line: str) -> ProcStat:
    """comm may hold spaces and parentheses: it ends at the last ')'."""
    head, _, rest = line.rpartition(")")
    comm = head.partition("(")[2]
    f = rest.split()
    return ProcStat(pid, comm, f[0], int(f[1]), int(f[11]) + int(f[12]), int(f[17]), int(f[19]), int(f[21]))


def parse_soft_nofile(limits: str) -> int | None:
    for line in limits.splitlines():
        if line.startswith("Max open files"):
            soft = line[len("Max open files"):].split()[0]
            return None if soft == "unlimited" else int(soft)
    return None


def open_fds(hostfs: HostFS, pid: int) -> int | None:
    """Entries of /proc/<pid>/fd; None: unreadable, or the process is gone."""
    try:
        return len(os.listdir(hostfs.path(f"/proc/{pid}/fd")))
    except OSError:
        return None


def max_fds(hostfs: HostFS, pid: int) -> int | None:
    """The soft RLIMIT_NOFILE from /proc/<pid>/limits (world-readable, unlike prlimit(2) on a host pid)."""
    try:
        return parse_soft_nofile(hostfs.read_text(f"/proc/{pid}/limits", 64 * 1024))
    except (OSError, ValueError):
        return None


def flag_values(argv: list[str], *names: str) -> str | None:
    """The value of the first of `names` (`-a X`, `--address X`, `--address=X`), Go flag style."""
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg[len(name) + 1:]
    return None


def normalize_socket(path: str) -> str:
    path = path.removeprefix("unix://")
    if path.startswith("/var/run/"):
        path = path[len("/var"):]
    return os.path.normpath(path) if path else path


def host_socket(endpoint: str, hostfs: HostFS) -> str:
    """The host path of the agent's CRI endpoint (unix:///host/run/x.sock -> /run/x.sock)."""
    path = endpoint.removeprefix("unix://")
    if hostfs.root != "/" and path.startswith(hostfs.root + "/"):
        path = path[len(hostfs.root):]
    return normalize_socket(path)


class RuntimeProcesses:
    """Reads the runtime's processes under `hostfs`. `endpoint()` is the CRI
    endpoint the agent talks to now (it may switch, exporter._reprobe)."""

    def __init__(self, hostfs: HostFS, endpoint: Callable[[], str]):
        self.hostfs = hostfs
        self.endpoint = endpoint
        self.socket = host_socket(endpoint(), hostfs)
        self._boot_time: float | None = None
        # (pid, start ticks, argv) -> that daemon process, the socket it listens on
        self._daemons: dict[tuple[int, int, tuple[str, ...]], tuple[procfs.Process, str]] = {}
        self._socket_ids: dict[str, tuple[int, int] | None] = {}

    # ---- /proc reading ----

    def _read(self, path: str, limit: int) -> bytes:
        return self.hostfs.read_bytes(path, limit)

    def stat(self, pid: int) -> ProcStat | None:
        try:
            return parse_stat(pid, self._read(f"/proc/{pid}/stat", _STAT_LIMIT).decode("utf-8", "replace"))
        except (OSError, ValueError, IndexError):
            return None  # gone meanwhile, or not a stat line

    def cmdline(self, pid: int) -> list[str]:
        try:
            raw = self._read(f"/proc/{pid}/cmdline", _CMDLINE_LIMIT)
        except OSError:
            return []
        return [a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0")] if raw else []

    def boot_time(self) -> float:
        if self._boot_time is None:
            for line in self.hostfs.read_text("/proc/stat", 1024 * 1024).splitlines():
                if line.startswith("btime "):
                    self._boot_time = float(line.split()[1])
                    break
            else:
                raise ValueError("/proc/stat has no btime line")
        return self._boot_time

    def pids(self) -> list[int]:
        return [int(n) for n in os.listdir(self.hostfs.path("/proc")) if n.isdigit()]

    def resident_bytes(self, st: ProcStat) -> int:
        """From statm: the stat line's rss is the kernel's approximate per-CPU
        counter sum where statm and status give the exact one (6.18 differed
        by 54 pages on an idle containerd); stat's is the fallback."""
        try:
            return int(self._read(f"/proc/{st.pid}/statm", _STAT_LIMIT).split()[1]) * PAGE_SIZE
        except (OSError, ValueError, IndexError):
            return st.rss_pages * PAGE_SIZE

    def open_fds(self, pid: int) -> int | None:
        return open_fds(self.hostfs, pid)

    def max_fds(self, pid: int) -> int | None:
        return max_fds(self.hostfs, pid)

    def info(self, st: ProcStat, argv: list[str], namespace: str = "", id_: str = "",
             with_limit: bool = False) -> ProcessInfo:
        name = os.path.basename(argv[0]) if argv and argv[0] else st.comm
        return ProcessInfo(
            pid=st.pid, name=name, cpu_seconds=st.cpu_ticks / CLK_TCK, resident_bytes=self.resident_bytes(st),
            threads=st.threads, start_time_seconds=self.boot_time() + st.start_ticks / CLK_TCK,
            open_fds=self.open_fds(st.pid), max_fds=self.max_fds(st.pid) if with_limit else None,
            namespace=namespace, id=id_, start_ticks=st.start_ticks,
        )

    def owner(self, pid: int) -> tuple[int | None, bool]:
        """(real uid, whether the process lives in a pid namespace nested in
        the node's), from status: `Uid:` (the owner of /proc/<pid> is root for
        any process that made itself non-dumpable) and `NSpid:` (one pid per
        namespace level: more than one inside a kind node, docker-in-docker or
        sysbox, whose containerd names the same /run/containerd path)."""
        uid, nested = None, False
        try:
            for line in self.hostfs.read_text(f"/proc/{pid}/status", 64 * 1024).splitlines():
                if line.startswith("Uid:"):
                    uid = int(line.split()[1])
                elif line.startswith("NSpid:"):
                    nested = len(line.split()) > 2
        except (OSError, ValueError, IndexError):
            return None, False
        return uid, nested

    def ours(self, pid: int, runtime_uid: int) -> bool:
        uid, nested = self.owner(pid)
        return uid == runtime_uid and not nested

    def _runtime_uid(self) -> int:
        """Whose processes may be the runtime's: the socket's owner (the
        runtime creates it; rootless containerd's is its user), else root."""
        try:
            return os.stat(self.hostfs.path(self.socket)).st_uid
        except OSError:
            return 0

    def alive(self, pid: int, start_ticks: int) -> bool:
        """The process is still there and the same one (a reused pid has another start time)."""
        st = self.stat(pid)
        return st is not None and st.start_ticks == start_ticks and st.state not in "ZX"

    # ---- which processes are the runtime's ----

    def _socket_id(self, path: str) -> tuple[int, int] | None:
        """(device, inode) of a host socket path, so /var/run and /run, or a
        link, name the same socket."""
        if path not in self._socket_ids:
            try:
                st = os.stat(self.hostfs.path(path))
                self._socket_ids[path] = (st.st_dev, st.st_ino)
            except OSError:
                self._socket_ids[path] = None
        return self._socket_ids[path]

    def _same_socket(self, address: str) -> bool:
        address = normalize_socket(address)
        if not address:
            return False
        if address == self.socket:
            return True
        mine, theirs = self._socket_id(self.socket), self._socket_id(address)
        return mine is not None and mine == theirs

    def serves(self, st: ProcStat, argv: list[str], endpoint_local: str) -> bool:
        """Whether this daemon process is the runtime behind the endpoint,
        decided by the doctor's reader (doctor/facts/runtime_daemon.py): the
        socket it listens on is read once per process (its config and
        imports), whether that is the endpoint's at every walk (a socket
        is bound anew at each runtime start)."""
        key = (st.pid, st.start_ticks, tuple(argv))
        found = self._daemons.get(key)
        if found is None:
            uid, nested = self.owner(st.pid)
            proc = procfs.Process(st.pid, st.comm, None, None, None, uid, tuple(argv), nested)
            found = proc, runtime_daemon.listen_address(self.hostfs, proc)
            if len(self._daemons) > 64:  # daemons come and go (restarts): keep it bounded
                self._daemons.clear()
            self._daemons[key] = found
        return found[0].uid is not None and runtime_daemon.serves(self.hostfs, found[0], found[1], endpoint_local)

    def read(self) -> RuntimeSample:
        """Walk /proc once: the daemon serving the socket, its shims, and the zombies under them."""
        started, t0 = time.time(), time.monotonic()
        self.socket = host_socket(self.endpoint(), self.hostfs)
        self._socket_ids.clear()  # a restarted runtime binds a new socket file (new inode)
        # Any user may name a process containerd-shim and give it our
        # socket's -address (a false leaked-shim alert, a label of its
        # choosing): only the runtime's user's processes count. And a
        # containerd in a nested pid namespace (a kind node) serves a socket
        # of the same path in its own mount namespace: not ours either.
        owner = self._runtime_uid()
        endpoint_local = self.endpoint().removeprefix("unix://")
        # Each process read, used and dropped in turn: of most only the parent
        # is kept (two C arrays, for the zombies' ancestry). A ProcStat a
        # process held until the end of the walk was 2.8 MB in flight at
        # 10,000 processes, and the pid list 0.4 MB more.
        pids, parents = array("q"), array("q")
        zombie_pids: list[int] = []
        daemons: list[tuple[ProcStat, list[str]]] = []
        shims = Shims()
        with os.scandir(self.hostfs.path("/proc")) as entries:
            for entry in entries:
                if not entry.name.isdigit():
                    continue
                st = self.stat(int(entry.name))
                if st is None:
                    continue
                pids.append(st.pid)
                parents.append(st.ppid)
                if st.state in "ZX":
                    if st.state == "Z":
                        zombie_pids.append(st.pid)
                    continue
                if st.comm in runtime_daemon.DAEMON_NAMES:
                    argv = self.cmdline(st.pid)
                    if argv and self.serves(st, argv, endpoint_local):
                        daemons.append((st, argv))
                elif st.comm.startswith(SHIM_COMM_PREFIX) or st.comm in CRIO_SHIMS:
                    if not self.ours(st.pid, owner):
                        continue
                    shim = self._shim(st, self.cmdline(st.pid))
                    if shim is not None:
                        shims.append(shim)
        # Two candidates for one socket: the newest binds it (an old one
        # shutting down); none: the runtime is not running, or its address is
        # given another way than this reader knows (logged by the collector).
        daemon = None
        if daemons:
            st, argv = max(daemons, key=lambda d: d[0].start_ticks)
            daemon = self.info(st, argv, with_limit=True)
        zombies = self._zombies(pids, parents, zombie_pids, daemon, shims)
        return RuntimeSample(started, time.monotonic() - t0, len(pids), daemon, shims, zombies)

    def _shim(self, st: ProcStat, argv: list[str]) -> ProcessInfo | None:
        if not argv:
            return None
        name = os.path.basename(argv[0])
        if st.comm in CRIO_SHIMS:
            # CRI-O's conmon carries no socket of CRI-O's: every conmon is
            # taken as the runtime's where the runtime is CRI-O.
            if "crio" not in self.socket:
                return None
            return self.info(st, argv, id_=flag_values(argv, "-c", "--cid") or "")
        if not name.startswith(SHIM_COMM_PREFIX):
            return None
        # containerd's shims name their containerd's socket: -address. A shim
        # of another containerd (a docker host's, a second instance) is not ours.
        if not self._same_socket(flag_values(argv, "-address", "--address") or ""):
            return None
        return self.info(st, argv, namespace=flag_values(argv, "-namespace", "--namespace") or "",
                         id_=flag_values(argv, "-id", "--id") or "")

    @staticmethod
    def _zombies(pids: array, parents: array, zombie_pids: list[int], daemon: ProcessInfo | None,
                 shims: Shims) -> dict[str, int]:
        """Each zombie counts once for every shim it descends from (through
        processes of this walk) and for the daemon if it is its child; the
        parent map is made only when there is a zombie (most walks: none)."""
        out = {name: 0 for name in shims.names}
        if daemon is not None:
            out[daemon.name] = out.get(daemon.name, 0)
        if zombie_pids:
            parent = dict(zip(pids, parents))
            shim_names = dict(zip(shims.pids, shims.names))
            for pid in zombie_pids:
                if daemon is not None and parent[pid] == daemon.pid:
                    out[daemon.name] += 1
                seen = {pid}
                up = parent[pid]
                while up in parent and up not in seen:
                    seen.add(up)
                    name = shim_names.get(up)
                    if name is not None:
                        out[name] += 1
                    up = parent[up]
        return out


class RuntimeProcessSampler(PeriodicReader[RuntimeSample]):
    """Walks /proc every `interval` seconds in a thread of its own; the
    collector reads `latest`. The first walk runs at start().

    `shim_cpu_seconds`: CPU of the shims, by name, as a counter that never goes
    down although shims come and go (a sum over the live ones would drop at
    every pod removal, which rate() reads as a reset). Each walk adds what
    every shim seen before used since, and the whole CPU of a shim seen for the
    first time (it started after the last walk, or this is the first walk); a
    shim's CPU between its last walk and its exit is not counted
    (process-exporter's way with process groups)."""

    thread_name = "runtime-processes"
    failure = "runtime process walk failed"

    def __init__(self, reader: RuntimeProcesses, interval: float):
        super().__init__(interval)
        self.reader = reader
        self.shim_cpu_seconds: dict[str, float] = {}
        self._shims_before = Shims()  # the last walk's (its sample's own columns: nothing kept twice)

    def take(self) -> RuntimeSample:
        latest = self.reader.read()
        self._account_shim_cpu(latest.shims)
        return dataclasses.replace(latest, shim_cpu_seconds=dict(self.shim_cpu_seconds))

    def _account_shim_cpu(self, shims: Shims) -> None:
        before = self._shims_before
        # (pid, start ticks) -> CPU seen at the last walk, for this walk's accounting only
        seen = dict(zip(zip(before.pids, before.start_ticks), before.cpu_seconds))
        for name, pid, start, cpu in zip(shims.names, shims.pids, shims.start_ticks, shims.cpu_seconds):
            self.shim_cpu_seconds[name] = self.shim_cpu_seconds.get(name, 0.0) + max(0.0, cpu - seen.get((pid, start), 0.0))
        self._shims_before = shims
