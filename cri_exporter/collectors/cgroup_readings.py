"""The node's cgroup reading of one scrape: every running container's and
ready pod's cgroup files, read once for both collectors that need them.

The containers collector takes its live usage values from it (`Readings.containers`
/ `.pods`); the cgroup collector serves the families built while reading
(`Readings.families`). It is a step of the scrape (collectors/base.py), not
either collector's work, so neither collector's duration carries it.
"""
from __future__ import annotations

import time
from operator import attrgetter
from typing import Callable

from cri_exporter.cgroups import CgroupStats, CgroupUnreadable, NodeCgroups, UsageRows
from cri_exporter.collectors.base import ScrapeContext, StepNotDone
from cri_exporter.exposition import AnyFamily, ExtraLabelFamily, Family, LabelCache
from cri_exporter.inventory import Inventory
from cri_exporter.metric_filter import MetricFilter

C_LABELS = ["namespace", "pod", "container"]
P_LABELS = ["namespace", "pod"]

Getter = Callable[[CgroupStats], "int | None"]


class _Row:
    """One metric: name (without prefix or _total), help, type, value, and `per`:
    the kernel's units per base unit (1e9 ns a second). Dividing keeps 50000 µs
    at 0.05 s where multiplying by 1e-6 gives 0.049999999999999996."""

    __slots__ = ("name", "doc", "counter", "get", "per", "pods_v1", "part")

    def __init__(self, name: str, doc: str, counter: bool, get: Getter | str, per: float = 1, pods_v1: bool = True):
        """`get`: a getter of the value from a CgroupStats, or the attribute
        path to it ("cpu.user_ns"): the rows given by path are read together,
        one attrgetter call a cgroup for all of them (_Families.add)."""
        self.name, self.doc, self.counter, self.get, self.per = name, doc, counter, get, per
        self.pods_v1 = pods_v1  # False: not meaningful for a v1 pod cgroup
        self.part = _part_of(name)

    def exposed(self, prefix: str) -> str:
        return prefix + self.name + ("_total" if self.counter else "")


def _part_of(name: str) -> str:
    """Which files of a cgroup (cgroups.node.PARTS) a row's value comes from."""
    if name.startswith("pressure_"):
        return "pressure_" + name.split("_")[1]
    for part, starts in (("cpu", ("cpu_", "spec_cpu_")), ("memory", ("memory_", "spec_memory_")),
                         ("pids", ("pids", "spec_pids_"))):
        if name.startswith(starts):
            return part
    raise ValueError(f"no cgroup part for {name}")


def _period_if_quota(s: CgroupStats) -> int | None:
    # A CFS period without a quota limits nothing; exporting it only adds series.
    return s.cpu.period_us if s.cpu.quota_us is not None else None


