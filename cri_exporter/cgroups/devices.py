"""Block device names for "major:minor" keys, from /sys/dev/block/<maj:min>/uevent.

uevent holds `DEVNAME=sda` (and MAJOR=, MINOR=, DEVTYPE=). Found names are
cached for the process's life (a maj:min is not reused while the device
exists); a miss is retried next time since the device may appear later, and
costs one failed open.
"""
from __future__ import annotations

from cri_exporter.hostfs import HostFS


class DeviceNames:
    def __init__(self, hostfs: HostFS):
        self.hostfs = hostfs
        self._names: dict[str, str] = {}

    def name(self, major_minor: str) -> str:
        cached = self._names.get(major_minor)
        if cached is not None:
            return cached
        try:
            text = self.hostfs.read_text(f"/sys/dev/block/{major_minor}/uevent", limit=4096)
        except (OSError, ValueError):
            return major_minor
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key == "DEVNAME" and value.strip():
                self._names[major_minor] = value.strip()
                return self._names[major_minor]
        return major_minor
