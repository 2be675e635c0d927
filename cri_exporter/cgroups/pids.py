"""pids controller: pids.current (tasks, threads included) and pids.max ("max"
= no limit). Same files in v1 and v2 (cgroup-v1/pids.rst, cgroup-v2.rst)."""
from __future__ import annotations

from cri_exporter.cgroups import files
from cri_exporter.cgroups.files import CgroupGone
from cri_exporter.cgroups.paths import CgroupPaths
from cri_exporter.cgroups.stats import PidsStats


def read_pids(paths: CgroupPaths) -> PidsStats | None:
    """Task count and limit, or None if the cgroup is gone."""
    try:
        return _read_pids(paths)
    except CgroupGone:
        return None


def _read_pids(paths: CgroupPaths, limits=files.UNKEPT) -> PidsStats:
    d = paths.dir("pids")
    if d is None:
        return PidsStats()
    return PidsStats(
        current=files.to_int(files.read(d, "pids.current"), "pids.current"),
        limit=limits.value(d, "pids.max", files.limit),
    )
