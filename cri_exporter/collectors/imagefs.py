"""Image and container filesystems (CRI ImageFsInfo + statvfs) and the image store (ListImages).

The runtime says how much it uses; only statvfs of the mountpoint says how
much is left, which is what the kubelet evicts on. The mountpoint is read
under the host root, so a DaemonSet with the host at /host sees the node's
filesystem, not its own overlay.

ImageFsInfo and ListImages are asked at most once every --image-interval
(kept_answer.py says why and what happens when the runtime stops answering);
`cri_imagefs_info_age_seconds` and `cri_images_list_age_seconds` say how old
the answers served are. statvfs is read on every scrape: it is cheap and it
is what the kubelet evicts on.
"""
from __future__ import annotations

import os
from typing import Iterable

import structlog
from prometheus_client.core import GaugeMetricFamily

from cri_exporter.collectors.base import ScrapeContext
from cri_exporter.cri import model
from cri_exporter.exposition import AnyFamily
from cri_exporter.kept_answer import KeptAnswer

log = structlog.get_logger(__name__)

_LABELS = ["fs", "mountpoint"]


_FS_FAMILIES = ("cri_imagefs_used_bytes", "cri_imagefs_inodes_used", "cri_imagefs_capacity_bytes",
                "cri_imagefs_available_bytes", "cri_imagefs_inodes", "cri_imagefs_inodes_free")
_IMAGE_FAMILIES = ("cri_images", "cri_images_size_bytes", "cri_images_pinned")
_AGE_FAMILIES = ("cri_imagefs_info_age_seconds", "cri_images_list_age_seconds")


class ImageFsCollector:
    name = "imagefs"
    families = _FS_FAMILIES + _IMAGE_FAMILIES + _AGE_FAMILIES

    def __init__(self, interval: float = 60.0):
        self._fs_info: KeptAnswer[list[model.FilesystemUsage]] = KeptAnswer(interval)
        self._images: KeptAnswer[list[model.Image]] = KeptAnswer(interval)

    def collect(self, ctx: ScrapeContext) -> Iterable[AnyFamily]:
        # Each call only when a family it feeds is served (ListImages is the big one).
        client = ctx.client
        fs_answer = self._fs_info.get(client.endpoint, lambda: client.image_fs_info(timeout=ctx.rpc_timeout())) \
            if ctx.metrics.wants_any(_FS_FAMILIES) else None
        images_answer = self._images.get(client.endpoint, lambda: client.list_images(timeout=ctx.rpc_timeout())) \
            if ctx.metrics.wants_any(_IMAGE_FAMILIES) else None
        filesystems = fs_answer.value if fs_answer is not None else []
        images = images_answer.value if images_answer is not None else None

        used = GaugeMetricFamily("cri_imagefs_used_bytes", "Bytes the runtime uses on the filesystem, from ImageFsInfo.", labels=_LABELS)
        inodes_used = GaugeMetricFamily("cri_imagefs_inodes_used", "Inodes the runtime uses on the filesystem, from ImageFsInfo.", labels=_LABELS)
        capacity = GaugeMetricFamily("cri_imagefs_capacity_bytes", "Size of the filesystem holding the mountpoint, from statvfs.", labels=_LABELS)
        available = GaugeMetricFamily("cri_imagefs_available_bytes", "Bytes available to unprivileged users on the filesystem, from statvfs.", labels=_LABELS)
        inodes = GaugeMetricFamily("cri_imagefs_inodes", "Total inodes of the filesystem, from statvfs.", labels=_LABELS)
        inodes_free = GaugeMetricFamily("cri_imagefs_inodes_free", "Free inodes of the filesystem, from statvfs.", labels=_LABELS)

        seen: set[tuple[str, str]] = set()
        for fs in filesystems:
            key = (fs.kind, fs.mountpoint)
            if key in seen:
                continue
            seen.add(key)
            labels = list(key)
            if fs.used_bytes is not None:
                used.add_metric(labels, float(fs.used_bytes))
            if fs.inodes_used is not None:
                inodes_used.add_metric(labels, float(fs.inodes_used))
            if not fs.mountpoint:
                continue
            try:
                st = os.statvfs(ctx.hostfs.path(fs.mountpoint))
            except OSError as err:
                # Not mounted into the agent's container: the runtime's own
                # numbers above still stand.
                log.debug("statvfs failed", mountpoint=fs.mountpoint, error=str(err))
                continue
            capacity.add_metric(labels, float(st.f_blocks * st.f_frsize))
            available.add_metric(labels, float(st.f_bavail * st.f_frsize))
            inodes.add_metric(labels, float(st.f_files))
            inodes_free.add_metric(labels, float(st.f_ffree))
        yield from (used, inodes_used, capacity, available, inodes, inodes_free)
        if fs_answer is not None:
            age = GaugeMetricFamily("cri_imagefs_info_age_seconds",
                                    "Age of the ImageFsInfo answer cri_imagefs_used_bytes and cri_imagefs_inodes_used "
                                    "come from (asked at most every --image-interval).")
            age.add_metric([], self._fs_info.age(fs_answer))
            yield age
        if images_answer is None or images is None:
            return

        count = GaugeMetricFamily("cri_images", "Images in the runtime's image store, from ListImages.")
        count.add_metric([], float(len(images)))
        size = GaugeMetricFamily("cri_images_size_bytes", "Total size of the images in the store, as ListImages reports them.")
        size.add_metric([], float(sum(i.size_bytes for i in images)))
        pinned = GaugeMetricFamily("cri_images_pinned", "Images the runtime pins (never garbage-collected, e.g. the pause image).")
        pinned.add_metric([], float(sum(1 for i in images if i.pinned)))
        age = GaugeMetricFamily("cri_images_list_age_seconds",
                                "Age of the ListImages answer the cri_images* families come from (asked at most every "
                                "--image-interval).")
        age.add_metric([], self._images.age(images_answer))
        yield from (count, size, pinned, age)
