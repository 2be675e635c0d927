"""CPU: usage, CFS throttling and the configured quota / period / shares / weight.

v1 (Documentation/admin-guide/cgroup-v1/cpuacct.rst, scheduler/sched-bwc.rst):
    cpuacct.usage          total ns
    cpuacct.stat           user N / system N in USER_HZ ticks (sysconf
                           SC_CLK_TCK, 100 on every Linux build); sampled at
                           the tick, so user + system is near usage, not equal
    cpu.stat               nr_periods N / nr_throttled N / throttled_time <ns>
                           (+ nr_bursts, burst_time on >= 5.14)
    cpu.cfs_quota_us       -1 = no limit;  cpu.cfs_period_us;  cpu.shares
v2 (Documentation/admin-guide/cgroup-v2.rst):
    cpu.stat               usage_usec, user_usec, system_usec always;
                           nr_periods, nr_throttled, throttled_usec only while
                           the cpu controller is enabled for the cgroup
    cpu.max                "$MAX $PERIOD", $MAX "max" = no limit
    cpu.weight             1..10000, default 100
"""
from __future__ import annotations

import os

from cri_exporter.cgroups import files
from cri_exporter.cgroups.files import CgroupGone
from cri_exporter.cgroups.paths import CgroupPaths
from cri_exporter.cgroups.stats import CpuStats

# USER_HZ as userspace sees it (cpuacct.stat's unit); 100 everywhere, so a tick is a whole 10**7 ns.
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The cpu.stat keys used (files.keyed converts only these).
_V1_STAT_KEYS = ("nr_periods", "nr_throttled", "throttled_time")
_V2_STAT_KEYS = ("usage_usec", "user_usec", "system_usec", "nr_periods", "nr_throttled", "throttled_usec")


def read_cpu(paths: CgroupPaths, usage: bool = True) -> CpuStats | None:
    """CPU stats, or None if the cgroup is gone. `usage=False` skips cpuacct.usage on v1."""
    try:
        return _read_cpu(paths, usage)
    except CgroupGone:
        return None


def _read_cpu(paths: CgroupPaths, usage: bool = True, limits=files.UNKEPT) -> CpuStats:
    if paths.version == "v2":
        unified = paths.unified
        if unified is None:  # never: paths.py gives every v2 cgroup its tree's root
            raise CgroupGone(paths.relative)
        return _read_v2(unified, limits)
    return _read_v1(paths.dir("cpu"), paths.dir("cpuacct") if usage else None, limits)


def _read_v1(cpu: str | None, cpuacct: str | None, limits=files.UNKEPT) -> CpuStats:
    usage_ns = files.to_int(files.read(cpuacct, "cpuacct.usage"), "cpuacct.usage") if cpuacct else None
    acct = files.keyed(files.read(cpuacct, "cpuacct.stat"), ("user", "system"), "cpuacct.stat") if cpuacct else {}
    user_ns, system_ns = _ticks_to_ns(acct.get("user")), _ticks_to_ns(acct.get("system"))
    if cpu is None:
        return CpuStats(usage_ns=usage_ns, user_ns=user_ns, system_ns=system_ns)
    stat = files.keyed(files.read(cpu, "cpu.stat"), _V1_STAT_KEYS, "cpu.stat")
    return CpuStats(
        usage_ns=usage_ns,
        user_ns=user_ns,
        system_ns=system_ns,
        periods=stat.get("nr_periods"),
        throttled_periods=stat.get("nr_throttled"),
        throttled_ns=stat.get("throttled_time"),
        quota_us=limits.value(cpu, "cpu.cfs_quota_us", files.limit),
        period_us=limits.value(cpu, "cpu.cfs_period_us", files.to_int),
        shares=limits.value(cpu, "cpu.shares", files.to_int),
    )


def _read_v2(directory: str, limits=files.UNKEPT) -> CpuStats:
    stat = files.keyed(files.read(directory, "cpu.stat"), _V2_STAT_KEYS, "cpu.stat")
    quota, period = limits.value(directory, "cpu.max", _cpu_max)
    return CpuStats(
        usage_ns=_us_to_ns(stat.get("usage_usec")),
        user_ns=_us_to_ns(stat.get("user_usec")),
        system_ns=_us_to_ns(stat.get("system_usec")),
        periods=stat.get("nr_periods"),
        throttled_periods=stat.get("nr_throttled"),
        throttled_ns=_us_to_ns(stat.get("throttled_usec")),
        quota_us=quota,
        period_us=period,
        weight=limits.value(directory, "cpu.weight", files.to_int),
    )


def _cpu_max(text: str | None, path: str = "cpu.max") -> tuple[int | None, int | None]:
    """cpu.max is "$MAX $PERIOD"; a lone "$MAX" keeps the period unknown."""
    if text is None:
        return None, None
    parts = text.split()
    quota = files.limit(parts[0], "cpu.max") if parts else None
    period = files.to_int(parts[1], "cpu.max") if len(parts) > 1 else None
    return quota, period


def _us_to_ns(value: int | None) -> int | None:
    return None if value is None else value * 1000


def _ticks_to_ns(value: int | None) -> int | None:
    return None if value is None else value * 1_000_000_000 // CLK_TCK
