"""Rows of `top`: two Readings of the same counters made into rates, per container
or per pod, filtered and sorted.

A value is None when it is not known (no second reading yet, a counter the
source does not give, a container that is not running): shown as "-" and
sorted last, never as a zero.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Callable, Iterable

from cri_exporter.cgroups import CgroupStats
from cri_exporter.cri import model
from cri_exporter.top.sampler import Reading, Source

PSI_RESOURCES = ("cpu", "memory", "io")


@dataclass(slots=True)
class Row:
    kind: str  # "container" | "pod"
    namespace: str
    pod: str
    container: str | None  # None for a pod row
    id: str  # container id, or the pod sandbox id
    state: str  # running, exited, created, unknown; ready, notready
    time: float | None = None  # wall clock of the (latest) reading
    source: str | None = None  # "cgroup" | "cri" | None (not running: nothing read)
    reason: str | None = None  # why the cgroup was not read (sampler.Source.reason)
    note: str | None = None  # the same in words
    window_seconds: float | None = None
    cpu_usage_seconds: float | None = None  # the cumulative counter at `time`
    cpu_cores: float | None = None
    cpu_limit_cores: float | None = None
    cpu_throttled_ratio: float | None = None  # share of CFS periods throttled in the window
    memory_working_set_bytes: int | None = None
    memory_limit_bytes: int | None = None
    oom_kills: int | None = None
    oom_kills_at_least: bool = False  # the cgroup's count is unknown: `oom_kills` is what CRI proves
    restarts: int | None = None
    last_terminated_reason: str | None = None
    pressure: dict[str, float | None] | None = None  # resource -> share of the window some task stalled

    @property
    def cpu_limit_ratio(self) -> float | None:
        return _ratio(self.cpu_cores, self.cpu_limit_cores)

    @property
    def memory_limit_ratio(self) -> float | None:
        return _ratio(self.memory_working_set_bytes, self.memory_limit_bytes)

    @property
    def pressure_max(self) -> float | None:
        known = [v for v in (self.pressure or {}).values() if v is not None]
        return max(known) if known else None


def _ratio(value: float | int | None, limit: float | int | None) -> float | None:
    return None if value is None or not limit else value / limit


def container_rows(before: Reading | None, now: Reading) -> list[Row]:
    """One row per container identity, the instance that speaks for it (inventory.py)."""
    inv = now.inventory
    if inv is None:
        return []
    rows = []
    for ident, c in inv.current_containers.items():
        row = Row("container", ident.namespace, ident.pod, ident.container, c.id, c.state, restarts=c.attempt)
        src = now.containers.get(c.id)
        if src is not None:
            _fill(row, before.containers.get(c.id) if before else None, src)
        _add_last_exit(row, now.last_exits.get(ident))
        rows.append(row)
    return rows


def pod_rows(before: Reading | None, now: Reading) -> list[Row]:
    """One row per pod identity, from the pod's cgroup; restarts, OOM kills and
    throttling also from its containers' rows."""
    inv = now.inventory
    if inv is None:
        return []
    by_pod: dict[tuple[str, str], list[Row]] = {}
    for row in container_rows(before, now):
        by_pod.setdefault((row.namespace, row.pod), []).append(row)
    rows = []
    for ident, p in inv.current_pods.items():
        row = Row("pod", ident.namespace, ident.pod, None, p.id, p.state)
        src = now.pods.get(p.k8s_uid)
        if src is not None:
            _fill(row, before.pods.get(p.k8s_uid) if before else None, src)
        _roll_up(row, by_pod.get((ident.namespace, ident.pod), []), now.cgroup_version)
        rows.append(row)
    return rows


def _roll_up(row: Row, containers: list[Row], cgroup_version: str | None) -> None:
    row.restarts = sum(r.restarts or 0 for r in containers)
    throttled = [r.cpu_throttled_ratio for r in containers if r.cpu_throttled_ratio is not None]
    if throttled:  # the worst container's: a pod cgroup without a quota of its own is never throttled itself
        row.cpu_throttled_ratio = max([*throttled, row.cpu_throttled_ratio or 0.0])
    # No limit on the pod's cgroup (a kubelet sets one when every container has
    # one; a runtime alone does not): the sum of its running containers' limits.
    running = [r for r in containers if r.state == "running"]
    if row.cpu_limit_cores is None and running and all(r.cpu_limit_cores is not None for r in running):
        row.cpu_limit_cores = sum(r.cpu_limit_cores or 0.0 for r in running)
    if row.memory_limit_bytes is None and running and all(r.memory_limit_bytes is not None for r in running):
        row.memory_limit_bytes = sum(r.memory_limit_bytes or 0 for r in running)
    # v2's pod cgroup counts its containers' OOM kills, restarted ones' too;
    # v1's counts only tasks directly in it (seen with containerd 1.6.20).
    if cgroup_version == "v2" and row.oom_kills is not None:
        return
    known = [r.oom_kills for r in containers if r.oom_kills is not None]
    row.oom_kills = sum(known) if known else None
    row.oom_kills_at_least = bool(known) and any(
        r.oom_kills_at_least or (r.oom_kills is None and r.state == "running") for r in containers)


