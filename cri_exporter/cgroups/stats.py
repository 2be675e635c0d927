"""Plain values read from one cgroup. A field is None when the kernel did not
give it (file absent, controller not enabled, value garbled): never a fake 0.

Units are the kernel's where it has one (ns for CPU time, bytes, counts),
converted to ns where the kernel reports µs so that v1 and v2 look alike.
"""
from __future__ import annotations

from dataclasses import dataclass

# Read-only by convention, not frozen: a frozen dataclass costs five times as
# much to build, and a scrape of a busy node builds tens of thousands.


@dataclass(slots=True)
class CpuStats:
    usage_ns: int | None = None
    user_ns: int | None = None  # v2 cpu.stat user_usec; v1 cpuacct.stat user (USER_HZ ticks, so 10 ms steps)
    system_ns: int | None = None  # v2 cpu.stat system_usec; v1 cpuacct.stat system
    periods: int | None = None  # CFS enforcement periods that elapsed with runnable tasks
    throttled_periods: int | None = None
    throttled_ns: int | None = None
    quota_us: int | None = None  # None: no CFS quota ("max" / -1)
    period_us: int | None = None
    shares: int | None = None  # v1 cpu.shares
    weight: int | None = None  # v2 cpu.weight


@dataclass(slots=True)
class MemoryStats:
    usage_bytes: int | None = None
    limit_bytes: int | None = None  # None: unlimited
    working_set_bytes: int | None = None  # usage - inactive_file, floored at 0 (kubelet's formula)
    rss_bytes: int | None = None  # v1 total_rss, v2 anon
    cache_bytes: int | None = None  # v1 total_cache, v2 file
    active_file_bytes: int | None = None
    inactive_file_bytes: int | None = None
    mapped_file_bytes: int | None = None  # v1 total_mapped_file, v2 file_mapped
    swap_bytes: int | None = None  # v1 total_swap (swap accounting on), v2 memory.swap.current
    page_faults: int | None = None
    major_page_faults: int | None = None
    failcnt: int | None = None  # v1 memory.failcnt: times usage hit the limit
    oom_events: int | None = None  # v2 memory.events oom: times the OOM killer was invoked
    oom_kills: int | None = None  # v1 memory.oom_control oom_kill (>= 4.13), v2 memory.events oom_kill
    max_events: int | None = None  # v2 memory.events max: times usage was about to exceed memory.max
    high_events: int | None = None  # v2 memory.events high: times usage went over memory.high
    peak_bytes: int | None = None  # v1 memory.max_usage_in_bytes, v2 memory.peak (kernel >= 5.19)


@dataclass(slots=True)
class PsiTotals:
    """Cumulative stall time in µs (the `total=` field)."""

    some_us: int | None = None
    full_us: int | None = None


@dataclass(slots=True)
class PressureStats:
    cpu: PsiTotals | None = None
    memory: PsiTotals | None = None
    io: PsiTotals | None = None


@dataclass(slots=True)
class PidsStats:
    current: int | None = None  # tasks (threads included) in the cgroup
    limit: int | None = None  # None: "max"


@dataclass(slots=True)
class DeviceIO:
    device: str  # DEVNAME from /sys/dev/block/<maj:min>/uevent, else "maj:min"
    major_minor: str
    read_bytes: int | None = None
    write_bytes: int | None = None
    read_ops: int | None = None
    write_ops: int | None = None


@dataclass(slots=True)
class IoStats:
    devices: tuple[DeviceIO, ...] = ()


@dataclass(slots=True)
class Usage:
    """What the CRI collector serves live: the same values the kubelet computes."""

    cpu_usage_ns: int | None = None
    memory_usage_bytes: int | None = None
    memory_working_set_bytes: int | None = None
    memory_rss_bytes: int | None = None
    memory_swap_bytes: int | None = None
    memory_page_faults: int | None = None
    memory_major_page_faults: int | None = None


@dataclass(slots=True)
class CgroupStats:
    version: str
    cpu: CpuStats
    memory: MemoryStats
    pressure: PressureStats
    pids: PidsStats
    io: IoStats
