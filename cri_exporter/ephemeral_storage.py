"""Pods' ephemeral storage on the node's filesystem, measured the way the
kubelet measures it for eviction, off the scrape path.

What the kubelet counts against a pod (pkg/kubelet/eviction/helpers.go,
podLocalEphemeralStorageUsage; 1.2x-1.3x): its containers' writable layers
(the runtime reports those: cri_container_writable_layer_*), its container
logs under the pod's log directory (`podLogsDirectory`, default
/var/log/pods, `<namespace>_<pod>_<uid>/`), and its local volumes, of which
emptyDirs are the ones that grow: `<root-dir>/pods/<uid>/volumes/
kubernetes.io~empty-dir/<volume>/`. An emptyDir with `medium: Memory` is
left out (localVolumeNames: `EmptyDir.Medium != StorageMediumMemory`): it is
a tmpfs mounted on that directory and counts as the pod's memory. CRI does
not carry the pod spec, so a memory (or hugepages) emptyDir is told by what
the kubelet left on disk: its directory is a mount point, on another device
than the directory holding it.

How bytes are counted (pkg/volume/util/fs/fs_unix.go, DiskUsage, kubelet
1.27-1.36, where no project quota knows the directory): a walk of lstat()s,
the top directory included, `st_blocks * 512` per entry (allocated blocks, as
`du` counts them, not apparent size: a sparse file counts what it holds, a
directory its blocks), one inode per entry, a file with several hard links
counted once, nothing on another device descended into, symlinks never
followed. A file deleted while the walk runs is skipped.

Cost control: a walk of every pod runs every --ephemeral-storage-interval
(60 s, the kubelet's own --volume-stats-agg-period) in a thread of its own,
paced to --ephemeral-storage-files-per-second. A walk longer than the
interval goes on (the next starts when it ends, it never restarts), and each
pod's numbers are published as soon as that pod is done, with the time they
were taken. Memory stays bounded with millions of files: directories are
read as streams (os.scandir), at most MAX_DEPTH deep, and the hard-link
table holds at most MAX_LINKED inodes per directory tree.

Confinement: every directory is opened relative to its parent's descriptor
with O_NOFOLLOW, from a top resolved inside --host-root (HostFS), so neither
a symlink planted in a pod's volume nor one swapped in mid-walk leads out.

Project quotas: an emptyDir the kubelet gave a project ID (its
LocalStorageCapacityIsolationFSQuotaMonitoring) is read from the quota instead
of walked where the agent may (project_quota.py: CAP_SYS_ADMIN, an opt-in);
each volume's method and the reason it was walked are kept for the metrics.
"""
from __future__ import annotations

import os
import stat
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable

import structlog

from cri_exporter import memory_tuning
from cri_exporter.confined_read import DeniedByConfinement
from cri_exporter.hostfs import HostFS
from cri_exporter.project_quota import ERROR as QUOTA_ERROR
from cri_exporter.project_quota import QUOTA, WALK, ProjectQuotaReader

log = structlog.get_logger(__name__)

DEFAULT_ROOT_DIR = "/var/lib/kubelet"  # the kubelet's --root-dir default
DEFAULT_POD_LOGS_DIR = "/var/log/pods"  # KubeletConfiguration podLogsDirectory default (1.29+)
EMPTY_DIR = "kubernetes.io~empty-dir"
BLOCK = 512  # st_blocks unit (stat(2)), as DiskUsage multiplies
MAX_DEPTH = 64  # open directories per walk (two descriptors each)
MAX_LINKED = 10_000  # hard-linked inodes remembered per tree, then counted again
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK

# Error reasons (cri_ephemeral_storage_walk_errors_total{reason}).
PERMISSION = "permission"
VANISHED = "vanished"
TOO_DEEP = "too_deep"
OTHER = "other"
REASONS = (PERMISSION, VANISHED, TOO_DEEP, OTHER)


@dataclass(slots=True)
class Usage:
    bytes: int = 0
    inodes: int = 0
    # An emptyDir's (QUOTA or WALK, why it was walked; "" when read from its project quota), kept here
    # rather than in a second dict a pod (some 200 bytes a pod); not part of the usage compared.
    method: tuple[str, str] | None = field(default=None, compare=False)


