"""Live CPU and memory usage for the CRI collector's scrape-time values.

The values are the kubelet's (working set = usage - inactive file cache, rss
= v1 total_rss / v2 anon), so swapping the background CRI snapshot for these
readings changes freshness, not meaning. They come out of the same CgroupStats
the cgroup collector exports, so one scrape reads each cgroup's files once
for both collectors (ScrapeContext.shared).
"""
from __future__ import annotations

from cri_exporter.cgroups.stats import CgroupStats, Usage


def usage_from(stats: CgroupStats) -> Usage:
    m = stats.memory
    return Usage(
        cpu_usage_ns=stats.cpu.usage_ns,
        memory_usage_bytes=m.usage_bytes,
        memory_working_set_bytes=m.working_set_bytes,
        memory_rss_bytes=m.rss_bytes,
        memory_swap_bytes=m.swap_bytes,
        memory_page_faults=m.page_faults,
        memory_major_page_faults=m.major_page_faults,
    )

