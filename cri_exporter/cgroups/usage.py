"""Live CPU and memory usage for the CRI collector's scrape-time values.

Reads only what the CRI ContainerStats / PodStats fields need (v1: 3 files,
v2: 4), computing the values the way the kubelet does, so that swapping the
background CRI snapshot for these readings changes freshness, not meaning.
"""
from __future__ import annotations

from cri_exporter.cgroups import files
from cri_exporter.cgroups.files import CgroupGone
from cri_exporter.cgroups.memory import normalized_stat, working_set
from cri_exporter.cgroups.paths import CgroupPaths
from cri_exporter.cgroups.stats import Usage


def read_usage(paths: CgroupPaths) -> Usage | None:
    """CPU ns and memory usage / working set / rss / swap / faults; None if gone."""
    try:
        return _read_usage(paths)
    except CgroupGone:
        return None


def _read_usage(paths: CgroupPaths) -> Usage:
    if paths.version == "v2":
        d = paths.unified
        cpu = files.flat_keyed(files.read(d, "cpu.stat"), "cpu.stat").get("usage_usec")  # type: ignore[arg-type]
        cpu_ns = None if cpu is None else cpu * 1000
        mem_usage = files.to_int(files.read(d, "memory.current"), "memory.current")  # type: ignore[arg-type]
        stat = normalized_stat("v2", files.read(d, "memory.stat"))  # type: ignore[arg-type]
        swap = files.to_int(files.read(d, "memory.swap.current"), "memory.swap.current")  # type: ignore[arg-type]
    else:
        cpuacct, mem = paths.dir("cpuacct"), paths.dir("memory")
        cpu_ns = files.to_int(files.read(cpuacct, "cpuacct.usage"), "cpuacct.usage") if cpuacct else None
        mem_usage = files.to_int(files.read(mem, "memory.usage_in_bytes"), "memory.usage_in_bytes") if mem else None
        stat = normalized_stat("v1", files.read(mem, "memory.stat")) if mem else {}
        swap = stat.get("swap")
    return Usage(
        cpu_usage_ns=cpu_ns,
        memory_usage_bytes=mem_usage,
        memory_working_set_bytes=working_set(mem_usage, stat.get("inactive_file")),
        memory_rss_bytes=stat.get("rss"),
        memory_swap_bytes=swap,
        memory_page_faults=stat.get("pgfault"),
        memory_major_page_faults=stat.get("pgmajfault"),
    )