@dataclass(slots=True)
class PodUsage:
    """One pod's walked usage; `measured_at`: when its walk ended (Unix time)."""

    uid: str
    emptydirs: Mapping[str, Usage] = field(default_factory=dict)
    logs: Usage | None = None  # None: no log directory for it
    measured_at: float = 0.0

    @property
    def emptydir_method(self) -> dict[str, tuple[str, str]]:
        """volume -> (QUOTA or WALK, why it was walked; "" when read from its project quota)."""
        return {name: u.method for name, u in self.emptydirs.items() if u.method is not None}


# A pod without emptyDirs (most): one shared empty mapping, not a dict of its own each (64 bytes a pod).
_NO_VOLUMES: Mapping[str, Usage] = MappingProxyType({})

# The few (method, reason) pairs, one tuple each for every pod's volumes (56 bytes a volume otherwise).
_METHODS: dict[tuple[str, str], tuple[str, str]] = {}


def _method(method: str, reason: str) -> tuple[str, str]:
    pair = (method, reason)
    return _METHODS.setdefault(pair, pair)


@dataclass(frozen=True, slots=True)
class FsHeadroom:
    """One eviction signal on one filesystem: the threshold as an absolute
    amount and what is available above it (negative: the kubelet evicts)."""

    signal: str  # nodefs.available, nodefs.inodesFree, imagefs.available, imagefs.inodesFree
    path: str  # host path statvfs'd
    threshold: float
    available: float
    where: str  # where the threshold came from

    @property
    def headroom(self) -> float:
        return self.available - self.threshold


def threshold_amount(limit: str, capacity: float) -> float | None:
    """The kubelet's getThresholdQuantity: a percentage of capacity, or a quantity."""
    from cri_exporter.doctor.facts.quantity import parse_quantity

    limit = limit.strip()
    if limit.endswith("%"):
        try:
            return capacity * float(limit[:-1]) / 100.0
        except ValueError:
            return None
    return parse_quantity(limit)


def _same_usage(before: Usage | None, now: Usage | None) -> Usage | None:
    """The last walk's Usage where this walk measured the same (method
    included): an unchanged pod then keeps its objects instead of a new Usage
    and its ints each walk, made among the scrapes' temporaries and kept."""
    if before is not None and now is not None and before == now and before.method == now.method:
        return before
    return now


def _same_volumes(before: Mapping[str, Usage] | None, now: Mapping[str, Usage]) -> Mapping[str, Usage]:
    """As _same_usage, for a pod's emptyDirs."""
    if before is not None and before == now and all(u.method == before[name].method for name, u in now.items()):
        return before
    return now


class Pacer:
    """Holds a walk to `rate` entries a second (0: unpaced), sleeping on `stop`."""

    def __init__(self, rate: float, stop: threading.Event):
        self.rate = rate
        self.stop = stop
        self.started = time.monotonic()
        self.done = 0

    def restart(self) -> None:
        self.started, self.done = time.monotonic(), 0

    def tick(self, n: int = 1) -> None:
        self.done += n
        if self.rate <= 0 or self.done % 64:
            return
        ahead = self.done / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            self.stop.wait(ahead)


class WalkCounters:
    """The walker's own cost, over the exporter's life."""

    def __init__(self) -> None:
        self.files = 0
        self.errors = dict.fromkeys(REASONS, 0)
        self.cpu_seconds = 0.0
        self.walks = 0
        self.last_completed_at: float | None = None
        self.last_duration: float | None = None
        self.last_walk_files = 0  # entries the last complete walk visited


