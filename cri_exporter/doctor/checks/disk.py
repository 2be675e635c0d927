"""Free space and inodes on the kubelet's filesystems against its hard
eviction thresholds: below them the kubelet evicts pods and GCs images."""
from __future__ import annotations

import os

from cri_exporter.doctor.facts.quantity import parse_quantity
from cri_exporter.doctor.facts import containerd as cfacts
from cri_exporter.doctor.model import Severity, failed, passed, skipped, warned
from cri_exporter.doctor.registry import check

REF = "https://kubernetes.io/docs/concepts/scheduling-eviction/node-pressure-eviction/"
# Warn this many percentage points before a percentage threshold is crossed.
MARGIN_POINTS = 5.0

statvfs = os.statvfs  # tests replace it to simulate a full filesystem


def _imagefs_path(ctx) -> str:
    if ctx.runtime_kind == "crio":
        return "/var/lib/containers/storage"
    proc = ctx.containerd_location.process
    flag = cfacts.parse_args(proc.args[1:]).get("root") if proc is not None and proc.args else None
    if flag:  # --root on containerd's command line wins over the config (k3s, RKE2 pass it)
        return flag
    root = ctx.containerd.data.get("root") if not ctx.containerd.errors else None
    return str(root or "/var/lib/containerd")


def _nodefs_path(ctx) -> str:
    path: str = ctx.kubelet.flags.get("root-dir", "/var/lib/kubelet")
    return path


def _check(ctx, kind: str, path: str):
    thresholds, where = ctx.kubelet.eviction_hard()
    if not ctx.hostfs.is_dir(path):
        return skipped(f"{path} does not exist on this host")
    try:
        st = statvfs(ctx.hostfs.path(path))
    except OSError as e:
        return skipped(f"statvfs({path}) failed: {e}")
    total = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    seen = [f"{path}: {free / 2**30:.1f}Gi of {total / 2**30:.1f}Gi free"
            + (f" ({100 * free / total:.1f}%)" if total else "")]
    fails: list[str] = []
    warns: list[str] = []
    for signal, avail, capacity, unit in (
        (f"{kind}.available", free, total, "space"),
        (f"{kind}.inodesFree", st.f_favail, st.f_files, "inodes"),
    ):
        limit = thresholds.get(signal)
        if unit == "inodes":
            seen.append(f"inodes: {st.f_favail} of {st.f_files} free")
        if not limit or not capacity:
            continue
        # A default only newer kubelets have (imagefs.inodesFree, 1.30+): none
        # before, and with the version unknown, crossing it is only a warning.
        exists, assumed = ctx.kubelet.default_threshold(signal)
        if exists is False:
            seen.append(f"{signal}: not checked, {assumed}")
            continue
        seen.append(f"{signal}<{limit} ({where})" + (f"; {assumed}" if assumed else ""))
        below = fails if exists else warns
        if limit.endswith("%"):
            pct = 100 * avail / capacity
            need = float(limit[:-1])
            if pct < need:
                below.append(f"{unit}: {pct:.1f}% free, below {signal}<{limit}")
            elif pct < need + MARGIN_POINTS:
                warns.append(f"{unit}: {pct:.1f}% free, within {MARGIN_POINTS:g} points of {signal}<{limit}")
        else:
            need_q = parse_quantity(limit)
            if need_q is not None and avail < need_q:
                below.append(f"{unit}: {avail} free, below {signal}<{limit}")
    if not fails and not warns:
        return passed(f"{kind} {path} has room above the eviction thresholds", seen="\n".join(seen))
    make = failed if fails else warned
    return make(
        (fails or warns)[0], seen="\n".join(fails + warns + seen),
        why=f"Below the threshold the kubelet sets DiskPressure, evicts pods and refuses new ones; "
        f"{'image GC deletes unused images' if kind == 'imagefs' else 'pod logs and emptyDirs are evicted'}.",
        fix=("crictl rmi --prune   # unused images\n" if kind == "imagefs" else
         "du -xsh /var/lib/kubelet/pods/* /var/log/pods/* | sort -h | tail   # find the biggest\n")
        + "journalctl --vacuum-size=500M   # if the journal shares the filesystem\n"
        "or grow the filesystem",
        refs=[REF])


@check("disk.imagefs", Severity.CRITICAL)
def imagefs(ctx):
    """The runtime's image filesystem (containerd root or CRI-O storage)."""
    return _check(ctx, "imagefs", _imagefs_path(ctx))


@check("disk.nodefs", Severity.CRITICAL)
def nodefs(ctx):
    """The kubelet's root directory filesystem (pods' volumes, logs)."""
    return _check(ctx, "nodefs", _nodefs_path(ctx))