_ROWS: tuple[_Row, ...] = (
    _Row("cpu_user_seconds", "CPU time the cgroup's tasks spent in user mode (v2 cpu.stat user_usec; v1 cpuacct.stat user, in 10 ms ticks).", True, "cpu.user_ns", 1e9),
    _Row("cpu_system_seconds", "CPU time the cgroup's tasks spent in the kernel (v2 cpu.stat system_usec; v1 cpuacct.stat system, in 10 ms ticks).", True, "cpu.system_ns", 1e9),
    _Row("cpu_cfs_periods", "CFS enforcement periods that elapsed while the cgroup had runnable tasks (cpu.stat nr_periods).", True, "cpu.periods"),
    _Row("cpu_cfs_throttled_periods", "CFS periods in which the cgroup was throttled (cpu.stat nr_throttled).", True, "cpu.throttled_periods"),
    _Row("cpu_cfs_throttled_seconds", "Total time the cgroup's tasks were throttled by the CFS quota.", True, "cpu.throttled_ns", 1e9),
    _Row("spec_cpu_quota_seconds", "CPU time allowed per CFS period; divided by the period it is the CPU limit in cores. Absent without a limit.", False, "cpu.quota_us", 1e6),
    _Row("spec_cpu_period_seconds", "CFS period length (only where a quota is set).", False, _period_if_quota, 1e6),
    _Row("spec_cpu_shares", "cgroup v1 cpu.shares (relative CPU weight, from the CPU request).", False, "cpu.shares"),
    _Row("spec_cpu_weight", "cgroup v2 cpu.weight (relative CPU weight, from the CPU request).", False, "cpu.weight"),
    _Row("spec_memory_limit_bytes", "Memory limit (v1 memory.limit_in_bytes, v2 memory.max). Absent when unlimited.", False, "memory.limit_bytes"),
    _Row("memory_cache_bytes", "Page cache memory (v1 total_cache, v2 file).", False, "memory.cache_bytes"),
    _Row("memory_active_file_bytes", "File-backed memory on the active LRU list.", False, "memory.active_file_bytes"),
    _Row("memory_inactive_file_bytes", "File-backed memory on the inactive LRU list (what the working set excludes).", False, "memory.inactive_file_bytes"),
    _Row("memory_mapped_file_bytes", "Page cache mapped into processes (v1 total_mapped_file, v2 file_mapped).", False, "memory.mapped_file_bytes"),
    _Row("memory_max_usage_bytes", "Highest memory usage the cgroup reached since it was created (v1 memory.max_usage_in_bytes, v2 memory.peak on kernels >= 5.19).", False, "memory.peak_bytes"),
    _Row("memory_failcnt", "cgroup v1 memory.failcnt: times memory usage hit the limit.", True, "memory.failcnt"),
    _Row("memory_max_events", "cgroup v2 memory.events max: times usage was about to go over memory.max.", True, "memory.max_events"),
    _Row("memory_high_events", "cgroup v2 memory.events high: times usage went over memory.high and was throttled.", True, "memory.high_events"),
    _Row("memory_oom_events", "cgroup v2 memory.events oom: times the cgroup hit its limit and the OOM killer was invoked.", True, "memory.oom_events"),
    # v1 oom_kill counts only tasks directly in the cgroup: a pod cgroup says 0
    # after its container was killed (seen with containerd 1.6.20), so no pod series on v1.
    _Row("memory_oom_kills", "Processes killed by the OOM killer (v1 memory.oom_control oom_kill, v2 memory.events oom_kill).", True, "memory.oom_kills", pods_v1=False),
    _Row("pids", "Tasks (processes and threads) in the cgroup (pids.current).", False, "pids.current"),
    _Row("spec_pids_limit", "Task limit (pids.max). Absent when unlimited.", False, "pids.limit"),
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
        1e6,
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


class _Kind:
    """Container or pod: label names and, per row, the full metric name.

    `wanted(metrics)`: the same kind with only the rows --metrics-allow /
    --metrics-deny serve, and the cgroup parts (files) those rows need."""

    def __init__(self, prefix: str, names: tuple[str, ...], rows: tuple[_Row, ...], io: bool = True):
        self.prefix, self.names, self._rows = prefix, names, rows
        self.rows = tuple((prefix + r.name, r.doc, r.counter, r.get, r.per) for r in rows)
        self.io = tuple((prefix + name, doc, attr) for name, doc, attr in _IO_FIELDS) if io else ()
        self.parts = frozenset(r.part for r in rows) | ({"io"} if self.io else set())

    def families(self) -> tuple[str, ...]:
        return tuple(r.exposed(self.prefix) for r in self._rows) + tuple(name + "_total" for name, _, _ in self.io)

    def wanted(self, metrics: MetricFilter) -> _Kind:
        if not metrics.active:
            return self
        io = any(metrics.wants(name + "_total") for name, _, _ in self.io)
        return _Kind(self.prefix, self.names, tuple(r for r in self._rows if metrics.wants(r.exposed(self.prefix))), io)


_C = _Kind("cri_container_", tuple(C_LABELS), _ALL_ROWS)
_P = _Kind("cri_pod_", tuple(P_LABELS), _ALL_ROWS)
_P_V1 = _Kind("cri_pod_", tuple(P_LABELS), tuple(r for r in _ALL_ROWS if r.pods_v1))

# The families this reading builds for the cgroup collector, by kind.
CONTAINER_CGROUP_FAMILIES = _C.families()
# Every pod-level family this reading can build.
ALL_POD_CGROUP_FAMILIES = _P.families()
# Not a mere twin: on cgroup v2 the pod's memory.events counts the kills of
# containers whose own cgroup went with them (docs/metrics.md), which alerts
# use; --no-pod-cgroup-metrics keeps it (deny it by name to drop it).
POD_TWINS_KEPT = frozenset({"cri_pod_memory_oom_kills_total"})
# The pod-level twins of the cri_container_* cgroup families:
# --no-pod-cgroup-metrics denies them as a group.
POD_CGROUP_FAMILIES = tuple(n for n in ALL_POD_CGROUP_FAMILIES if n not in POD_TWINS_KEPT)

# The containers collector's live usage families (collectors/containers.py)
# and the cgroup part each needs: read for them even when every cgroup
# family above is denied.
USAGE_PARTS = {
    "cpu_usage_seconds_total": "cpu",
    "memory_working_set_bytes": "memory",
    "memory_usage_bytes": "memory",
    "memory_rss_bytes": "memory",
    "memory_swap_bytes": "memory",
    "memory_page_faults_total": "memory",
    "memory_major_page_faults_total": "memory",
}


class Plan:
    """What one scrape reads, from --metrics-allow / --metrics-deny: per kind,
    the rows to build and the cgroup parts (files) to read; a kind with no
    part wanted is not read at all. Made once: the filter never changes."""

    __slots__ = ("containers", "pods", "pods_v1", "container_parts", "pod_parts")

    def __init__(self, metrics: MetricFilter):
        self.containers = _C.wanted(metrics)
        self.pods = _P.wanted(metrics)
        self.pods_v1 = _P_V1.wanted(metrics)
        c_usage = {part for name, part in USAGE_PARTS.items() if metrics.wants("cri_container_" + name)}
        p_usage = {part for name, part in USAGE_PARTS.items() if metrics.wants("cri_pod_" + name)}
        self.container_parts = frozenset(self.containers.parts | c_usage)
        self.pod_parts = frozenset(self.pods.parts | p_usage)


_PLANS: dict[int, tuple[MetricFilter, Plan]] = {}


def plan_for(metrics: MetricFilter) -> Plan:
    found = _PLANS.get(id(metrics))
    if found is None or found[0] is not metrics:
        found = _PLANS[id(metrics)] = (metrics, Plan(metrics))
    return found[1]


class _Families:
    """This scrape's families of one kind (container or pod), one per row, in
    the rows' order; families no cgroup had a value for are left out."""

    def __init__(self, kind: _Kind) -> None:
        self.kind = kind
        self.by_row = [Family(name, doc, kind.names, counter) for name, doc, counter, _, _ in kind.rows]
        self.io = [ExtraLabelFamily(name, doc, kind.names, "device", True) for name, doc, _ in kind.io]
        # Per row its divisor (None for 1: a value already in base units goes
        # into the family's array of doubles as it is, the same double
        # `value / 1` gives) and the two appends of Family.add, bound once a
        # scrape: add() runs them for every row of every cgroup. The rows
        # given by attribute path are read by one attrgetter call (a tuple
        # made in C), the others by their getters.
        by_path: list[tuple[str, tuple]] = []
        by_getter: list[tuple[Getter, tuple]] = []
        for (_, _, _, get, per), family in zip(kind.rows, self.by_row):
            adder = (None if per == 1 else per, family.labelsets.append, family.values.append)
            if isinstance(get, str):
                by_path.append((get, adder))
            else:
                by_getter.append((get, adder))
        self._paths = attrgetter(*(path for path, _ in by_path)) if len(by_path) > 1 else (
            (lambda s, one=attrgetter(by_path[0][0]): (one(s),)) if by_path else (lambda s: ()))
        self._path_adders = [adder for _, adder in by_path]
        self._getters = [(get, *adder) for get, adder in by_getter]
        self._io_values = attrgetter(*(attr for _, _, attr in kind.io)) if kind.io else None

    def add(self, cache: LabelCache, values: tuple[str, ...], stats: CgroupStats) -> None:
        labels = cache.get(self.kind.names, values)
        for value, (per, add_labels, add_value) in zip(self._paths(stats), self._path_adders):
            if value is not None:  # Family.add, inlined
                add_labels(labels)
                add_value(value if per is None else value / per)
        for get, per, add_labels, add_value in self._getters:
            value = get(stats)
            if value is not None:
                add_labels(labels)
                add_value(value if per is None else value / per)
        io_values = self._io_values
        if io_values is None:
            return
        for dev in stats.io.devices:
            got = io_values(dev)
            for value, family in zip(got if len(self.io) > 1 else (got,), self.io):
                if value is not None:
                    family.add_extra(labels, dev.device, value)

    def __iter__(self):
        return (f for f in self.by_row + self.io if f.values)


class Readings:
    """This scrape's pass over every running container's and ready pod's cgroup.

    `containers` / `pods`: the live usage values the CRI collector serves, by
    container id and pod uid (cgroups.UsageRows: rows of doubles, None where
    the cgroup was not found, went away or could not be read). `denied_containers` / `denied_pods`: those of them
    whose cgroup could not be read, with why and when it was last read whole.
    `families`: the cgroup collector's series, built as each cgroup is
    read, so a full reading (some 40 numbers and half a dozen objects) lives
    only until its values are in the families: held for every cgroup until
    both collectors were done, 7,500 readings were 13 MB at the peak of a
    5,000-container scrape. `cut_short` says why some were not read.
    """

    __slots__ = ("containers", "pods", "denied_containers", "denied_pods", "families", "cut_short")

    def __init__(self, containers: UsageRows | None = None, pods: UsageRows | None = None,
                 families: list[AnyFamily] | None = None, cut_short: str | None = None,
                 denied_containers: dict[str, CgroupUnreadable] | None = None,
                 denied_pods: dict[str, CgroupUnreadable] | None = None):
        self.containers = containers if containers is not None else UsageRows()
        self.pods = pods if pods is not None else UsageRows()
        self.cut_short = cut_short
        self.families = families or []
        self.denied_containers = denied_containers if denied_containers is not None else {}
        self.denied_pods = denied_pods if denied_pods is not None else {}


def cgroup_readings(ctx: ScrapeContext, cgroups: NodeCgroups) -> Readings:
    """The node's cgroup readings of this scrape: a step of the scrape
    (ScrapeContext.step), made once in a thread of its own and timed as
    `cri_scrape_step_duration_seconds{step="cgroup_reading"}`, whichever of
    the containers and cgroups collectors asks first.

    All in one thread and one pass: the collectors wait without taking the
    GIL. Reading side by side, two threads hand the GIL over at every one of
    some 20,000 syscalls, which cost more than the reads themselves.
    Raises CriError when the inventory could not be listed.
    """
    inv = ctx.inventory()
    try:
        return ctx.step("cgroup_reading", lambda: _read_node(ctx, cgroups, inv))
    except StepNotDone:
        return Readings(cut_short="cgroup readings not available in this scrape")


# Share of what is left of the scrape that reading may take: the rest is for
# the collectors to build their families, so a slow cgroup tree costs the
# cgroup series, not every collector that waited for them.
READ_SHARE = 0.8


def _read_node(ctx: ScrapeContext, cgroups: NodeCgroups, inv: Inventory) -> Readings:
    containers = UsageRows()
    pods = UsageRows()
    denied_c: dict[str, CgroupUnreadable] = {}
    denied_p: dict[str, CgroupUnreadable] = {}
    labels = ctx.labels
    stop_at = time.monotonic() + ctx.remaining() * READ_SHARE
    plan = plan_for(ctx.metrics)
    # A kind none of whose families is wanted is not read at all.
    running = [(ident, c) for ident, c in inv.current_containers.items()
               if c.state == "running"] if plan.container_parts else []
    ready = [(ident, p) for ident, p in inv.current_pods.items() if p.state == "ready"] if plan.pod_parts else []
    c_families = _Families(plan.containers)
    p_families: _Families | None = None
    for ident, c in running:  # created / exited containers have no cgroup to read
        if time.monotonic() >= stop_at:
            return Readings(containers, pods, cut_short=_cut_short(len(containers), len(running), 0, len(ready)))
        try:
            stats = cgroups.container_stats(c.id, inv.pod_uid(c), plan.container_parts)
        except CgroupUnreadable as err:
            denied_c[c.id] = err
            stats = None
        containers.put(c.id, stats)
        if stats is None:
            continue
        c_families.add(labels, (ident.namespace, ident.pod, ident.container), stats)
    for pident, p in ready:
        if time.monotonic() >= stop_at:
            return Readings(containers, pods,
                            cut_short=_cut_short(len(containers), len(running), len(pods), len(ready)))
        try:
            stats = cgroups.pod_stats(p.k8s_uid, plan.pod_parts)
        except CgroupUnreadable as err:
            denied_p[p.k8s_uid] = err
            stats = None
        pods.put(p.k8s_uid, stats)
        if stats is None:
            continue
        if p_families is None:  # one cgroup version per node
            p_families = _Families(plan.pods_v1 if stats.version == "v1" else plan.pods)
        p_families.add(labels, (pident.namespace, pident.pod), stats)
    cgroups.resolver.retain(containers.index, pods.index)
    return Readings(containers, pods, [*c_families, *(p_families or ())],
                    denied_containers=denied_c, denied_pods=denied_p)


def _cut_short(containers: int, of_containers: int, pods: int, of_pods: int) -> str:
    return (f"the scrape deadline came before every cgroup was read ({containers} of {of_containers} containers, "
            f"{pods} of {of_pods} pods)")
