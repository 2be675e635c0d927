"""Which cgroup hierarchy the node runs, found from what is mounted where.

- v2 (unified): `/sys/fs/cgroup/cgroup.controllers` exists; one tree.
- v1: one directory per controller under /sys/fs/cgroup. Distributions mount
  some controllers together (`cpu,cpuacct` with `cpu` and `cpuacct` as
  symlinks on systemd hosts; separate `cpu` and `cpuacct` mounts elsewhere,
  as on the development VMs), so a controller is found by name or as one
  member of a comma-joined directory name.
- hybrid: v1 controllers plus a controller-less v2 tree at
  `/sys/fs/cgroup/unified`. It is reported as "v1" because every resource
  controller is v1; the unified tree is kept because runc places containers
  in it too and the kernel keeps PSI (`*.pressure`) there per cgroup (seen on
  kernel 6.18 with containerd 1.6.20 / runc 1.1.5).

The driver (cgroupfs or systemd) is what the kubelet's pod root is called:
`kubepods` (cgroupfs) or `kubepods.slice` (systemd). Before the first pod
exists neither is there, so the driver is "unknown" and detected again later.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from cri_exporter.cgroups.files import DENIED_ERRNOS
from cri_exporter.hostfs import HostFS

DEFAULT_ROOT = "/sys/fs/cgroup"
# The v1 controllers the readers use; others (cpuset, devices, ...) are not read.
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids", "blkio")
# Where a v1 pod directory is looked for first: every kubelet-created pod has one.
V1_PROBE_ORDER = ("memory", "cpu", "pids", "cpuacct", "blkio")

CGROUPFS = "cgroupfs"
SYSTEMD = "systemd"
UNKNOWN = "unknown"


class CgroupUnavailable(Exception):
    """The cgroup root is missing or unreadable: nothing can be read at all.

    `denied`: it is there but permission to read it is denied."""

    def __init__(self, message: str, denied: bool = False):
        super().__init__(message)
        self.denied = denied


@dataclass(frozen=True)
class Layout:
    version: str  # "v1" | "v2"
    driver: str  # "cgroupfs" | "systemd" | "unknown"
    root: str  # host path of the cgroup mount root
    # v1: controller -> host path of its hierarchy's root; v2: empty.
    controllers: dict[str, str] = field(default_factory=dict)
    # v2: the root; hybrid v1: the controller-less unified tree; else None.
    unified: str | None = None
    hybrid: bool = False

    def hierarchy_roots(self) -> list[str]:
        """Host paths where a kubepods tree can live, probe order first."""
        if self.version == "v2":
            return [self.root]
        return [self.controllers[c] for c in V1_PROBE_ORDER if c in self.controllers]


def detect(hostfs: HostFS, root: str = DEFAULT_ROOT, cgroup_root: str = "/") -> Layout:
    """Look at the cgroup mount under the host root; raises CgroupUnavailable."""
    try:
        entries = os.listdir(hostfs.path(root))
    except OSError as err:
        raise CgroupUnavailable(f"cannot list {root} under {hostfs.root}: {err}", err.errno in DENIED_ERRNOS) from err
    if "cgroup.controllers" in entries:
        layout = Layout("v2", UNKNOWN, root, {}, unified=root)
    else:
        controllers: dict[str, str] = {}
        for name in sorted(entries):
            members = name.split(",")
            for controller in V1_CONTROLLERS:
                # An exact directory (or symlink) wins over a joined one.
                if controller in members and (controller not in controllers or name == controller):
                    controllers[controller] = f"{root}/{name}"
        if not controllers:
            raise CgroupUnavailable(f"{root} under {hostfs.root} has neither cgroup.controllers nor v1 controller directories")
        unified = f"{root}/unified" if "unified" in entries else None
        layout = Layout("v1", UNKNOWN, root, controllers, unified=unified, hybrid=unified is not None)
    return with_driver(hostfs, layout, cgroup_root)


def with_driver(hostfs: HostFS, layout: Layout, cgroup_root: str = "/") -> Layout:
    """The layout with its driver found from the kubepods root, if one exists yet."""
    base = cgroup_root.strip("/")
    for hierarchy in layout.hierarchy_roots():
        parent = f"{hierarchy}/{base}" if base else hierarchy
        if hostfs.is_dir(f"{parent}/kubepods.slice"):
            return dataclasses.replace(layout, driver=SYSTEMD)
        if hostfs.is_dir(f"{parent}/kubepods"):
            return dataclasses.replace(layout, driver=CGROUPFS)
    return layout

