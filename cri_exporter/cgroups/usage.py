"""Live CPU and memory usage for the CRI collector's scrape-time values.

The values are the kubelet's (working set = usage - inactive file cache, rss
= v1 total_rss / v2 anon), so swapping the background CRI snapshot for these
readings changes freshness, not meaning. They come out of the same CgroupStats
the cgroup collector exports, so one scrape reads each cgroup's files once
for both collectors (ScrapeContext.shared).
"""
from __future__ import annotations

from array import array
from dataclasses import fields
from operator import attrgetter

from cri_exporter.cgroups.stats import CgroupStats, Usage

NAN = float("nan")

# Usage's fields in its order: the columns of a UsageRows row.
USAGE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Usage))
_MEMORY = attrgetter("usage_bytes", "working_set_bytes", "rss_bytes", "swap_bytes", "page_faults", "major_page_faults")


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


class UsageRows:
    """One scrape's live usage of every cgroup it reached, by container id or
    pod uid: a row of Usage's numbers (USAGE_FIELDS, NaN for None) in one C
    array of doubles, not a Usage and its ints a cgroup. Held from the reading
    until both collectors are done, 7,500 Usage objects with some 45,000 ints
    were 2.1 MB of a 5,000-container scrape's peak of small objects, the
    holes pymalloc keeps at rest. The values are served as doubles anyway
    (Family.values), so a row gives the same numbers the ints did.

    `index`: key -> the row's first place in `values`, or None where the
    cgroup was not found, went away or could not be read; a key not in it was
    not reached (the reading was cut short)."""

    __slots__ = ("index", "values")

    def __init__(self) -> None:
        self.index: dict[str, int | None] = {}
        self.values = array("d")

    def put(self, key: str, stats: CgroupStats | None) -> None:
        if stats is None:
            self.index[key] = None
            return
        values = self.values
        self.index[key] = len(values)
        values.append(NAN if (cpu := stats.cpu.usage_ns) is None else cpu)
        values.extend([NAN if v is None else v for v in _MEMORY(stats.memory)])

    def usage(self, key: str) -> Usage | None:
        """The row of `key` as a Usage (None if not read): for callers other than the scrape's loops."""
        at = self.index.get(key)
        if at is None:
            return None
        return Usage(*(None if v != v else int(v) for v in self.values[at:at + len(USAGE_FIELDS)]))

    def __contains__(self, key: object) -> bool:
        return key in self.index

    def __len__(self) -> int:
        return len(self.index)
