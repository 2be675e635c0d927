"""Map a CRI container id / pod uid to its cgroup directories, once.

The kubelet names a pod's cgroup after its QoS class and uid, and the runtime
names the container's cgroup after its id; the exporter learns neither the
QoS class nor the runtime's naming from CRI, so it tries the few names the
kubelet and runtimes use (a handful of stat calls) the first time it meets a
pod or container, and caches the answer. A cached answer stays right until
the cgroup is deleted (QoS class and ids never change), so the only
invalidation is `forget()` when a read finds the cgroup gone, and `retain()`
dropping ids the runtime no longer lists. The tree is never walked. A
candidate whose lookup is refused (EACCES: a parent directory the agent may
not search) is not a miss: when no candidate is found and one was refused,
the cgroup is unreadable, not absent.

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
import stat
import threading
from sys import intern
from typing import Iterable, Sequence

from cri_exporter.cgroups import layout as layout_mod
from cri_exporter.cgroups.files import DENIED_ERRNOS, CgroupUnreadable, LimitFiles
from cri_exporter.cgroups.layout import CGROUPFS, DEFAULT_ROOT, SYSTEMD, CgroupUnavailable, Layout
from cri_exporter.hostfs import HostFS


class CgroupPaths(LimitFiles):
    """Where one cgroup's files are, as local paths ready to open, and what
    is known of its limit files (`limits`: the object itself, one object a
    cgroup rather than two: 0.3 MB at 7,500 cgroups).

    v1 has one directory per controller; v2 has one directory for all.
    `unified` on v1 is the hybrid tree's directory (PSI only), if it exists.
    Kept for every container and pod of the node, so nothing of a path is its
    own that others hold already: the hierarchies' local roots are shared by
    every cgroup of the node (six full paths a cgroup were about 1.4 KB,
    10 MB at 5,000 containers), and `relative` is kept in parts joined when
    read: a pod's QoS directory and name prefix (`kubepods/burstable/pod`,
    shared by its class) and its uid (the CRI client's string), a container's
    pod parts and its leaf (containerd's cgroupfs leaf is the container id,
    again the client's string). As whole strings the 7,500 relative paths
    were 1.1 MB at 5,000 containers.
    """

    __slots__ = ("version", "_prefix", "_name", "_leaf", "roots", "unified_root", "read_at")

    def __init__(self, version: str, relative: str, roots: dict[str, str] | None = None,
                 unified_root: str | None = None, name: str = "", leaf: str | None = None):
        super().__init__()
        self.version = version  # "v1" | "v2"
        # relative == prefix + name (+ "/" + leaf), e.g. "kubepods/burstable/pod<uid>/<id>"
        self._prefix, self._name, self._leaf = relative, name, leaf
        self.roots = roots or {}  # controller -> local hierarchy root holding this cgroup (v1)
        self.unified_root = unified_root  # the v2 tree's local root, if it holds this cgroup
        self.read_at = 0.0  # wall-clock time of the last whole reading (NodeCgroups), 0.0: never

    @property
    def relative(self) -> str:
        leaf = self._leaf
        return self._prefix + self._name if leaf is None else f"{self._prefix}{self._name}/{leaf}"

    @property
    def limits(self) -> LimitFiles:
        """What is known of this cgroup's limit files (files.LimitFiles)."""
        return self

    @property
    def unified(self) -> str | None:
        root = self.unified_root
        if root is None:
            return None
        leaf = self._leaf
        return f"{root}/{self._prefix}{self._name}" if leaf is None else f"{root}/{self._prefix}{self._name}/{leaf}"

    @property
    def dirs(self) -> dict[str, str]:
        relative = self.relative
        return {c: f"{root}/{relative}" for c, root in self.roots.items()}

    def dir(self, controller: str) -> str | None:
        if self.version == "v2":
            return self.unified
        root = self.roots.get(controller)
        if root is None:
            return None
        leaf = self._leaf  # joined here in one step: this runs for every file of every cgroup read
        return f"{root}/{self._prefix}{self._name}" if leaf is None else f"{root}/{self._prefix}{self._name}/{leaf}"

    @property
    def procs_dir(self) -> str | None:
        """The directory whose cgroup.procs lists this cgroup's processes: v1
        has one per hierarchy, and pids or memory is mounted wherever pods run."""
        return self.unified if self.version == "v2" else (self.dir("pids") or self.dir("memory"))

    def __eq__(self, other) -> bool:
        return isinstance(other, CgroupPaths) and (self.version, self.relative, self.roots, self.unified_root) == (
            other.version, other.relative, other.roots, other.unified_root)

    def __repr__(self) -> str:
        return f"CgroupPaths({self.version!r}, {self.relative!r}, {self.dirs!r}, {self.unified!r})"


def pod_candidates(pod_uid: str, driver: str, cgroup_root: str = "/") -> list[str]:
    """Relative pod directories, one per QoS class, for the driver(s) to try."""
    return [prefix + name for prefix, name in _pod_candidates(pod_uid, driver, cgroup_root)]


def _pod_candidates(pod_uid: str, driver: str, cgroup_root: str = "/") -> list[tuple[str, str]]:
    """pod_candidates as (prefix, name): the prefix one string for every pod
    of its class (interned), the name the uid itself under cgroupfs."""
    base = cgroup_root.strip("/")
    prefix = f"{base}/" if base else ""
    out: list[tuple[str, str]] = []
    if driver in (CGROUPFS, layout_mod.UNKNOWN):
        out += [
            (intern(f"{prefix}kubepods/burstable/pod"), pod_uid),
            (intern(f"{prefix}kubepods/besteffort/pod"), pod_uid),
            (intern(f"{prefix}kubepods/pod"), pod_uid),
        ]
    if driver in (SYSTEMD, layout_mod.UNKNOWN):
        name = pod_uid.replace("-", "_") + ".slice"
        out += [
            (intern(f"{prefix}kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"), name),
            (intern(f"{prefix}kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"), name),
            (intern(f"{prefix}kubepods.slice/kubepods-pod"), name),
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
        self._roots: dict[tuple, dict[str, str]] = {}
        self._hierarchy_roots: dict[str, str] = {}
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
            raise CgroupUnavailable(f"{probe} is not readable", denied=os.path.lexists(probe))
        return layout

    def pod(self, pod_uid: str, strict: bool = False) -> CgroupPaths | None:
        """The pod's cgroup, None if not found. `strict`: raise CgroupUnreadable
        (or CgroupUnavailable) rather than answer None when access was refused."""
        if not pod_uid:
            return None
        cached = self._pods.get(pod_uid)
        if cached is not None:
            return cached
        try:
            layout = self._refresh_driver()
            paths = self._first_existing(layout, _pod_candidates(pod_uid, layout.driver, self.cgroup_root))
        except (CgroupUnreadable, CgroupUnavailable):
            if strict:
                raise
            return None
        if paths is not None:
            self._pods[pod_uid] = paths
        return paths

    def container(self, container_id: str, pod_uid: str, strict: bool = False) -> CgroupPaths | None:
        """The container's cgroup, None if not found; `strict` as for pod()."""
        if not container_id:
            return None
        cached = self._containers.get(container_id)
        if cached is not None:
            return cached
        pod = self.pod(pod_uid, strict)
        if pod is None:
            return None
        leaves = [(pod, leaf) for leaf in container_leaves(container_id, pod.relative)]
        try:
            paths = self._first_existing(self.layout(), leaves)
        except CgroupUnreadable:
            if strict:
                raise
            return None
        if paths is not None:
            self._containers[container_id] = paths
        return paths

    def _first_existing(self, layout: Layout, candidates: Sequence[tuple[str | CgroupPaths, str]]) -> CgroupPaths | None:
        """The first candidate that exists; if none does and one was refused, CgroupUnreadable.
        A candidate is (prefix, name) for a pod, (the pod's paths, leaf) for a container."""
        refused: CgroupUnreadable | None = None
        for head, tail in candidates:
            try:
                paths = self._paths_if_exists(layout, head, tail)
            except CgroupUnreadable as err:
                refused = refused or err
                continue
            if paths is not None:
                return paths
        if refused is not None:
            raise refused
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

    def _paths_if_exists(self, layout: Layout, head: str | CgroupPaths, tail: str) -> CgroupPaths | None:
        """CgroupPaths for the candidate (head, tail) if it exists, with only the controllers that have it."""
        if isinstance(head, CgroupPaths):  # a container: its pod's parts and a leaf
            prefix, name, leaf = head._prefix, head._name, tail
            relative = f"{prefix}{name}/{leaf}"
        else:
            prefix, name, leaf = head, tail, None
            relative = prefix + name
        if layout.version == "v2":
            root = self._local_root(layout.root)
            return CgroupPaths("v2", prefix, None, root, name, leaf) if _is_dir(f"{root}/{relative}") else None
        # One stat in the probe hierarchy settles a miss; the others only on a hit.
        if not _is_dir(f"{self._local_root(layout.hierarchy_roots()[0])}/{relative}"):
            return None
        roots: dict[str, str] = {}
        present: dict[str, bool] = {}  # cpu and cpuacct may be one hierarchy
        for controller, hierarchy in layout.controllers.items():
            root = self._local_root(hierarchy)
            if hierarchy not in present:
                present[hierarchy] = _is_dir(f"{root}/{relative}")
            if present[hierarchy]:
                roots[controller] = root
        if not roots:
            return None
        unified = None
        if layout.unified is not None:
            root = self._local_root(layout.unified)
            unified = root if _is_dir(f"{root}/{relative}") else None
        # Every cgroup of a node has the same controllers: one shared dict.
        roots = self._roots.setdefault(tuple(roots.items()), roots)
        return CgroupPaths("v1", prefix, roots, unified, name, leaf)

    def _local_root(self, hierarchy: str) -> str:
        """The local path of a hierarchy's root, one string object for all its cgroups."""
        local = self._hierarchy_roots.get(hierarchy)
        if local is None:
            local = self._hierarchy_roots[hierarchy] = self.hostfs.path(hierarchy).rstrip("/")
        return local


def _is_dir(path: str) -> bool:
    """os.path.isdir, except that a refused lookup raises CgroupUnreadable instead of saying no."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError as err:
        if err.errno in DENIED_ERRNOS:
            raise CgroupUnreadable(path, err.strerror or "permission denied") from err
        return False
    except ValueError:  # a NUL in an id from the runtime
        return False
