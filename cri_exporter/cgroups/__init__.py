"""cgroup readers: the only package that knows v1 from v2 and cgroupfs from systemd.

Readers return plain dataclasses (stats.py); collectors turn them into
metrics. Start from `NodeCgroups(hostfs)`; the per-resource readers
(`read_cpu`, `read_memory`, ...) take a `CgroupPaths` from the resolver.
"""
from cri_exporter.cgroups.blkio import read_io
from cri_exporter.cgroups.cpu import read_cpu
from cri_exporter.cgroups.devices import DeviceNames
from cri_exporter.cgroups.files import CgroupGone, CgroupUnreadable
from cri_exporter.cgroups.layout import CGROUPFS, SYSTEMD, UNKNOWN, CgroupUnavailable, Layout, detect
from cri_exporter.cgroups.memory import read_memory
from cri_exporter.cgroups.node import NodeCgroups, read_all
from cri_exporter.cgroups.paths import CgroupPaths, CgroupResolver
from cri_exporter.cgroups.pids import read_pids
from cri_exporter.cgroups.pressure import read_pressure
from cri_exporter.cgroups.stats import (
    CgroupStats,
    CpuStats,
    DeviceIO,
    IoStats,
    MemoryStats,
    PidsStats,
    PressureStats,
    PsiTotals,
    Usage,
)
from cri_exporter.cgroups.usage import USAGE_FIELDS, UsageRows, usage_from

__all__ = [
    "CGROUPFS", "SYSTEMD", "UNKNOWN", "CgroupGone", "CgroupPaths", "CgroupResolver", "CgroupStats",
    "CgroupUnavailable", "CgroupUnreadable", "CpuStats", "DeviceIO", "DeviceNames", "IoStats", "Layout", "MemoryStats",
    "NodeCgroups", "PidsStats", "PressureStats", "PsiTotals", "USAGE_FIELDS", "Usage", "UsageRows", "detect", "read_all", "read_cpu",
    "read_io", "read_memory", "read_pids", "read_pressure", "usage_from",
]
