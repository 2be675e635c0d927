"""Memory: usage, limit, working set, composition, and limit / OOM events.

v1 (Documentation/admin-guide/cgroup-v1/memory.rst):
    memory.usage_in_bytes, memory.limit_in_bytes (9223372036854771712 = no limit)
    memory.stat            local keys (rss, cache, ...) and hierarchical
                           total_* keys; total_* are used so a pod cgroup
                           counts its containers (a leaf has total_x == x).
                           swap / total_swap only with swap accounting.
    memory.failcnt         times usage hit the limit
    memory.max_usage_in_bytes  highest usage since the cgroup was made
    memory.oom_control     oom_kill_disable / under_oom / oom_kill (>= 4.13).
                           oom_kill counts kills of tasks in this cgroup only:
                           not hierarchical, so a pod cgroup shows 0 when its
                           container was killed (seen with containerd 1.6.20).
v2 (Documentation/admin-guide/cgroup-v2.rst):
    memory.current, memory.max ("max"), memory.swap.current
    memory.peak            highest memory.current since the cgroup was made
                           (kernel >= 5.19; absent before)
    memory.stat            anon, file, active_file, inactive_file, file_mapped,
                           pgfault, pgmajfault, ... (hierarchical)
    memory.events          low, high, max, oom, oom_kill (+ oom_group_kill);
                           hierarchical unless mounted with memory_localevents

Working set is the kubelet's (cadvisor's) formula: usage - inactive_file,
0 if inactive_file exceeds usage; v1 takes total_inactive_file.
"""
from __future__ import annotations

from cri_exporter.cgroups import files
from cri_exporter.cgroups.files import CgroupGone
from cri_exporter.cgroups.paths import CgroupPaths
from cri_exporter.cgroups.stats import MemoryStats

# normalized name -> (v1 memory.stat key, v2 memory.stat key)
_STAT_KEYS = {
    "rss": ("rss", "anon"),
    "cache": ("cache", "file"),
    "active_file": ("active_file", "active_file"),
    "inactive_file": ("inactive_file", "inactive_file"),
    "mapped_file": ("mapped_file", "file_mapped"),
    "swap": ("swap", None),
    "pgfault": ("pgfault", "pgfault"),
    "pgmajfault": ("pgmajfault", "pgmajfault"),
}


def read_memory(paths: CgroupPaths) -> MemoryStats | None:
    """Memory stats, or None if the cgroup is gone."""
    try:
        return _read_memory(paths)
    except CgroupGone:
        return None


def normalized_stat(version: str, text: str | None) -> dict[str, int]:
    """memory.stat under one naming for both versions (keys of _STAT_KEYS)."""
    raw = files.keyed_texts(text, "memory.stat")  # int() below for the 8 keys used, not the 40 lines
    out: dict[str, int] = {}
    for name, keys in _STAT_LOOKUP[version]:
        for key in keys:
            value = raw.get(key)
            if value is not None:
                out[name] = int(value)
                break
    return out


# normalized name -> the memory.stat keys to try, in order, made once (not a
# key string per lookup): v1 takes the hierarchical total_* (a pod cgroup
# counts its containers) and falls back to the local key; v2's keys are
# hierarchical already.
_STAT_LOOKUP = {
    "v1": tuple((name, (f"total_{v1}", v1)) for name, (v1, _) in _STAT_KEYS.items()),
    "v2": tuple((name, (v2,)) for name, (_, v2) in _STAT_KEYS.items() if v2),
}


# The keys used of v1 memory.oom_control and v2 memory.events.
_OOM_CONTROL_KEYS = ("oom_kill",)
_EVENTS_KEYS = ("oom", "oom_kill", "max", "high")


def working_set(usage: int | None, inactive_file: int | None) -> int | None:
    if usage is None or inactive_file is None:
        return None
    return usage - inactive_file if inactive_file < usage else 0


def _read_memory(paths: CgroupPaths, limits=files.UNKEPT) -> MemoryStats:
    if paths.version == "v2":
        unified = paths.unified
        if unified is None:  # never: paths.py gives every v2 cgroup its tree's root
            raise CgroupGone(paths.relative)
        return _read_v2(unified, limits)
    directory = paths.dir("memory")
    return _read_v1(directory, limits) if directory else MemoryStats()


def _read_v1(d: str, limits=files.UNKEPT) -> MemoryStats:
    usage = files.to_int(files.read(d, "memory.usage_in_bytes"), "memory.usage_in_bytes")
    stat = normalized_stat("v1", files.read(d, "memory.stat"))
    oom = files.keyed(files.read(d, "memory.oom_control"), _OOM_CONTROL_KEYS, "memory.oom_control")
    return MemoryStats(
        usage_bytes=usage,
        limit_bytes=limits.value(d, "memory.limit_in_bytes", files.limit),
        working_set_bytes=working_set(usage, stat.get("inactive_file")),
        rss_bytes=stat.get("rss"),
        cache_bytes=stat.get("cache"),
        active_file_bytes=stat.get("active_file"),
        inactive_file_bytes=stat.get("inactive_file"),
        mapped_file_bytes=stat.get("mapped_file"),
        swap_bytes=stat.get("swap"),
        page_faults=stat.get("pgfault"),
        major_page_faults=stat.get("pgmajfault"),
        failcnt=files.to_int(files.read(d, "memory.failcnt"), "memory.failcnt"),
        oom_kills=oom.get("oom_kill"),
        peak_bytes=files.to_int(files.read(d, "memory.max_usage_in_bytes"), "memory.max_usage_in_bytes"),
    )


def _read_v2(d: str, limits=files.UNKEPT) -> MemoryStats:
    usage = files.to_int(files.read(d, "memory.current"), "memory.current")
    stat = normalized_stat("v2", files.read(d, "memory.stat"))
    events = files.keyed(files.read(d, "memory.events"), _EVENTS_KEYS, "memory.events")
    return MemoryStats(
        usage_bytes=usage,
        limit_bytes=limits.value(d, "memory.max", files.limit),
        working_set_bytes=working_set(usage, stat.get("inactive_file")),
        rss_bytes=stat.get("rss"),
        cache_bytes=stat.get("cache"),
        active_file_bytes=stat.get("active_file"),
        inactive_file_bytes=stat.get("inactive_file"),
        mapped_file_bytes=stat.get("mapped_file"),
        swap_bytes=files.to_int(files.read(d, "memory.swap.current"), "memory.swap.current"),
        page_faults=stat.get("pgfault"),
        major_page_faults=stat.get("pgmajfault"),
        oom_events=events.get("oom"),
        oom_kills=events.get("oom_kill"),
        max_events=events.get("max"),
        high_events=events.get("high"),
        peak_bytes=files.to_int(files.read(d, "memory.peak"), "memory.peak"),
    )