class TreeWalker:
    """du of directory trees, the kubelet's DiskUsage way, paced and confined."""

    def __init__(self, pacer: Pacer, counters: WalkCounters):
        self.pacer = pacer
        self.counters = counters

    def _error(self, err: OSError | None, reason: str | None = None) -> None:
        if reason is None:
            if isinstance(err, FileNotFoundError | NotADirectoryError):
                reason = VANISHED
            elif isinstance(err, PermissionError):
                reason = PERMISSION
            else:
                reason = OTHER
        self.counters.errors[reason] += 1

    def usage(self, local_path: str, top_dev: int | None = None) -> Usage | None:
        """Usage of the tree at `local_path` (already confined by HostFS);
        None when its top cannot be opened, or is on another device than
        `top_dev` (a mount: memory or hugepages emptyDir)."""
        try:
            top = os.open(local_path, _DIR_FLAGS)
        except OSError as err:
            self._error(err)
            return None
        try:
            st = os.fstat(top)
        except OSError as err:
            os.close(top)
            self._error(err)
            return None
        if top_dev is not None and st.st_dev != top_dev:
            os.close(top)
            return None
        return self._walk(top, st)

    def _walk(self, top: int, top_st: os.stat_result) -> Usage:
        dev = top_st.st_dev
        used = Usage(top_st.st_blocks * BLOCK, 1)
        linked: set[int] = set()
        counters = self.counters
        stack: list[tuple[int, Any]] = []  # (directory fd, its os.scandir stream)
        try:
            stack.append((top, os.scandir(top)))
        except OSError as err:
            os.close(top)
            self._error(err)
            return used
        while stack:
            fd, entries = stack[-1]
            try:
                entry = next(entries)
            except StopIteration:
                entries.close()
                os.close(fd)
                stack.pop()
                continue
            except OSError as err:
                self._error(err)
                entries.close()
                os.close(fd)
                stack.pop()
                continue
            counters.files += 1
            self.pacer.tick()
            if self.pacer.stop.is_set():
                break
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as err:
                self._error(err)
                continue
            if st.st_dev != dev:
                continue  # DiskUsage: SkipDir for anything on another device
            is_dir = stat.S_ISDIR(st.st_mode)
            if st.st_nlink > 1 and not is_dir:
                if st.st_ino in linked:
                    continue
                if len(linked) < MAX_LINKED:
                    linked.add(st.st_ino)
            used.bytes += st.st_blocks * BLOCK
            used.inodes += 1
            if not is_dir:
                continue
            if len(stack) >= MAX_DEPTH:
                self._error(None, TOO_DEEP)
                continue
            try:
                child = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
            except OSError as err:
                self._error(err)
                continue
            try:
                stack.append((child, os.scandir(child)))
            except OSError as err:
                os.close(child)
                self._error(err)
        for fd, entries in stack:  # stopped mid-walk
            entries.close()
            os.close(fd)
        return used


@dataclass(frozen=True, slots=True)
class KubeletPaths:
    root_dir: str
    pod_logs_dir: str
    eviction: dict[str, str]
    eviction_where: str


def kubelet_paths(hostfs: HostFS) -> KubeletPaths:
    """The kubelet's root and log directories and hard eviction thresholds,
    from its effective flags and config as the doctor reads them
    (doctor/facts/kubelet.py): --root-dir is a flag only; podLogsDirectory a
    config field (1.29+). Defaults where no kubelet is found."""
    from cri_exporter.doctor.facts import kubelet, procfs

    try:
        settings = kubelet.load(hostfs, None, procfs.find_processes(hostfs, ("kubelet",)))
    except DeniedByConfinement:
        raise  # the walker keeps the paths it read before (walk_once)
    except Exception as err:  # noqa: BLE001 -- a config the facts cannot read leaves the defaults
        log.warning("kubelet settings unreadable, using its defaults", error=str(err))
        settings = kubelet.KubeletSettings()
    root = settings.flags.get("root-dir") or DEFAULT_ROOT_DIR
    logs, _ = settings.value("podLogsDirectory", DEFAULT_POD_LOGS_DIR)
    thresholds, where = settings.eviction_hard()
    return KubeletPaths(root, str(logs or DEFAULT_POD_LOGS_DIR), thresholds, where)


@dataclass
class EphemeralSample:
    pods: dict[str, PodUsage]  # pod uid -> usage
    headroom: list[FsHeadroom]
    paths: KubeletPaths | None


