"""Map a CRI container id / pod uid to its cgroup directories, once.

The kubelet names a pod's cgroup after its QoS class and uid, and the runtime
names the container's cgroup after its id; the exporter learns neither the
QoS class nor the runtime's naming from CRI, so it tries the few names the
kubelet and runtimes use (a handful of stat calls) the first time it meets a
pod or container, and caches the answer. A cached answer stays right until
the cgroup is deleted (QoS class and ids never change), so the only
invalidation is `forget()` when a read finds the cgroup gone, and `retain()`
dropping ids the runtime no longer lists. The tree is never walked.

cgroupfs driver (kubelet pkg/kubelet/cm/qos_container_manager, pod_container_manager):
    kubepods/pod<uid>                 guaranteed (directly under kubepods)
    kubepods/burstable/pod<uid>
    kubepods/besteffort/pod<uid>
  container: <id> (containerd, docker), crio-<id> (CRI-O)
systemd driver (uid dashes become underscores, as systemd unit names need):
    kubepods.slice/kubepods-pod<uid_>.slice
    kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice
    kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid_>.slice
  container: cri-containerd-<id>.scope, crio-<id>.scope, docker-<id>.scope
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Iterable

from cri_exporter.cgroups import layout as layout_mod
from cri_exporter.cgroups.files import LimitFiles
from cri_exporter.cgroups.layout import CGROUPFS, DEFAULT_ROOT, SYSTEMD, CgroupUnavailable, Layout
from cri_exporter.hostfs import HostFS


@dataclass(frozen=True)
class CgroupPaths:
    """Where one cgroup's files are, as local paths ready to open.

    v1 has one directory per controller; v2 has one directory for all.
    `unified` on v1 is the hybrid tree's directory (PSI only), if it exists.
    """

    version: str  # "v1" | "v2"
    relative: str  # e.g. "kubepods/burstable/pod<uid>/<id>"
    dirs: dict[str, str] = field(default_factory=dict)
    unified: str | None = None
    # what is known of this cgroup's limit files (see files.LimitFiles)
    limits: LimitFiles = field(default_factory=LimitFiles, compare=False, repr=False)

    def dir(self, controller: str) -> str | None:
        if self.version == "v2":
            return self.unified
        return self.dirs.get(controller)


def pod_candidates(pod_uid: str, driver: str, cgroup_root: str = "/") -> list[str]:
    """Relative pod directories, one per QoS class, for the driver(s) to try."""
    base = cgroup_root.strip("/")
    prefix = f"{base}/" if base else ""
    out: list[str] = []
    if driver in (CGROUPFS, layout_mod.UNKNOWN):
        out += [
            f"{prefix}kubepods/burstable/pod{pod_uid}",
            f"{prefix}kubepods/besteffort/pod{pod_uid}",
            f"{prefix}kubepods/pod{pod_uid}",
        ]
    if driver in (SYSTEMD, layout_mod.UNKNOWN):
        uid = pod_uid.replace("-", "_")
        out += [
            f"{prefix}kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice",
            f"{prefix}kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice",
            f"{prefix}kubepods.slice/kubepods-pod{uid}.slice",
        ]
    return out


def container_leaves(container_id: str, pod_relative: str) -> list[str]:
    """The names a runtime gives a container's cgroup inside its pod's."""
    if pod_relative.endswith(".slice"):
        return [f"cri-containerd-{container_id}.scope", f"crio-{container_id}.scope", f"docker-{container_id}.scope"]
    return [container_id, f"crio-{container_id}"]


class CgroupResolver:
    """Cached container/pod -> CgroupPaths for one host root."""

    def __init__(self, hostfs: HostFS, root: str = DEFAULT_ROOT, cgroup_root: str = "/"):
        self.hostfs = hostfs
        self.root = root
        self.cgroup_root = cgroup_root
        self._layout: Layout | None = None
        self._pods: dict[str, CgroupPaths] = {}
        self._containers: dict[str, CgroupPaths] = {}
        self._lock = threading.Lock()

    def layout(self) -> Layout:
        """The node's layout, detected once (driver again while still unknown)."""
        if self._layout is None:
            self._layout = layout_mod.detect(self.hostfs, self.root, self.cgroup_root)
        return self._layout

    def check(self) -> Layout:
        """Raise CgroupUnavailable unless the cgroup root is readable now (one syscall)."""
        layout = self.layout()
        probe = self.hostfs.path(layout.hierarchy_roots()[0])
        if not os.access(probe, os.R_OK | os.X_OK):
            raise CgroupUnavailable(f"{probe} is not readable")
        return layout

    def pod(self, pod_uid: str) -> CgroupPaths | None:
        if not pod_uid:
            return None
        cached = self._pods.get(pod_uid)
        if cached is not None:
            return cached
        layout = self._refresh_driver()
        for relative in pod_candidates(pod_uid, layout.driver, self.cgroup_root):
            paths = self._paths_if_exists(layout, relative)
            if paths is not None:
                self._pods[pod_uid] = paths
                return paths
        return None

    def container(self, container_id: str, pod_uid: str) -> CgroupPaths | None:
        if not container_id:
            return None
        cached = self._containers.get(container_id)
        if cached is not None:
            return cached
        pod = self.pod(pod_uid)
        if pod is None:
            return None
        layout = self.layout()
        for leaf in container_leaves(container_id, pod.relative):
            paths = self._paths_if_exists(layout, f"{pod.relative}/{leaf}")
            if paths is not None:
                self._containers[container_id] = paths
                return paths
        return None

    def forget(self, container_id: str | None = None, pod_uid: str | None = None) -> None:
        """Drop a cached answer whose cgroup turned out to be gone."""
        if container_id:
            self._containers.pop(container_id, None)
        if pod_uid:
            self._pods.pop(pod_uid, None)

    def retain(self, container_ids: Iterable[str], pod_uids: Iterable[str]) -> None:
        """Keep only entries the runtime still lists, so the cache cannot grow forever."""
        keep_c, keep_p = set(container_ids), set(pod_uids)
        with self._lock:
            # list(dict) copies in one step under the GIL; iterating the dict itself
            # could meet an insert from the other collector's thread.
            for cid in list(self._containers):
                if cid not in keep_c:
                    self._containers.pop(cid, None)
            for uid in list(self._pods):
                if uid not in keep_p:
                    self._pods.pop(uid, None)

    def _refresh_driver(self) -> Layout:
        layout = self.layout()
        if layout.driver == layout_mod.UNKNOWN:
            layout = self._layout = layout_mod.with_driver(self.hostfs, layout, self.cgroup_root)
        return layout

    def _paths_if_exists(self, layout: Layout, relative: str) -> CgroupPaths | None:
        """CgroupPaths for `relative` if it exists, with only the controllers that have it."""
        if layout.version == "v2":
            local = self.hostfs.path(f"{layout.root}/{relative}")
            return CgroupPaths("v2", relative, {}, local) if os.path.isdir(local) else None
        # One stat in the probe hierarchy settles a miss; the others only on a hit.
        if not os.path.isdir(self.hostfs.path(f"{layout.hierarchy_roots()[0]}/{relative}")):
            return None
        dirs: dict[str, str] = {}
        by_hierarchy: dict[str, str | None] = {}  # cpu and cpuacct may be one directory
        for controller, hierarchy in layout.controllers.items():
            if hierarchy not in by_hierarchy:
                local = self.hostfs.path(f"{hierarchy}/{relative}")
                by_hierarchy[hierarchy] = local if os.path.isdir(local) else None
            if by_hierarchy[hierarchy] is not None:
                dirs[controller] = by_hierarchy[hierarchy]  # type: ignore[assignment]
        if not dirs:
            return None
        unified = None
        if layout.unified is not None:
            local = self.hostfs.path(f"{layout.unified}/{relative}")
            unified = local if os.path.isdir(local) else None
        return CgroupPaths("v1", relative, dirs, unified)
