"""What the cgroup files tell that CRI does not: throttling, OOM, pressure, memory
composition, pids and block I/O, per container and per pod.

Series carry the same identity labels as the CRI collector's (namespace, pod,
container) and describe the same *current* instance (inventory.py), so the
two join in PromQL. CPU usage and the memory usage / working set / rss /
swap / fault series are the CRI collector's names; it takes their live values
from the same reading (`container_cgroup()`, once per scrape), and this
collector never emits them.

Only running containers and ready pods have a cgroup worth reading; a cgroup
deleted during the scrape just drops out. Per scrape the cost is the files
of each cgroup read once (paths are resolved once and cached).
"""
from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

from cri_exporter.cgroups import CgroupStats, CgroupUnavailable, Layout, NodeCgroups
from cri_exporter.cri import CriError
from cri_exporter.exposition import Family
from cri_exporter.hostfs import HostFS
from cri_exporter.scrape import PartialCollection, ScrapeContext

C_LABELS = ["namespace", "pod", "container"]
P_LABELS = ["namespace", "pod"]

Getter = Callable[[CgroupStats], "int | None"]


class _Row:
    """One metric: name (without prefix or _total), help, type, value, scale."""

    __slots__ = ("name", "doc", "counter", "get", "scale", "pods_v1")

    def __init__(self, name: str, doc: str, counter: bool, get: Getter, scale: float = 1.0, pods_v1: bool = True):
        self.name, self.doc, self.counter, self.get, self.scale = name, doc, counter, get, scale
        self.pods_v1 = pods_v1  # False: not meaningful for a v1 pod cgroup


def _period_if_quota(s: CgroupStats) -> int | None:
    # A CFS period without a quota limits nothing; exporting it only adds series.
    return s.cpu.period_us if s.cpu.quota_us is not None else None


_ROWS: tuple[_Row, ...] = (
    _Row("cpu_cfs_periods", "CFS enforcement periods that elapsed while the cgroup had runnable tasks (cpu.stat nr_periods).", True, lambda s: s.cpu.periods),
    _Row("cpu_cfs_throttled_periods", "CFS periods in which the cgroup was throttled (cpu.stat nr_throttled).", True, lambda s: s.cpu.throttled_periods),
    _Row("cpu_cfs_throttled_seconds", "Total time the cgroup's tasks were throttled by the CFS quota.", True, lambda s: s.cpu.throttled_ns, 1e-9),
    _Row("spec_cpu_quota_seconds", "CPU time allowed per CFS period; divided by the period it is the CPU limit in cores. Absent without a limit.", False, lambda s: s.cpu.quota_us, 1e-6),
    _Row("spec_cpu_period_seconds", "CFS period length (only where a quota is set).", False, _period_if_quota, 1e-6),
    _Row("spec_cpu_shares", "cgroup v1 cpu.shares (relative CPU weight, from the CPU request).", False, lambda s: s.cpu.shares),
    _Row("spec_cpu_weight", "cgroup v2 cpu.weight (relative CPU weight, from the CPU request).", False, lambda s: s.cpu.weight),
    _Row("spec_memory_limit_bytes", "Memory limit (v1 memory.limit_in_bytes, v2 memory.max). Absent when unlimited.", False, lambda s: s.memory.limit_bytes),
    _Row("memory_cache_bytes", "Page cache memory (v1 total_cache, v2 file).", False, lambda s: s.memory.cache_bytes),
    _Row("memory_active_file_bytes", "File-backed memory on the active LRU list.", False, lambda s: s.memory.active_file_bytes),
    _Row("memory_inactive_file_bytes", "File-backed memory on the inactive LRU list (what the working set excludes).", False, lambda s: s.memory.inactive_file_bytes),
    _Row("memory_mapped_file_bytes", "Page cache mapped into processes (v1 total_mapped_file, v2 file_mapped).", False, lambda s: s.memory.mapped_file_bytes),
    _Row("memory_failcnt", "cgroup v1 memory.failcnt: times memory usage hit the limit.", True, lambda s: s.memory.failcnt),
    _Row("memory_max_events", "cgroup v2 memory.events max: times usage was about to go over memory.max.", True, lambda s: s.memory.max_events),
    _Row("memory_high_events", "cgroup v2 memory.events high: times usage went over memory.high and was throttled.", True, lambda s: s.memory.high_events),
    _Row("memory_oom_events", "cgroup v2 memory.events oom: times the cgroup hit its limit and the OOM killer was invoked.", True, lambda s: s.memory.oom_events),
    # v1 oom_kill counts only tasks directly in the cgroup: a pod cgroup says 0
    # after its container was killed (seen with containerd 1.6.20), so no pod series on v1.
    _Row("memory_oom_kills", "Processes killed by the OOM killer (v1 memory.oom_control oom_kill, v2 memory.events oom_kill).", True, lambda s: s.memory.oom_kills, pods_v1=False),
    _Row("pids", "Tasks (processes and threads) in the cgroup (pids.current).", False, lambda s: s.pids.current),
    _Row("spec_pids_limit", "Task limit (pids.max). Absent when unlimited.", False, lambda s: s.pids.limit),
)


