"""What the cgroup files tell that CRI does not: throttling, OOM, pressure, memory
composition, pids and block I/O, per container and per pod.

Series carry the same identity labels as the CRI collector's (namespace, pod,
container) and describe the same *current* instance (inventory.py), so the
two join in PromQL. CPU usage and the memory usage / working set / rss /
swap / fault series are the CRI collector's names; it takes their live values
from the same reading (collectors/cgroup_readings.py, a step of the scrape),
and this collector never emits them.

Only running containers and ready pods have a cgroup worth reading; a cgroup
deleted during the scrape just drops out. Per scrape the cost is the files
of each cgroup read once (paths are resolved once and cached; limit files are
read again about once a minute, see cgroups/files.LimitFiles).

A cgroup the agent may not read (permission denied: cgroups/files.py) is not
a missing one, and never a row of zeros: its series here are absent, its usage
comes from the CRI stats snapshot (collectors/containers.py), and
`cri_cgroups_not_read{kind,reason}` counts it, beside the running containers
and ready pods for which no cgroup was found at all. The log says when the set
of unreadable cgroups changes, not at every scrape.
"""
from __future__ import annotations

import threading
from typing import Iterable

import structlog
from prometheus_client.core import GaugeMetricFamily

from cri_exporter.cgroups import CgroupUnavailable, Layout, NodeCgroups
from cri_exporter.collectors.base import PartialCollection, ScrapeContext
from cri_exporter.collectors.cgroup_readings import (
    ALL_POD_CGROUP_FAMILIES,
    CONTAINER_CGROUP_FAMILIES,
    Readings,
    cgroup_readings,
)
from cri_exporter.cri import CriError
from cri_exporter.exposition import AnyFamily
from cri_exporter.hostfs import HostFS
from cri_exporter.inventory import Inventory

log = structlog.get_logger(__name__)


class CgroupCollector:
    name = "cgroups"
    families = ("cri_node_cgroup_info", "cri_cgroups_not_read", *CONTAINER_CGROUP_FAMILIES, *ALL_POD_CGROUP_FAMILIES)

    def __init__(self, hostfs: HostFS, cgroups: NodeCgroups | None = None):
        """`cgroups` may be shared with the CRI collector so paths are resolved once."""
        self.cgroups = cgroups or NodeCgroups(hostfs)
        self.denied = _DeniedLog()

    def collect(self, ctx: ScrapeContext) -> Iterable[AnyFamily]:
        try:
            layout: Layout | None = self.cgroups.check()
            unavailable = None
        except CgroupUnavailable as err:
            # Still read below: the containers are counted and logged as unreadable.
            layout, unavailable = None, f"cgroup root unreadable: {err}"
        try:
            inv = ctx.inventory()
        except CriError as err:
            raise PartialCollection(unavailable or f"inventory: {err}",
                                    [_node_info(layout)] if layout else []) from err
        readings = cgroup_readings(ctx, self.cgroups)
        if readings.cut_short:
            raise PartialCollection(readings.cut_short, [])
        self.denied.update(inv, readings)
        not_read = _not_read(readings)
        if unavailable:
            raise PartialCollection(unavailable, [not_read])
        # after resolving: a driver still unknown at the start is known once pods exist
        yield _node_info(self.cgroups.layout())
        yield from readings.families
        yield not_read


def _not_read(readings: Readings) -> AnyFamily:
    family = GaugeMetricFamily(
        "cri_cgroups_not_read",
        "Running containers and ready pods whose cgroup this scrape did not read, by reason: permission_denied "
        "(their CPU and memory come from the CRI stats snapshot, their cgroup-only series are absent) or "
        "not_found (no cgroup of theirs on the host: VM-based handlers, an unknown cgroup layout, or a "
        "container the runtime lists running whose cgroup is gone, an exit it never recorded: see "
        "cri_container_running_without_cgroup_since_time_seconds).",
        labels=["kind", "reason"],
    )
    for kind, values, denied in (("container", readings.containers, readings.denied_containers),
                                 ("pod", readings.pods, readings.denied_pods)):
        unread = sum(1 for v in values.index.values() if v is None)
        family.add_metric([kind, "permission_denied"], float(len(denied)))
        family.add_metric([kind, "not_found"], float(unread - len(denied)))
    return family


# Cgroups named in one log line; the count says how many there are in all.
_LOGGED_NAMES = 5


class _DeniedLog:
    """Logs when cgroups become unreadable and when they can be read again:
    once per change, not at every scrape for every cgroup (a lost capability
    makes every cgroup of the node unreadable at once)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a timed-out scrape's collection may still be running
        self._denied: set[tuple[str, str]] = set()

    def update(self, inv: Inventory, readings: Readings) -> None:
        by_kind = {"container": (readings.containers, readings.denied_containers),
                   "pod": (readings.pods, readings.denied_pods)}
        now = {(kind, key) for kind, (_, denied) in by_kind.items() for key in denied}
        with self._lock:
            before, self._denied = self._denied, now
        if now == before:
            return
        names = _names(inv, now ^ before)
        new = sorted(now - before)
        if new:
            log.warning("cgroups not readable: their CPU and memory come from the CRI stats snapshot and their "
                        "cgroup series are absent until they can be read", count=len(new), unreadable=len(now),
                        cgroups=[f"{kind} {names.get((kind, i), i)}: {by_kind[kind][1][i]}"
                                 for kind, i in new[:_LOGGED_NAMES]])
        # Dropped from the set: read again, or no longer running (not worth a line).
        back = sorted(k for k in before - now if by_kind[k[0]][0].index.get(k[1]) is not None)
        if back:
            log.info("cgroups readable again: read live", count=len(back), unreadable=len(now),
                     cgroups=[f"{kind} {names.get((kind, i), i)}" for kind, i in back[:_LOGGED_NAMES]])


def _names(inv: Inventory, keys: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """namespace/pod[/container] of the given (kind, id or uid) keys."""
    out: dict[tuple[str, str], str] = {}
    for ident, c in inv.current_containers.items():
        if ("container", c.id) in keys:
            out["container", c.id] = f"{ident.namespace}/{ident.pod}/{ident.container}"
    for pident, p in inv.current_pods.items():
        if ("pod", p.k8s_uid) in keys:
            out["pod", p.k8s_uid] = f"{pident.namespace}/{pident.pod}"
    return out


def _node_info(layout: Layout) -> AnyFamily:
    info = GaugeMetricFamily(
        "cri_node_cgroup_info", "The node's cgroup version (hybrid counts as v1) and the kubelet's cgroup driver.",
        labels=["version", "driver"],
    )
    info.add_metric([layout.version, layout.driver], 1.0)
    return info
