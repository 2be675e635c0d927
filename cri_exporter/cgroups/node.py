"""One node's cgroups: resolution cache, device names and readers together.

This is what collectors hold. The CRI collector and the cgroup collector can
share one instance (the resolution cache is then paid once); the methods are
safe to call from both collector threads at once.
"""
from __future__ import annotations

import os
import time

from cri_exporter.cgroups import files
from cri_exporter.cgroups.blkio import _read_io
from cri_exporter.cgroups.cpu import _read_cpu
from cri_exporter.cgroups.devices import DeviceNames
from cri_exporter.cgroups.files import CgroupGone, CgroupUnreadable
from cri_exporter.cgroups.layout import DEFAULT_ROOT, CgroupUnavailable, Layout
from cri_exporter.cgroups.memory import _read_memory
from cri_exporter.cgroups.paths import CgroupPaths, CgroupResolver
from cri_exporter.cgroups.pids import _read_pids
from cri_exporter.cgroups.pressure import _read_pressure
from cri_exporter.cgroups.stats import CgroupStats, CpuStats, IoStats, MemoryStats, PidsStats
from cri_exporter.hostfs import HostFS


# How long a cgroup's limit files are trusted without reading them (files.LimitFiles).
LIMITS_REFRESH_SECONDS = 60.0

# The parts of a cgroup reading, each its own files: what --metrics-allow /
# --metrics-deny can leave unread (collectors/cgroup_readings.Plan).
# cgroup.procs is read up to this much (about 100,000 pids).
PROCS_READ_LIMIT = 1024 * 1024

PARTS = frozenset({"cpu", "memory", "pids", "io", "pressure_cpu", "pressure_memory", "pressure_io"})


def read_all(paths: CgroupPaths, names: DeviceNames | None = None, keep_limits: bool = False,
             parts: frozenset[str] = PARTS) -> CgroupStats | None:
    """Every reader over one cgroup, each file read once; None if the cgroup is gone.
    Raises CgroupUnreadable at the first file it may not read: a reading with
    some files refused would pass for a whole one.

    `keep_limits`: the limit files' text may be up to about
    LIMITS_REFRESH_SECONDS old (paths kept across scrapes, see NodeCgroups).
    `parts`: only these are read (PARTS); the others' values stay unknown (None)."""
    limits = paths if keep_limits else files.UNKEPT  # the paths carry their limit files (paths.limits is paths)
    if keep_limits:
        paths.due(time.monotonic(), LIMITS_REFRESH_SECONDS)
    try:
        if parts is PARTS:
            return CgroupStats(
                version=paths.version,
                cpu=_read_cpu(paths, True, limits),
                memory=_read_memory(paths, limits),
                pressure=_read_pressure(paths),
                pids=_read_pids(paths, limits),
                io=_read_io(paths, names),
            )
        return CgroupStats(
            version=paths.version,
            cpu=_read_cpu(paths, True, limits) if "cpu" in parts else CpuStats(),
            memory=_read_memory(paths, limits) if "memory" in parts else MemoryStats(),
            pressure=_read_pressure(paths, {r for r in ("cpu", "memory", "io") if "pressure_" + r in parts}),
            pids=_read_pids(paths, limits) if "pids" in parts else PidsStats(),
            io=_read_io(paths, names) if "io" in parts else IoStats(),
        )
    except CgroupGone:
        return None


class NodeCgroups:
    def __init__(self, hostfs: HostFS, root: str = DEFAULT_ROOT, cgroup_root: str = "/"):
        self.hostfs = hostfs
        self.resolver = CgroupResolver(hostfs, root, cgroup_root)
        self.devices = DeviceNames(hostfs)

    def layout(self) -> Layout:
        """Detected layout; raises CgroupUnavailable if the root cannot be read."""
        return self.resolver.layout()

    def check(self) -> Layout:
        """Like layout(), and re-checks the root is still readable (one syscall)."""
        return self.resolver.check()

    def container_stats(self, container_id: str, pod_uid: str, parts: frozenset[str] = PARTS) -> CgroupStats | None:
        """The container's cgroup reading; None if no cgroup was found or it went
        away. Raises CgroupUnreadable when permission to read it is denied."""
        try:
            paths = self.resolver.container(container_id, pod_uid, strict=True)
        except CgroupUnavailable as err:
            _unavailable(err)
            return None
        if paths is None:
            return None
        stats = _read(paths, self.devices, parts)
        if stats is None:
            self.resolver.forget(container_id=container_id)
        return stats

    def procs(self, container_id: str, pod_uid: str, first: bool = False) -> list[int] | None:
        """The pids in a container's (or a sandbox's) cgroup.procs, in the
        file's order; `first`: only the first line is needed (a sandbox's pause
        process). None: no cgroup found, or it is gone (its path is forgotten,
        found again if it comes back). The one reader of cgroup.procs, for the
        pod network counters (podnet.py) and the fd sampler (container_fds.py)."""
        paths = self.resolver.container(container_id, pod_uid)
        directory = paths.procs_dir if paths is not None else None
        if directory is None:
            return None
        try:
            fd = os.open(os.path.join(directory, "cgroup.procs"), os.O_RDONLY | os.O_NONBLOCK)
            try:
                raw = os.read(fd, 64 if first else PROCS_READ_LIMIT)
            finally:
                os.close(fd)
        except OSError:
            self.resolver.forget(container_id=container_id)
            return None
        lines = raw.split(b"\n", 1)[:1] if first else raw.split()
        return [int(p) for p in lines if p.isdigit()]

    def pod_stats(self, pod_uid: str, parts: frozenset[str] = PARTS) -> CgroupStats | None:
        """As container_stats, for the pod's cgroup."""
        try:
            paths = self.resolver.pod(pod_uid, strict=True)
        except CgroupUnavailable as err:
            _unavailable(err)
            return None
        if paths is None:
            return None
        stats = _read(paths, self.devices, parts)
        if stats is None:
            self.resolver.forget(pod_uid=pod_uid)
        return stats


def _read(paths: CgroupPaths, devices: DeviceNames, parts: frozenset[str] = PARTS) -> CgroupStats | None:
    try:
        stats = read_all(paths, devices, keep_limits=True, parts=parts)
    except CgroupUnreadable as err:
        err.read_at = paths.read_at
        raise
    if stats is not None:
        paths.read_at = time.time()  # after the reading: no value in it is younger
    return stats


def _unavailable(err: CgroupUnavailable) -> None:
    """No layout to resolve with: a refused root makes every cgroup unreadable, a missing one absent."""
    if err.denied:
        raise CgroupUnreadable("the cgroup root", str(err)) from err