def _fill(row: Row, before: Source | None, now: Source) -> None:
    row.time, row.reason, row.note = now.wall, now.reason, now.note
    same_kind = before is not None and (before.cgroup is None) == (now.cgroup is None)
    if before is not None and same_kind:
        row.window_seconds = now.mono - before.mono
    if now.cgroup is not None:
        row.source = "cgroup"
        _from_cgroup(row, before.cgroup if before is not None and same_kind else None, now.cgroup)
    else:
        row.source = "cri"
        row.memory_working_set_bytes = now.cri_working_set
        if now.cri_cpu_ns is not None:
            row.cpu_usage_seconds = now.cri_cpu_ns / 1e9
            if before is not None and same_kind and before.cri_cpu_ns is not None:
                row.cpu_cores = _rate(before.cri_cpu_ns, now.cri_cpu_ns, row.window_seconds, 1e9)


def _from_cgroup(row: Row, before: CgroupStats | None, now: CgroupStats) -> None:
    cpu, mem = now.cpu, now.memory
    if cpu.usage_ns is not None:
        row.cpu_usage_seconds = cpu.usage_ns / 1e9
    if cpu.quota_us is not None and cpu.period_us:
        row.cpu_limit_cores = cpu.quota_us / cpu.period_us
    row.memory_working_set_bytes = mem.working_set_bytes
    row.memory_limit_bytes = mem.limit_bytes
    row.oom_kills = mem.oom_kills
    row.pressure = {r: None for r in PSI_RESOURCES}
    if before is None:
        return
    window = row.window_seconds
    row.cpu_cores = _rate(before.cpu.usage_ns, cpu.usage_ns, window, 1e9)
    if cpu.quota_us is not None:  # without a quota nothing is throttled: the share is no number
        periods = _delta(before.cpu.periods, cpu.periods)
        throttled = _delta(before.cpu.throttled_periods, cpu.throttled_periods)
        if periods is not None and throttled is not None:
            row.cpu_throttled_ratio = throttled / periods if periods else 0.0
    for resource in PSI_RESOURCES:
        old, new = getattr(before.pressure, resource), getattr(now.pressure, resource)
        if old is not None and new is not None:
            stalled = _rate(old.some_us, new.some_us, window, 1e6)
            row.pressure[resource] = None if stalled is None else min(1.0, stalled)


def _add_last_exit(row: Row, status: model.ContainerStatus | None) -> None:
    """A killed main process ends its container, and the cgroup that counted the
    kill goes with it: the runtime's last termination reason is what is left."""
    if status is None:
        return
    row.last_terminated_reason = status.reason or None
    if status.reason == "OOMKilled":
        if row.oom_kills is None:
            row.oom_kills, row.oom_kills_at_least = 1, True
        else:
            row.oom_kills += 1


def _delta(before: int | None, now: int | None) -> int | None:
    """A counter's increase; None if unknown or if it went back (a new cgroup under the same id)."""
    if before is None or now is None or now < before:
        return None
    return now - before


def _rate(before: int | None, now: int | None, window: float | None, per: float) -> float | None:
    d = _delta(before, now)
    if d is None or not window or window <= 0:
        return None
    return d / per / window


# Sorting: biggest first, unknown last, then by name so the order is stable.
_SORT: dict[str, Callable[[Row], tuple]] = {  # one per top.SORT_KEYS
    "cpu": lambda r: (r.cpu_cores,),
    "memory": lambda r: (r.memory_working_set_bytes,),
    "throttle": lambda r: (r.cpu_throttled_ratio, r.cpu_cores),
    "pressure": lambda r: (r.pressure_max, r.cpu_cores),
    "restarts": lambda r: (r.restarts, r.oom_kills),
}


def sort_rows(rows: Iterable[Row], key: str) -> list[Row]:
    get = _SORT[key]

    def order(r: Row) -> tuple:
        values = get(r)
        return (tuple((v is None, -(v or 0)) for v in values), r.namespace, r.pod, r.container or "")

    return sorted(rows, key=order)


def matches(row: Row, namespaces: tuple[str, ...], pods: tuple[str, ...]) -> bool:
    """--namespace / --pod globs (fnmatch, case-sensitive like Kubernetes names); any of each may match."""
    return (not namespaces or any(fnmatch.fnmatchcase(row.namespace, g) for g in namespaces)) and (
        not pods or any(fnmatch.fnmatchcase(row.pod, g) for g in pods))
