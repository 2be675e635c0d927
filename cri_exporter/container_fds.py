"""Open file descriptors and sockets of each container, and TCP sockets by
state in each pod's network namespace, read off the scrape path.

A container's processes are its cgroup's (cgroup.procs, v1 and v2); each
one's /proc/<pid>/fd entries are counted and their links read
(`socket:[inode]` is a socket). A pod's TCP states come from
/proc/<pid>/net/tcp{,6} of its sandbox's process (tcp_states.py says why not
sockstat), found the way podnet.py finds it: the first process of the
sandbox container's cgroup. Every path goes through HostFS.

Cost grows with the fds and sockets on the node, not with the scrape rate,
so a thread of its own reads them every interval (as runtime_processes.py
walks /proc) within a budget: at most `budget` entries (fd entries, plus
socket lines of the tcp files) a pass. What the budget leaves out is read
first in the next pass (oldest reading first), so each number is at most a
few intervals old, and its age is exported (the oldest reading served). One
container or pod is read whole once started, so a pass overshoots by at
most one container's fds (bounded by its RLIMIT_NOFILE) or one pod's
READ_LIMIT.

Privileges: listing /proc/<pid>/fd needs the process's uid or
CAP_DAC_READ_SEARCH, and reading its links CAP_SYS_PTRACE (ptrace read
access); as root with no capability (the DaemonSet's) the fds of root
processes are counted but their links cannot be read, so sockets are
absent there. Processes that exit mid-read are skipped, not errors; an
unreadable fd directory or link leaves that container's number absent
rather than low.

The targets (running containers, and the pods not on the host's network)
come from the scrape's inventory: the collector hands them over.
"""
from __future__ import annotations

import os
import threading
import time
from array import array
from dataclasses import dataclass, field
from typing import Iterator

import structlog

from cri_exporter import memory_tuning
from cri_exporter.cgroups import NodeCgroups
from cri_exporter.hostfs import HostFS
from cri_exporter.reading_rows import NAN, ReadingRows
from cri_exporter.runtime_processes import max_fds
from cri_exporter.tcp_states import READ_LIMIT, STATE_NAMES, read_states

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class FdCount:
    """One container's processes summed (as cAdvisor's container_file_descriptors)."""

    fds: int | None  # None: some process's fd directory unreadable
    sockets: int | None  # None: fds unknown, or some fd link unreadable
    limit_ratio: float | None  # the highest open / soft RLIMIT_NOFILE of one process; None: no limit known
    processes: int
    taken_at: float  # wall clock


@dataclass(frozen=True, slots=True)
class TcpReading:
    # in the order of STATE_NAMES (a tuple: 11 ints a pod, kept between passes);
    # None: a tcp file longer than READ_LIMIT
    states: tuple[int, ...] | None
    taken_at: float


# A container's row in FdSampler's table: fds, sockets, limit ratio, processes, taken at (NaN: None).
FD_COLUMNS = 5
FDS, SOCKETS, LIMIT_RATIO, PROCESSES, FD_TAKEN_AT = range(FD_COLUMNS)
# A pod's row: its STATE_NAMES counts (NaN each: a tcp file over the read limit), then taken at.
TCP_TAKEN_AT = len(STATE_NAMES)


def _none(x: float | None) -> float:
    return NAN if x is None else float(x)


def fd_row(count: FdCount) -> tuple[float, ...]:
    return (_none(count.fds), _none(count.sockets), _none(count.limit_ratio), float(count.processes), count.taken_at)


def tcp_row(reading: TcpReading) -> tuple[float, ...]:
    states = reading.states if reading.states is not None else (NAN,) * len(STATE_NAMES)
    return (*map(float, states), reading.taken_at)


@dataclass(frozen=True)
class FdSample:
    """What the collector serves: the latest reading of each target (a copy)."""

    containers: ReadingRows  # container id -> FD_COLUMNS numbers
    pods: ReadingRows  # sandbox id -> the states' counts and TCP_TAKEN_AT
    pending: int  # targets not read yet (new, or left out by the budget so far)
    last_pass_duration: float
    last_pass_entries: int
    cpu_seconds: float  # the passes' CPU so far (thread time)
    passes: int
    budget_exhausted: int  # passes cut short by the budget
    last_pass_at: float | None = None  # Unix time the last pass ended


