"""A stats snapshot's values kept packed, a row of 64-bit numbers an id, not objects.

The snapshot is held from one refresh to the next (minutes), but scrapes read
a few of its values a container (the writable layer, a pod's process count;
usage only where no cgroup answers). As model objects each container cost
about 420 bytes: an object and nine int objects of 32 bytes. Packed, a row is
one 105-byte bytes object. A lookup unpacks the row into the model object
again (about a microsecond), which dies with the scrape that asked.
"""
from __future__ import annotations

import struct
from typing import Any, Iterable, Iterator, Mapping

from cri_exporter.cri import model

# A field the runtime left out (None). CRI's values are uint64: only 2**64-1
# itself cannot be kept, and an object holding it (or anything not an int)
# is kept whole instead.
_ABSENT = 2**64 - 1

CONTAINER_FIELDS = ("cpu_usage_ns", "memory_working_set_bytes", "memory_usage_bytes", "memory_rss_bytes",
                    "memory_page_faults", "memory_major_page_faults", "writable_layer_bytes",
                    "writable_layer_inodes", "swap_usage_bytes")
POD_FIELDS = ("cpu_usage_ns", "memory_working_set_bytes", "memory_usage_bytes", "memory_rss_bytes", "process_count")


def _keepable(v) -> bool:
    return v is None or (type(v) is int and 0 <= v < _ABSENT)


class StatsTable(Mapping[str, Any]):
    """id -> model.ContainerStats or model.PodStats, read-only. A pod's
    interfaces are kept as they came (a tuple a pod); its `containers` are
    always () here (the refresher merges them into the containers' table)."""

    __slots__ = ("_cls", "_unpack", "_rows", "_whole")

    def __init__(self, cls: type, fields: tuple[str, ...], items: Iterable[Any]):
        self._cls = cls
        packer = struct.Struct(f"={len(fields)}Q")
        self._unpack = packer.unpack
        pods = cls is model.PodStats
        # id -> packed row (containers) or (packed row, interfaces) (pods)
        self._rows: dict[str, Any] = {}
        self._whole: dict[str, Any] = {}
        for item in items:
            values = [getattr(item, f) for f in fields]
            if not all(_keepable(v) for v in values) or (pods and item.containers):
                self._whole[item.id] = item
                continue
            row = packer.pack(*[_ABSENT if v is None else v for v in values])
            self._rows[item.id] = (row, item.interfaces) if pods else row

    def __getitem__(self, key: str) -> Any:
        row = self._rows.get(key)
        if row is None:
            return self._whole[key]
        if type(row) is tuple:
            packed, interfaces = row
            values = self._unpack(packed)
            if _ABSENT in values:
                return self._cls(key, *[None if v == _ABSENT else v for v in values], interfaces=interfaces)
            return self._cls(key, *values, interfaces=interfaces)
        values = self._unpack(row)
        if _ABSENT in values:
            return self._cls(key, *[None if v == _ABSENT else v for v in values])
        return self._cls(key, *values)

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key) -> bool:
        return key in self._rows or key in self._whole

    def __iter__(self) -> Iterator[str]:
        yield from self._rows
        yield from self._whole

    def __len__(self) -> int:
        return len(self._rows) + len(self._whole)