class EphemeralStorageWalker:
    """Walks every pod's emptyDirs and log directory on an interval (a thread
    of its own), and reads the eviction headroom of nodefs and imagefs.

    `imagefs_mounts`: the runtime's image filesystem mount points (CRI
    ImageFsInfo, what the kubelet's CRI stats provider reads them from), or
    [] when the runtime does not answer."""

    def __init__(self, hostfs: HostFS, interval: float, files_per_second: float,
                 imagefs_mounts: Callable[[], list[str]] | None = None,
                 paths: Callable[[HostFS], KubeletPaths] = kubelet_paths,
                 quotas: ProjectQuotaReader | None = None):
        self.hostfs = hostfs
        self.quotas = quotas if quotas is not None else ProjectQuotaReader()
        self.interval = interval
        self.imagefs_mounts = imagefs_mounts or (lambda: [])
        self.find_paths = paths
        self._stop = threading.Event()
        self.counters = WalkCounters()
        self.pacer = Pacer(files_per_second, self._stop)
        self.walker = TreeWalker(self.pacer, self.counters)
        self._lock = threading.Lock()
        self._pods: dict[str, PodUsage] = {}
        self.headroom: list[FsHeadroom] = []
        self.paths: KubeletPaths | None = None
        self.last_error: str | None = None
        self.first = threading.Event()  # the first headroom reading is in
        self._thread: threading.Thread | None = None
        self._cpu_mark = 0.0

    # -- what the collector reads
    def sample(self) -> EphemeralSample:
        with self._lock:
            return EphemeralSample(dict(self._pods), list(self.headroom), self.paths)

    # -- the walk
    def walk_once(self) -> None:
        """One walk of every pod; pods gone from disk are forgotten at its end."""
        started = time.time()
        self._cpu_mark = time.thread_time()
        files0 = self.counters.files
        self.pacer.restart()
        try:
            try:
                paths = self.find_paths(self.hostfs)
            except DeniedByConfinement as err:  # replaced since serve started: what was read before still holds
                if self.paths is None:
                    raise
                log.info("kubelet paths kept from the last read", reason=str(err))
                paths = self.paths
            with self._lock:
                self.paths = paths
            self._read_headroom(paths)
            self.first.set()
            logs_local, logs = self._log_dirs(paths.pod_logs_dir)
            uids = self._pod_uids(paths.root_dir)
            seen = set()
            for uid in sorted(set(uids) | set(logs)):
                if self._stop.is_set():
                    return
                seen.add(uid)
                usage = PodUsage(uid, _NO_VOLUMES)
                before = self._pods.get(uid)
                if uid in uids:
                    usage.emptydirs = _same_volumes(before.emptydirs if before else None,
                                                    self._emptydirs(paths.root_dir, uid))
                if uid in logs:
                    usage.logs = _same_usage(before.logs if before else None,
                                          self.walker.usage(os.path.join(logs_local, logs[uid])))
                usage.measured_at = time.time()
                with self._lock:
                    self._pods[uid] = usage
                self._account_cpu()  # pod by pod: a walk of minutes shows its cost as it goes
            with self._lock:
                for gone in set(self._pods) - seen:
                    del self._pods[gone]
            self.counters.last_walk_files = self.counters.files - files0
            self.counters.walks += 1
            self.counters.last_completed_at = time.time()
            self.counters.last_duration = self.counters.last_completed_at - started
            self.last_error = None
        except Exception as err:  # noqa: BLE001 -- a walk that fails must not end the thread
            self.last_error = f"{type(err).__name__}: {err}"
            log.warning("ephemeral storage walk failed", error=self.last_error)
        finally:
            self._account_cpu()
            self.first.set()
            memory_tuning.release_freed_memory()  # the walk's freed heap back now, not at the next scrape's answer

    def _account_cpu(self) -> None:
        now = time.thread_time()
        self.counters.cpu_seconds += now - self._cpu_mark
        self._cpu_mark = now

    def _local(self, host_path: str) -> str | None:
        try:
            return self.hostfs.path(host_path)
        except OSError:
            return None

    def _names(self, host_path: str) -> tuple[str, list[str]]:
        """The local path of `host_path` and the names of the directories in it,
        none followed through a link (no names when it cannot be listed)."""
        local = self._local(host_path)
        if local is None or not os.path.isdir(local):
            return "", []
        out = []
        try:
            with os.scandir(local) as entries:
                for e in entries:
                    self.counters.files += 1
                    self.pacer.tick()
                    if e.is_dir(follow_symlinks=False):
                        out.append(e.name)
        except OSError as err:
            self.walker._error(err)
        return local, out

    def _list(self, host_path: str) -> list[tuple[str, str]]:
        """(name, local path) of the directories in `host_path`, none followed through a link.
        Names interned: a volume's few names are kept between walks."""
        local, names = self._names(host_path)
        return [(name, os.path.join(local, name)) for name in map(sys.intern, names)]

    def _pod_uids(self, root_dir: str) -> set[str]:
        # Interned: the scrapes' inventory holds the same uids, interned by the CRI client.
        return set(map(sys.intern, self._names(f"{root_dir}/pods")[1]))

    def _log_dirs(self, logs_dir: str) -> tuple[str, dict[str, str]]:
        """The local logs directory and uid -> the name of `<namespace>_<pod>_<uid>`
        in it (neither name may hold `_`). The name is not interned (only the
        uid, the CRI client's): it lives for the walk, and each interned string
        takes a slot of the interpreter's table until it is next resized (1.9 MB
        at 2^17 slots); nor joined to its path until walked (0.37 MB of paths
        held through a walk of 2,500 pods)."""
        local, names = self._names(logs_dir)
        out = {}
        for name in names:
            parts = name.split("_")
            if len(parts) == 3 and parts[2]:
                out[sys.intern(parts[2])] = name
        return local, out

    def _emptydirs(self, root_dir: str, uid: str) -> Mapping[str, Usage]:
        plugin = f"{root_dir}/pods/{uid}/volumes/{EMPTY_DIR}"
        local = self._local(plugin)
        if local is None:
            return _NO_VOLUMES
        try:
            dev = os.lstat(local).st_dev
        except OSError:
            return _NO_VOLUMES  # a pod without emptyDirs
        out = {}
        volumes = self._list(plugin)
        from_quota, why = self.quotas.read_pod(volumes, dev)
        for name, path in volumes:
            if name in from_quota:
                out[name] = Usage(from_quota[name].bytes, from_quota[name].inodes, _method(QUOTA, ""))
                continue
            used = self.walker.usage(path, top_dev=dev)
            if used is not None:
                used.method = _method(WALK, why.get(name, QUOTA_ERROR))
                out[name] = used
        return out or _NO_VOLUMES

    def _read_headroom(self, paths: KubeletPaths) -> None:
        found: list[FsHeadroom] = []
        try:
            mounts = self.imagefs_mounts()
        except Exception as err:  # noqa: BLE001 -- the runtime not answering leaves imagefs out
            log.info("imagefs mount unknown", error=str(err))
            mounts = []
        for kind, path in (("nodefs", paths.root_dir), ("imagefs", mounts[0] if mounts else None)):
            if not path:
                continue
            local = self._local(path)
            if local is None:
                continue
            try:
                st = os.statvfs(local)
            except OSError:
                continue
            # As cadvisor reports them to the eviction manager: Available
            # (bavail * frsize) of Capacity (blocks * frsize); InodesFree (ffree) of Inodes (files).
            for signal, available, capacity in (
                (f"{kind}.available", st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize),
                (f"{kind}.inodesFree", st.f_ffree, st.f_files),
            ):
                limit = paths.eviction.get(signal)
                amount = threshold_amount(limit, capacity) if limit else None
                if amount is None or not capacity:
                    continue
                found.append(FsHeadroom(signal, path, amount, float(available), paths.eviction_where))
        with self._lock:
            self.headroom = found

    # -- the thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="ephemeral-storage", daemon=True)
        self._thread.start()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def _loop(self) -> None:
        while not self._stop.is_set():
            begun = time.monotonic()
            self.walk_once()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - begun)))

    def stop(self) -> None:
        self._stop.set()