def _psi(resource: str, kind: str) -> Getter:
    def get(s: CgroupStats) -> int | None:
        totals = getattr(s.pressure, resource)
        return None if totals is None else getattr(totals, f"{kind}_us")
    return get


_PSI_ROWS = tuple(
    _Row(
        f"pressure_{resource}_{kind}_seconds",
        f"PSI: total time {'some' if kind == 'some' else 'all non-idle'} tasks of the cgroup were stalled on {resource} "
        f"({resource}.pressure {kind} total; v2, or the unified tree of a hybrid v1 node).",
        True,
        _psi(resource, kind),
        1e-6,
    )
    for resource in ("cpu", "memory", "io")
    for kind in ("some", "full")
)

_ALL_ROWS = _ROWS + _PSI_ROWS

_IO_FIELDS = (
    ("blkio_read_bytes", "Bytes read from the block device.", "read_bytes"),
    ("blkio_write_bytes", "Bytes written to the block device.", "write_bytes"),
    ("blkio_read_operations", "Read operations issued to the block device.", "read_ops"),
    ("blkio_write_operations", "Write operations issued to the block device.", "write_ops"),
)


class _Families:
    """Families created on first sample, so a value no cgroup had leaves no empty family."""

    def __init__(self) -> None:
        self._by_name: dict[str, Metric] = {}

    def add(self, name: str, doc: str, counter: bool, labels: list[str], values: list[str], value: float) -> None:
        fam = self._by_name.get(name)
        if fam is None:
            fam = Family(name, doc, labels, counter)
            self._by_name[name] = fam
        fam.add_metric(values, value)

    def __iter__(self):
        return iter(self._by_name.values())


class CgroupCollector:
    name = "cgroups"

    def __init__(self, hostfs: HostFS, cgroups: NodeCgroups | None = None):
        """`cgroups` may be shared with the CRI collector so paths are resolved once."""
        self.cgroups = cgroups or NodeCgroups(hostfs)

    def collect(self, ctx: ScrapeContext) -> Iterable[Metric]:
        try:
            layout = self.cgroups.check()
        except CgroupUnavailable as err:
            raise PartialCollection(f"cgroup root unreadable: {err}", []) from err
        try:
            inv = ctx.inventory()
        except CriError as err:
            raise PartialCollection(f"inventory: {err}", [_node_info(layout)]) from err

        families = _Families()
        containers: list[str] = []
        for ident, c in inv.current_containers.items():
            if c.state != "running":
                continue  # created / exited containers have no cgroup to read
            if ctx.remaining() <= 0:
                raise PartialCollection("scrape deadline passed while reading container cgroups", [])
            containers.append(c.id)
            stats = container_cgroup(ctx, self.cgroups, c.id, inv.pod_uid(c))
            if stats is not None:
                _add(families, "cri_container_", C_LABELS, [ident.namespace, ident.pod, ident.container], stats, pod=False)
        pods: list[str] = []
        for pident, p in inv.current_pods.items():
            if p.state != "ready":
                continue
            if ctx.remaining() <= 0:
                raise PartialCollection("scrape deadline passed while reading pod cgroups", [])
            pods.append(p.k8s_uid)
            stats = pod_cgroup(ctx, self.cgroups, p.k8s_uid)
            if stats is not None:
                _add(families, "cri_pod_", P_LABELS, [pident.namespace, pident.pod], stats, pod=True)
        self.cgroups.resolver.retain(containers, pods)
        # after resolving: a driver still unknown at the start is known once pods exist
        yield _node_info(self.cgroups.layout())
        yield from families


def container_cgroup(ctx: ScrapeContext, cgroups: NodeCgroups, container_id: str, pod_uid: str) -> CgroupStats | None:
    """A container's cgroup, read once per scrape for every collector that needs it."""
    return ctx.shared(("cgroup", container_id), lambda: cgroups.container_stats(container_id, pod_uid))


def pod_cgroup(ctx: ScrapeContext, cgroups: NodeCgroups, pod_uid: str) -> CgroupStats | None:
    return ctx.shared(("pod-cgroup", pod_uid), lambda: cgroups.pod_stats(pod_uid))


def _node_info(layout: Layout) -> Metric:
    info = GaugeMetricFamily(
        "cri_node_cgroup_info", "The node's cgroup version (hybrid counts as v1) and the kubelet's cgroup driver.",
        labels=["version", "driver"],
    )
    info.add_metric([layout.version, layout.driver], 1.0)
    return info


def _add(families: _Families, prefix: str, labels: list[str], values: list[str], stats: CgroupStats, pod: bool) -> None:
    for row in _ALL_ROWS:
        if pod and stats.version == "v1" and not row.pods_v1:
            continue
        value = row.get(stats)
        if value is not None:
            families.add(prefix + row.name, row.doc, row.counter, labels, values, value * row.scale)
    device_labels = labels + ["device"]
    for dev in stats.io.devices:
        for name, doc, attr in _IO_FIELDS:
            value = getattr(dev, attr)
            if value is not None:
                families.add(prefix + name, doc, True, device_labels, values + [dev.device], value)
