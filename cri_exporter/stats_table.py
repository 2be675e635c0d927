"""A stats snapshot's values kept as columns of 64-bit numbers, not objects.

The snapshot is held from one refresh to the next (minutes), but scrapes read
a few of its values a container (the writable layer, a pod's process count;
usage only where no cgroup answers). As model objects each container cost
about 420 bytes: an object and nine int objects of 32 bytes. As one array
column per field it costs 8 bytes a value plus its index entry (measured at
5,000 fake containers: 2.6 MB -> see the commit that made it). A lookup
builds the model object again, which dies with the scrape that asked.
"""
from __future__ import annotations

from array import array
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

    __slots__ = ("_cls", "_fields", "_index", "_columns", "_interfaces", "_whole")

    def __init__(self, cls: type, fields: tuple[str, ...], items: Iterable[Any]):
        self._cls = cls
        self._fields = fields
        self._index: dict[str, int] = {}
        columns = [array("Q") for _ in fields]
        self._columns = columns
        pods = cls is model.PodStats
        self._interfaces: list[tuple[model.InterfaceStats, ...]] | None = [] if pods else None
        self._whole: dict[str, Any] = {}
        for item in items:
            values = [getattr(item, f) for f in fields]
            if not all(_keepable(v) for v in values) or (pods and item.containers):
                self._whole[item.id] = item
                continue
            self._index[item.id] = len(columns[0])
            for column, v in zip(columns, values):
                column.append(_ABSENT if v is None else v)
            if self._interfaces is not None:
                self._interfaces.append(item.interfaces)

    def __getitem__(self, key: str) -> Any:
        i = self._index.get(key)
        if i is None:
            return self._whole[key]
        values = [None if (v := c[i]) == _ABSENT else v for c in self._columns]
        if self._interfaces is not None:
            return self._cls(key, *values, interfaces=self._interfaces[i])
        return self._cls(key, *values)

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key) -> bool:
        return key in self._index or key in self._whole

    def __iter__(self) -> Iterator[str]:
        yield from self._index
        yield from self._whole

    def __len__(self) -> int:
        return len(self._index) + len(self._whole)
