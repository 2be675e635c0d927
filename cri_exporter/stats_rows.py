"""The stats snapshot kept between refreshes as rows of doubles: one C array
a table and one dict id -> row, not a model object a container and pod with
an int object a field (2.6 -> 0.6 MB at 5,000 fake containers, tracemalloc).

Readers take single numbers (`row`, then `values[row + column]`), never a
rebuilt object: a packed row turned back into a ContainerStats a lookup cost
6 ms of scrape CPU at 1,000 containers (docs/performance.md). A missing value
(None in the CRI answer) is NaN; readers check `x == x`. Ids are the client's
interned strings, shared with the inventory, and the row numbers are ints
made once for the process: a refresh allocates no small object that outlives
it, only the dicts and arrays (malloc'd blocks, not pymalloc arenas).

A double holds every uint64 the way `int / per` did: Python converts an int to
the nearest double before dividing by a float, and int / 1 is that same
nearest double, so the exported text is unchanged.
"""
from __future__ import annotations

from array import array
from typing import Iterable

from cri_exporter.cri import model

NAN = float("nan")

CONTAINER_FIELDS = ("cpu_usage_ns", "memory_working_set_bytes", "memory_usage_bytes", "memory_rss_bytes",
                    "memory_page_faults", "memory_major_page_faults", "writable_layer_bytes",
                    "writable_layer_inodes", "swap_usage_bytes")
POD_FIELDS = ("cpu_usage_ns", "memory_working_set_bytes", "memory_usage_bytes", "memory_rss_bytes", "process_count")
INTERFACE_FIELDS = ("rx_bytes", "rx_errors", "tx_bytes", "tx_errors")

# Row offsets, made once and kept for the process (one list a row width, as
# long as the most rows seen): a refresh's dicts point at these, not at a new
# int a row made among the refresh's temporaries (which would pin their
# pymalloc pools until the next refresh).
_OFFSETS: dict[int, list[int]] = {}


def _offsets(n: int, width: int) -> list[int]:
    """0, width, 2 * width... for n rows."""
    have = _OFFSETS.setdefault(width, [])
    if len(have) < n:
        have.extend(range(len(have) * width, n * width, width))
    return have


# Interface name tuples, shared by the pods that have the same ones (a node has
# a few: ("eth0",), a CNI's second network...); bounded, for a node of many.
_NAMES: dict[tuple[str, ...], tuple[str, ...]] = {}
_NAMES_MAX = 256


def _names(names: tuple[str, ...]) -> tuple[str, ...]:
    shared = _NAMES.get(names)
    if shared is not None:
        return shared
    if len(_NAMES) < _NAMES_MAX:
        _NAMES[names] = names
    return names


class StatsRows:
    """id -> the offset of its row in `values` (`fields` name its columns).

    Pods carry their interfaces' byte and error counters in a second array: a
    pod row's last column is the offset of its first interface there (NaN for
    none), `iface_names[id]` their names."""

    __slots__ = ("fields", "width", "index", "values", "iface_names", "iface_values")

    def __init__(self, fields: tuple[str, ...], index: dict[str, int], values: array, interfaces: bool = False,
                 iface_names: dict[str, tuple[str, ...]] | None = None, iface_values: array | None = None):
        self.fields = fields
        self.width = len(fields) + (1 if interfaces else 0)
        self.index = index
        self.values = values
        self.iface_names = iface_names if iface_names is not None else {}
        self.iface_values = iface_values if iface_values is not None else array("d")

    @classmethod
    def build(cls, fields: tuple[str, ...], objects: Iterable, interfaces: bool = False) -> StatsRows:
        """From model.ContainerStats or model.PodStats objects (with their
        `interfaces` if asked); the first of an id wins. The long-lived dicts
        are made last, when the refresh's temporaries are gone."""
        ids: list[str] = []
        seen: set[str] = set()
        values = array("d")
        names: list[tuple[str, ...] | None] = []
        iface_values = array("d")
        for o in objects:
            if o.id in seen:
                continue
            seen.add(o.id)
            ids.append(o.id)
            values.extend([NAN if v is None else v for v in (getattr(o, f) for f in fields)])
            if interfaces:
                if o.interfaces:
                    values.append(len(iface_values))
                    names.append(tuple(i.name for i in o.interfaces))
                    for i in o.interfaces:
                        iface_values.extend([NAN if v is None else v for v in (getattr(i, f) for f in INTERFACE_FIELDS)])
                else:
                    values.append(NAN)
                    names.append(None)
        del seen
        width = len(fields) + (1 if interfaces else 0)
        index = dict(zip(ids, _offsets(len(ids), width)))
        iface_names = {i: _names(n) for i, n in zip(ids, names) if n is not None}
        return cls(fields, index, values, interfaces, iface_names, iface_values)

    def column(self, field: str) -> int:
        return self.fields.index(field)

    def at(self, key: str, column: int) -> float | None:
        """One number of `key`'s row; None when there is no row or no value."""
        i = self.index.get(key)
        if i is None:
            return None
        v = self.values[i + column]
        return v if v == v else None

    def interfaces(self, key: str) -> tuple[model.InterfaceStats, ...]:
        """`key`'s interfaces as the model's objects, made on each call (only
        pods the live network reading cannot serve ask)."""
        names = self.iface_names.get(key)
        if names is None:
            return ()
        start = int(self.values[self.index[key] + self.width - 1])
        vals, w = self.iface_values, len(INTERFACE_FIELDS)
        out = []
        for n, name in enumerate(names):
            nums = [int(v) if v == v else None for v in vals[start + n * w:start + (n + 1) * w]]
            out.append(model.InterfaceStats(name, *nums))
        return tuple(out)

    def __contains__(self, key: object) -> bool:
        return key in self.index

    def __len__(self) -> int:
        return len(self.index)


EMPTY_CONTAINERS = StatsRows(CONTAINER_FIELDS, {}, array("d"))
EMPTY_PODS = StatsRows(POD_FIELDS, {}, array("d"), interfaces=True)
