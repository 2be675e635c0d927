"""One reading of the node for `top`: the runtime's containers and pods, and for
each the cgroup counters (or, where its cgroup cannot be read, what CRI says).

Rates need two readings of the same counters, so a reading keeps the counters
themselves (the cumulative CPU time, CFS periods, PSI stall totals) with the
moment each cgroup was read; rows.py subtracts one reading from the next.
CRI's usage_nano_cores is never used: the runtime computes it as a delta since
the previous stats call of any client (the kubelet's, an exporter's), so it
says nothing about our window (measured on containerd 1.6.20, 1.7.24 and
2.1.9: tests/test_runtime_versions.py).

Where a cgroup is not read, the row says why and carries CRI's cumulative CPU
time and working set instead (ListContainerStats / ListPodSandboxStats, asked
only then): a VM-based handler (the host cgroup holds the VM), permission
denied (cgroups/files.py), or no cgroup found. Nothing CRI does not give
(throttling, pressure, limits, OOM kills) is filled in.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterable

from cri_exporter.cgroups import CgroupStats, CgroupUnreadable, NodeCgroups, PsiTotals
from cri_exporter.cgroups.pressure import parse_psi
from cri_exporter.cri import CriClient, CriError, model
from cri_exporter.hostfs import HostFS
from cri_exporter.inventory import ContainerIdentity, Inventory, cgroup_backed

# containerd 1.6.20 handles a container's exit and the kernel's OOM event
# separately: under load ContainerStatus says "Error" (137) first and
# "OOMKilled" a moment later, seconds later at a load of 10 on 2 cores. An
# exit younger than this is asked about again at each reading (one call each).
EXIT_SETTLE_SECONDS = 60.0
# A node with thousands of finished Jobs: their statuses, one call each, come
# over several readings instead of holding up the first screen.
STATUS_SECONDS = 1.0


@dataclass(slots=True)
class Source:
    """What one container's or pod's row is made of at one moment.

    `mono`/`wall`: when it was read (the middle of the reading), monotonic for
    rates and wall-clock for output. `cgroup` is set when its files were read;
    otherwise `reason` (vm_handler, permission_denied, not_found) and `note`
    say why not, and `cri_cpu_ns` / `cri_working_set` hold CRI's values, if
    it gave them."""

    mono: float
    wall: float
    cgroup: CgroupStats | None = None
    reason: str | None = None
    note: str | None = None
    cri_cpu_ns: int | None = None
    cri_working_set: int | None = None


@dataclass(slots=True)
class NodeFacts:
    """The node line: its size and its own pressure (/proc/pressure, PSI of the whole node)."""

    cpus: int | None = None
    memory_bytes: int | None = None
    pressure: dict[str, PsiTotals | None] = field(default_factory=dict)


@dataclass(slots=True)
class Reading:
    mono: float
    wall: float
    inventory: Inventory | None
    error: str | None = None  # the runtime did not list its containers: nothing else is known
    containers: dict[str, Source] = field(default_factory=dict)  # by container id, running ones
    pods: dict[str, Source] = field(default_factory=dict)  # by pod uid, ready ones (pods view only)
    # identity -> the newest exited instance's status, where the runtime still keeps one
    last_exits: dict[ContainerIdentity, model.ContainerStatus] = field(default_factory=dict)
    node: NodeFacts = field(default_factory=NodeFacts)
    cgroup_version: str | None = None


class Sampler:
    """Makes Readings; keeps only the answers that never change (exit statuses)."""

    def __init__(self, client: CriClient, hostfs: HostFS, pods: bool = False):
        self.client = client
        self.hostfs = hostfs
        self.cgroups = NodeCgroups(hostfs)
        self.pods = pods
        self._exits: dict[str, model.ContainerStatus] = {}

    def read(self) -> Reading:
        started_mono, started_wall = time.monotonic(), time.time()
        try:
            inv = Inventory(self.client.list_pod_sandboxes(), self.client.list_containers())
        except CriError as err:
            return Reading(started_mono, started_wall, None, error=str(err), node=self._node())
        reading = Reading(started_mono, started_wall, inv, node=self._node())
        cri_wanted = False
        for c in inv.current_containers.values():
            if c.state == "running":
                pod = inv.pods_by_id.get(c.pod_sandbox_id)
                src = self._read_cgroup(partial(self.cgroups.container_stats, c.id, inv.pod_uid(c)), pod)
                reading.containers[c.id] = src
                cri_wanted = cri_wanted or src.cgroup is None
        if self.pods:
            pods_wanted = False
            for p in inv.current_pods.values():
                if p.state == "ready":
                    src = self._read_cgroup(partial(self.cgroups.pod_stats, p.k8s_uid), p)
                    reading.pods[p.k8s_uid] = src
                    pods_wanted = pods_wanted or src.cgroup is None
            if pods_wanted:
                self._pods_from_cri(inv, reading)
        if cri_wanted:
            self._containers_from_cri(reading)
        for src in (*reading.containers.values(), *reading.pods.values()):
            if src.cgroup is not None:
                reading.cgroup_version = src.cgroup.version
                break
        self.cgroups.resolver.retain(reading.containers, (p.k8s_uid for p in inv.current_pods.values()))
        reading.last_exits = self._last_exits(inv)
        return reading

    def _read_cgroup(self, read: Callable[[], CgroupStats | None], pod: model.PodSandbox | None) -> Source:
        if not cgroup_backed(pod):
            handler = pod.runtime_handler if pod else ""
            return _now("vm_handler", f"VM runtime handler {handler!r}: its host cgroup holds the VM; CPU and memory from CRI")
        before = time.monotonic()
        try:
            stats = read()
        except CgroupUnreadable as err:
            return _now("permission_denied", f"cgroup unreadable ({err}); CPU and memory from CRI")
        if stats is None:
            return _now("not_found", "no cgroup found; CPU and memory from CRI")
        after = time.monotonic()
        # The middle of the reading: its files were read in between.
        return Source(mono=(before + after) / 2, wall=time.time() - (after - before) / 2, cgroup=stats)

    def _containers_from_cri(self, reading: Reading) -> None:
        before = time.monotonic()
        try:
            stats = {s.id: s for s in self.client.list_container_stats()}
        except CriError as err:
            _cri_failed(reading.containers.values(), err)
            return
        mono, wall = _middle(before)
        for cid, src in reading.containers.items():
            s = stats.get(cid)
            if src.cgroup is None and s is not None:
                src.mono, src.wall = mono, wall
                src.cri_cpu_ns, src.cri_working_set = s.cpu_usage_ns, s.memory_working_set_bytes

    def _pods_from_cri(self, inv: Inventory, reading: Reading) -> None:
        before = time.monotonic()
        try:
            stats = {s.id: s for s in self.client.list_pod_sandbox_stats()}
        except CriError as err:
            # containerd 1.6 fails this for every pod when one sandbox is broken.
            _cri_failed(reading.pods.values(), err)
            return
        mono, wall = _middle(before)
        by_uid = {p.k8s_uid: stats.get(p.id) for p in inv.current_pods.values()}
        for uid, src in reading.pods.items():
            s = by_uid.get(uid)
            if src.cgroup is None and s is not None:
                src.mono, src.wall = mono, wall
                src.cri_cpu_ns, src.cri_working_set = s.cpu_usage_ns, s.memory_working_set_bytes

    def _last_exits(self, inv: Inventory) -> dict[ContainerIdentity, model.ContainerStatus]:
        """ContainerStatus of each identity's newest exited instance (ListContainers has
        no termination reason): kept while the runtime lists it, asked again while
        the exit is recent. New ones get STATUS_SECONDS a reading, the rest come next time."""
        newest = inv.last_exited()
        wanted = {c.id for c in newest.values()}
        self._exits = {cid: s for cid, s in self._exits.items() if cid in wanted}
        out: dict[ContainerIdentity, model.ContainerStatus] = {}
        stop_at = time.monotonic() + STATUS_SECONDS
        for ident, c in newest.items():
            status = self._exits.get(c.id)
            if status is None or time.time() - status.finished_at_ns / 1e9 < EXIT_SETTLE_SECONDS:
                if time.monotonic() > stop_at:
                    continue
                try:
                    status = self._exits[c.id] = self.client.container_status(c.id)
                except CriError:
                    continue  # removed since the list: nothing to say about it
            out[ident] = status
        return out

    def _node(self) -> NodeFacts:
        facts = NodeFacts(cpus=_online_cpus(self.hostfs), memory_bytes=_mem_total(self.hostfs))
        for resource in ("cpu", "memory", "io"):
            facts.pressure[resource] = parse_psi(_read(self.hostfs, f"/proc/pressure/{resource}"))
        return facts


def _now(reason: str, note: str) -> Source:
    return Source(mono=time.monotonic(), wall=time.time(), reason=reason, note=note)


def _middle(before: float) -> tuple[float, float]:
    after = time.monotonic()
    return (before + after) / 2, time.time() - (after - before) / 2


def _cri_failed(sources: Iterable[Source], err: CriError) -> None:
    for src in sources:
        if src.cgroup is None:
            src.note = f"{src.note}; CRI stats failed: {err}"


def _read(hostfs: HostFS, path: str) -> str | None:
    try:
        return hostfs.read_text(path, limit=64 * 1024)
    except (OSError, ValueError):  # absent (no PSI: psi=0, old kernel), refused
        return None


def _online_cpus(hostfs: HostFS) -> int | None:
    """CPUs in /sys/devices/system/cpu/online ("0-3,6"): the node's, not this process's affinity."""
    text = _read(hostfs, "/sys/devices/system/cpu/online")
    if not text or not text.strip():
        return None
    count = 0
    try:
        for part in text.strip().split(","):
            first, _, last = part.partition("-")
            count += int(last or first) - int(first) + 1
    except ValueError:
        return None
    return count


def _mem_total(hostfs: HostFS) -> int | None:
    for line in (_read(hostfs, "/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024  # the kernel writes kB
    return None
