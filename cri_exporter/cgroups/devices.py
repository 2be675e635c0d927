"""Block device names for "major:minor" keys, from /sys/dev/block/<maj:min>/uevent.

uevent holds `DEVNAME=sda` (and MAJOR=, MINOR=, DEVTYPE=). Found names are
cached for the process's life (a maj:min is not reused while the device
exists); a miss is retried since the device may appear later, but at most once
every MISS_RETRY_SECONDS: a scrape asks for every cgroup's devices, and one
without a uevent cost a failed open and a host path resolution in each of them
(1,500 a scrape at 1,000 fake containers, some 3% of its CPU). Shorter than any
scrape interval, so the next scrape still asks again.
"""
from __future__ import annotations

import time

from cri_exporter.hostfs import HostFS

MISS_RETRY_SECONDS = 5.0


class DeviceNames:
    def __init__(self, hostfs: HostFS):
        self.hostfs = hostfs
        self._names: dict[str, str] = {}
        # maj:min -> monotonic time before which a miss is not asked again, and the
        # maj:min string answered meanwhile: one string for every cgroup's series of
        # the device, not the one parsed from each cgroup's file (7,500 of them held
        # in the scrape's I/O families at 5,000 containers, 0.4 MB of its peak).
        self._missed: dict[str, tuple[float, str]] = {}

    def name(self, major_minor: str) -> str:
        cached = self._names.get(major_minor)
        if cached is not None:
            return cached
        now = time.monotonic()
        missed = self._missed.get(major_minor)
        if missed is not None and now < missed[0]:
            return missed[1]
        try:
            text = self.hostfs.read_text(f"/sys/dev/block/{major_minor}/uevent", limit=4096)
        except (OSError, ValueError):
            text = ""
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key == "DEVNAME" and value.strip():
                self._names[major_minor] = value.strip()
                self._missed.pop(major_minor, None)
                return self._names[major_minor]
        if len(self._missed) > 4096:  # maj:min keys are few; bound a pathological tree
            self._missed.clear()
        shared = missed[1] if missed is not None else major_minor
        self._missed[major_minor] = (now + MISS_RETRY_SECONDS, shared)
        return shared
