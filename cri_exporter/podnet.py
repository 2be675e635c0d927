"""Live pod network counters, every interface, from the pod's network namespace.

CRI stats carry only the default interface (eth0) and only as fresh as the
background snapshot. Every process of a pod shares the sandbox's network
namespace, so `/proc/<pid>/net/dev` of any of them lists all of the pod's
interfaces: one small read per pod at scrape time. The pid is the sandbox
(pause) container's, found through its cgroup (its container id is the
sandbox id in containerd and CRI-O) and cached while it stays in that cgroup.
A pod whose counters cannot be read live (no pid found, /proc unreadable) is
tried again only after RETRY_SECONDS, keeping CRI's numbers meanwhile, so
that a node where this never works pays for finding out once, not per scrape.
"""
from __future__ import annotations

import threading
import time

import structlog

from cri_exporter.cgroups import NodeCgroups
from cri_exporter.cri import model
from cri_exporter.hostfs import HostFS

log = structlog.get_logger(__name__)

# Loopback traffic never leaves the pod; the kubelet's stats leave it out too.
IGNORED_INTERFACES = frozenset({"lo"})

RETRY_SECONDS = 60.0


def parse_net_dev(text: str) -> tuple[model.InterfaceStats, ...]:
    """/proc/net/dev: two header lines, then `name: rx_bytes packets errs drop fifo
    frame compressed multicast tx_bytes packets errs drop ...` (dev_seq_printf_stats)."""
    out = []
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        fields = rest.split()
        name = name.strip()
        if not sep or len(fields) < 16 or name in IGNORED_INTERFACES:
            continue
        try:
            rx_bytes, rx_packets, rx_errs, rx_drop = int(fields[0]), int(fields[1]), int(fields[2]), int(fields[3])
            tx_bytes, tx_packets, tx_errs, tx_drop = int(fields[8]), int(fields[9]), int(fields[10]), int(fields[11])
        except ValueError:
            continue
        out.append(model.InterfaceStats(name, rx_bytes, rx_errs, tx_bytes, tx_errs,
                                        rx_packets, rx_drop, tx_packets, tx_drop))
    return tuple(out)


class PodNetwork:
    def __init__(self, hostfs: HostFS, cgroups: NodeCgroups):
        self.hostfs = hostfs
        self.cgroups = cgroups
        self._pids: dict[str, int] = {}
        self._failed: dict[str, float] = {}  # sandbox id -> when reading it live last failed
        self._lock = threading.Lock()

    def interfaces(self, sandbox_id: str, pod_uid: str) -> tuple[model.InterfaceStats, ...] | None:
        """The pod's interfaces, or None when they cannot be read live (the
        caller then keeps the CRI snapshot's). Never call it for a hostNetwork
        pod: its namespace holds the node's interfaces, not the pod's."""
        failed = self._failed.get(sandbox_id)
        if failed is not None and time.monotonic() - failed < RETRY_SECONDS:
            return None
        pid = self._pid(sandbox_id, pod_uid)
        try:
            if pid is not None:
                return parse_net_dev(self.hostfs.read_text(f"/proc/{pid}/net/dev"))
        except OSError:
            pass
        with self._lock:
            self._pids.pop(sandbox_id, None)
            self._failed[sandbox_id] = time.monotonic()
        return None

    def retain(self, sandbox_ids: set[str]) -> None:
        with self._lock:
            for gone in self._pids.keys() - sandbox_ids:
                del self._pids[gone]
            for gone in self._failed.keys() - sandbox_ids:
                del self._failed[gone]

    def _pid(self, sandbox_id: str, pod_uid: str) -> int | None:
        pid = self._pids.get(sandbox_id)
        if pid is not None and self._still_in_sandbox(pid, sandbox_id):
            return pid
        pids = self.cgroups.procs(sandbox_id, pod_uid, first=True)
        if not pids:
            return None
        first = pids[0]
        with self._lock:
            self._pids[sandbox_id] = first
        return first

    def _still_in_sandbox(self, pid: int, sandbox_id: str) -> bool:
        """Guards against pid reuse: the cached pid must still be in the sandbox's cgroup."""
        try:
            return sandbox_id in self.hostfs.read_text(f"/proc/{pid}/cgroup", limit=16384)
        except OSError:
            return False
