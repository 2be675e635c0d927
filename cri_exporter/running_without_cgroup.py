"""Containers the runtime lists RUNNING whose cgroup is gone: an exit the runtime never recorded.

When containerd cannot checkpoint a container's exit (its status directory unwritable: a full
or read-only disk; crilab.scenario.unrecorded_exit), 1.6.20, 1.7.24 and 2.1.9 alike delete the
task, and with it the container's cgroup, but keep listing the container CONTAINER_RUNNING,
retrying with a back-off up to 5 minutes. The kubelet believes the runtime and never restarts
it: a silent outage of that container. The pod stats show it only on 1.6/1.7
(`cri_stats_pod_sandboxes_unavailable{reason="task_gone"}`); 2.x answers them normally. The
cgroup reading sees it on every version: the container's own cgroup is gone while its pod's is
there (tests/test_running_without_cgroup_real.py on cgroup v1; tests/test_cgroup_v2_node.py on v2 with
the systemd driver, where the container's scope goes and its pod's slice stays).

A container counts only when all of these hold, so that the normal races and a layout the agent
could not resolve never read as a dead container:

- its pod is ready, runc-like (inventory.cgroup_backed: a VM handler's containers have no host
  cgroup of their own), and the pod's cgroup was read in the same reading. An unresolved layout,
  a missing cgroup root or a VM handler leave the pod's cgroup not found too
  (`cri_cgroups_not_read{reason="not_found"}`), and an unreadable root or cgroup is
  `permission_denied`, never "not found";
- the agent has found some container's cgroup on this node since it started: a container leaf
  naming the agent does not know would otherwise make every container look gone;
- its own cgroup was not found in two readings in a row, at least GRACE_SECONDS apart, with the
  runtime's fresh ListContainers calling it running each time. A container that just exited is
  listed running for a moment after its cgroup went (containerd handles the exit in well under a
  second); one that just started already has its cgroup when CRI first calls it running (runc
  creates the cgroup before the task starts). A reading that did not reach the container (cut
  short by the scrape deadline) neither confirms nor clears it.

Pause (sandbox) containers are not in ListContainers: a sandbox whose pause died is NOTREADY
(`cri_pod_state`), which this does not count. Only current instances (inventory.py) are judged;
the state is kept for running ones only, so it is bounded by the node's running containers.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Mapping

from cri_exporter.cri import model
from cri_exporter.inventory import ContainerIdentity, Inventory

# The least time between the first and the confirming reading (see above).
GRACE_SECONDS = 30.0

FAMILY = "cri_container_running_without_cgroup_since_time_seconds"
HELP = ("Unix time since which a container the runtime lists running has had no cgroup (its task is gone: an "
        "exit the runtime could not record); only for such containers, seen so in two readings at least "
        f"{GRACE_SECONDS:.0f} s apart.")


class RunningWithoutCgroup:
    """What the readings so far tell: container id -> (first seen without cgroup, readings since)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a timed-out scrape's collection may still be running
        self._seen: dict[str, tuple[float, int]] = {}
        self._leaf_known = False

    def update(self, inv: Inventory, containers: Mapping[str, object | None], pods: Mapping[str, object | None],
               denied: dict, backed: Callable[[model.PodSandbox | None], bool],
               now: float | None = None) -> list[tuple[ContainerIdentity, float]]:
        """Take one reading (cgroup_readings.Readings' `containers`, `pods`: by key a value or None
        where the cgroup was not read, as UsageRows.index; `denied_containers`)
        and answer the confirmed containers, each with the time it was first seen without cgroup."""
        now = time.time() if now is None else now
        confirmed: list[tuple[ContainerIdentity, float]] = []
        with self._lock:
            self._leaf_known = self._leaf_known or any(v is not None for v in containers.values())
            before, seen = self._seen, {}
            for ident, c in inv.current_containers.items():
                if c.state != "running" or containers.get(c.id) is not None:  # most: read live, so not gone
                    continue
                gone = self._gone(inv, c, containers, pods, denied, backed)
                if gone is None:  # this reading did not reach it: as it was
                    if c.id in before:
                        seen[c.id] = before[c.id]
                    continue
                if not gone:
                    continue
                first, count = before.get(c.id, (now, 0))
                seen[c.id] = (first, count + 1)
                if count + 1 >= 2 and now - first >= GRACE_SECONDS:
                    confirmed.append((ident, first))
            self._seen = seen
        return confirmed

    def _gone(self, inv: Inventory, c: model.Container, containers: Mapping[str, object | None],
              pods: Mapping[str, object | None], denied: dict,
              backed: Callable[[model.PodSandbox | None], bool]) -> bool | None:
        """Whether `c` is running without cgroup by this reading; None if it did not reach
        the container or its pod (cut short by the scrape deadline)."""
        pod = inv.pods_by_id.get(c.pod_sandbox_id)
        if pod is None or pod.state != "ready" or not backed(pod) or c.id in denied:
            return False
        if c.id not in containers or pod.k8s_uid not in pods:
            return None
        return self._leaf_known and containers[c.id] is None and pods[pod.k8s_uid] is not None
