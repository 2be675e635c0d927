"""Containers the runtime lists running, held to the cgroups the node has (read-only)."""
from __future__ import annotations

import time

from cri_exporter.cgroups import CgroupUnavailable, CgroupUnreadable, NodeCgroups
from cri_exporter.cri import CriError
from cri_exporter.doctor.model import Severity, failed, passed, skipped
from cri_exporter.doctor.registry import check
from cri_exporter.doctor.requirements import CGROUPFS, CRI_ANSWERS
from cri_exporter.inventory import cgroup_backed

REF_DEBUG = "https://kubernetes.io/docs/tasks/debug/debug-cluster/crictl/"

# A container that has just exited is listed running for a moment after its cgroup went (containerd
# handles the exit in well under a second): one still so this much later is asked about again.
RECHECK_AFTER_SECONDS = 2.0


@check("cri.running_without_cgroup", Severity.WARNING, requires=(CRI_ANSWERS, CGROUPFS))
def running_without_cgroup(ctx):
    """A container the runtime lists running whose cgroup is gone has no process left: its exit
    happened and the runtime could not record it (containerd 1.6.20, 1.7.24 and 2.1.9 alike keep
    it CONTAINER_RUNNING when its status checkpoint is unwritable: crilab.scenario.unrecorded_exit),
    so the kubelet never restarts it. As the exporter's running_without_cgroup.py: only where the
    container's ready, runc-like pod's cgroup is found and its own is not, with some container's
    cgroup found on the node (a layout the agent cannot resolve is no finding), and only if it is
    still so when asked again RECHECK_AFTER_SECONDS later."""
    cgroups = NodeCgroups(ctx.hostfs)
    try:
        cgroups.check()
    except CgroupUnavailable as err:
        return skipped(f"the cgroup root cannot be read: {err}")
    try:
        gone, found, running = _gone(ctx.client, cgroups)
    except CriError as err:
        return skipped(f"the runtime's containers cannot be listed: {err}")
    except (CgroupUnreadable, CgroupUnavailable) as err:
        return skipped(f"some cgroups cannot be read: {err}")
    if not running:
        return passed("no container of a ready, runc-like pod is running")
    if not found:
        return skipped(f"no running container's cgroup was found ({running} running): the cgroup layout is "
                       "not one the agent resolves")
    if gone:
        time.sleep(RECHECK_AFTER_SECONDS)
        try:
            again = _gone(ctx.client, NodeCgroups(ctx.hostfs))[0]
        except (CriError, CgroupUnreadable, CgroupUnavailable) as err:
            return skipped(f"asked again, the runtime or the cgroups did not answer: {err}")
        gone = [g for g in gone if g in again]
    if not gone:
        return passed(f"every running container whose pod's cgroup was found has its own ({found} of {running})")
    return failed(
        f"{len(gone)} container(s) listed running have no cgroup (no process left)",
        seen="\n".join(f"{cid[:13]} {name}" for cid, name in gone),
        why="The runtime could not record their exit: CRI still reports them running, so the kubelet does not "
        "restart them and they are down. containerd 1.6 and 1.7 also fail their pods' stats (cri.pod_stats); "
        "2.x answers those, and only this shows it.",
        fix="journalctl -u containerd | grep 'TaskExit'   # why: e.g. \"failed to checkpoint status\", "
        "a full or read-only /var/lib/containerd\n"
        "Make the runtime's state directory writable (free space, remount read-write); containerd records the exit "
        "at its next retry (back-off up to 5 minutes), or at once on `systemctl restart containerd`, and the kubelet "
        "then restarts the container.",
        refs=[REF_DEBUG])


def _gone(client, cgroups: NodeCgroups) -> tuple[list[tuple[str, str]], int, int]:
    """(id, namespace/pod/container) of the running containers whose pod's cgroup is found and
    their own is not; how many running containers' cgroups were found; how many were asked."""
    pods = {p.id: p for p in client.list_pod_sandboxes()}
    gone: list[tuple[str, str]] = []
    found = running = 0
    for c in client.list_containers():
        pod = pods.get(c.pod_sandbox_id)
        if c.state != "running" or pod is None or pod.state != "ready" or not cgroup_backed(pod):
            continue
        running += 1
        if cgroups.resolver.container(c.id, pod.k8s_uid, strict=True) is not None:
            found += 1
        elif cgroups.resolver.pod(pod.k8s_uid, strict=True) is not None:
            gone.append((c.id, f"{pod.k8s_namespace}/{pod.k8s_name}/{c.k8s_name}"))
    return gone, found, running