@dataclass
class _Targets:
    containers: dict[str, str] = field(default_factory=dict)  # container id -> pod uid
    pods: dict[str, str] = field(default_factory=dict)  # sandbox id -> pod uid


class FdSampler:
    """Reads fds, sockets and TCP states every `interval` seconds, at most
    `budget` entries a pass; the collector sets the targets and reads `sample()`."""

    def __init__(self, hostfs: HostFS, cgroups: NodeCgroups, interval: float, budget: int,
                 tcp_limit: int = READ_LIMIT):
        self.hostfs = hostfs
        self.cgroups = cgroups
        self.interval = interval
        self.budget = budget
        self.tcp_limit = tcp_limit
        self._targets = _Targets()
        # The latest readings (7,500 targets at 5,000 containers): rows of one array each.
        self._fds = ReadingRows(FD_COLUMNS)
        self._tcp = ReadingRows(len(STATE_NAMES) + 1)
        self._lock = threading.Lock()
        self._pass_lock = threading.Lock()
        self._last_pass_at: float | None = None
        self._last_pass_wall: float | None = None
        self._last_duration = 0.0
        self._last_entries = 0
        self._cpu = 0.0
        self._passes = 0
        self._exhausted = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- the collector's side ----

    def set_targets(self, containers: dict[str, str], pods: dict[str, str]) -> None:
        """Containers (id -> pod uid) and pods (sandbox id -> pod uid) to read;
        readings of anything else are dropped. The first targets wake the thread."""
        with self._lock:
            first = not self._targets.containers and not self._targets.pods
            self._targets = _Targets(dict(containers), dict(pods))
            self._fds.keep(containers)
            self._tcp.keep(pods)
        if first and (containers or pods):
            self._wake.set()

    def sample(self) -> FdSample:
        """The latest readings. Never started (an Exporter used in-process, as
        tests and the benchmark's floor do): a pass runs here, at most once an interval."""
        if self._thread is None:
            with self._pass_lock:
                if self._last_pass_at is None or time.monotonic() - self._last_pass_at >= self.interval:
                    self.run_pass()
        with self._lock:
            t = self._targets
            pending = sum(1 for c in t.containers if c not in self._fds) + sum(1 for p in t.pods if p not in self._tcp)
            return FdSample(self._fds.copy(), self._tcp.copy(), pending, self._last_duration, self._last_entries,
                            self._cpu, self._passes, self._exhausted, self._last_pass_wall)

    # ---- one pass ----

    def run_pass(self) -> None:
        """Read the targets, least recently read first, until the budget is spent."""
        t0, cpu0 = time.monotonic(), time.thread_time()
        with self._lock:
            targets = self._targets
            fds, tcp = self._fds, self._tcp
            # Each kind's ids least recently read first, and their read times in
            # a C array: no (time, kind, id, uid) tuple and float a target (some
            # 0.7 MB at 5,000 containers held through every pass).
            containers = sorted(targets.containers, key=lambda c: fds.at(c, FD_TAKEN_AT) or 0.0)
            c_at = array("d", (fds.at(c, FD_TAKEN_AT) or 0.0 for c in containers))
            pods = sorted(targets.pods, key=lambda p: tcp.at(p, TCP_TAKEN_AT) or 0.0)
            p_at = array("d", (tcp.at(p, TCP_TAKEN_AT) or 0.0 for p in pods))
        spent, exhausted = 0, False
        for kind, object_id in _least_recent_first(containers, c_at, pods, p_at):
            if spent >= self.budget:
                exhausted = True
                break
            if kind == 0:
                count, cost = self.read_container(object_id, targets.containers[object_id])
                spent += cost
                if count is not None:
                    with self._lock:
                        if object_id in self._targets.containers:
                            self._fds.put(object_id, fd_row(count))
            else:
                reading, cost = self.read_pod(object_id, targets.pods[object_id])
                spent += cost
                if reading is not None:
                    with self._lock:
                        if object_id in self._targets.pods:
                            self._tcp.put(object_id, tcp_row(reading))
        with self._lock:
            self._last_pass_at = time.monotonic()
            self._last_pass_wall = time.time()
            self._last_duration = self._last_pass_at - t0
            self._last_entries = spent
            self._cpu += time.thread_time() - cpu0
            self._passes += 1
            self._exhausted += exhausted
        del containers, pods, c_at, p_at
        memory_tuning.release_freed_memory()  # the pass's freed heap back now, not at the next scrape's answer

    def pids(self, container_id: str, pod_uid: str) -> list[int] | None:
        """The processes of a container's cgroup; None: cgroup not found or gone."""
        return self.cgroups.procs(container_id, pod_uid)

    def read_container(self, container_id: str, pod_uid: str) -> tuple[FdCount | None, int]:
        """(its fds, sockets and limit ratio; None if its cgroup or processes are gone), and the entries read."""
        pids = self.pids(container_id, pod_uid)
        if pids is None:
            return None, 1
        proc = self.hostfs.path("/proc")
        fds: int | None = 0
        sockets: int | None = 0
        ratio: float | None = None
        entries, processes = 1, 0
        for pid in pids:
            fd_dir = f"{proc}/{pid}/fd"
            try:
                names = os.listdir(fd_dir)
            except (FileNotFoundError, ProcessLookupError):
                continue  # exited since cgroup.procs was read
            except OSError:
                fds = sockets = None  # not allowed (another uid, no CAP_DAC_READ_SEARCH)
                break
            processes += 1
            entries += len(names)
            fds = (fds or 0) + len(names)
            if sockets is not None:
                sockets = _count_sockets(fd_dir, names, sockets)
            limit = max_fds(self.hostfs, pid)
            if limit:
                ratio = max(ratio or 0.0, len(names) / limit)
        if processes == 0:
            return None, entries  # every process gone (the container is exiting), or /proc not the node's
        return FdCount(fds, sockets, ratio, processes, time.time()), entries

    def read_pod(self, sandbox_id: str, pod_uid: str) -> tuple[TcpReading | None, int]:
        """The pod's TCP sockets by state (None if its sandbox has no process), and the lines read."""
        pids = self.pids(sandbox_id, pod_uid)
        for pid in pids or ():  # the pause process first; another if it just went
            try:
                count = read_states(self.hostfs, pid, self.tcp_limit)
            except OSError:
                continue
            states = None if count.states is None else tuple(count.states[s] for s in STATE_NAMES)
            return TcpReading(states, time.time()), 1 + count.lines
        return None, 1

    # ---- the thread ----

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="container-fds", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.run_pass()
            except Exception:  # a failed pass must not end the thread (logged)
                log.exception("fd sampling pass failed")

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()


def _least_recent_first(containers: list[str], c_at: array, pods: list[str], p_at: array) -> Iterator[tuple[int, str]]:
    """(0, container id) and (1, sandbox id) merged by read time, oldest
    first, containers first among equals: one sort of both kinds together."""
    i = j = 0
    nc, np_ = len(containers), len(pods)
    while i < nc or j < np_:
        if j >= np_ or (i < nc and c_at[i] <= p_at[j]):
            yield 0, containers[i]
            i += 1
        else:
            yield 1, pods[j]
            j += 1


def _count_sockets(fd_dir: str, names: list[str], sockets: int) -> int | None:
    """`sockets` plus the sockets among the fds listed; None when a link cannot be read (no ptrace access)."""
    for name in names:
        try:
            if os.readlink(f"{fd_dir}/{name}").startswith("socket:"):
                sockets += 1
        except (FileNotFoundError, ProcessLookupError):
            continue  # closed, or the process exited, since the listing
        except OSError:
            return None
    return sockets
