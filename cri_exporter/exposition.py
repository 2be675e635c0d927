"""The Prometheus text format, written from label strings rendered once per series.

prometheus_client's `generate_latest` formats every label set of every sample
on every scrape: about 11 µs a sample, 0.5 s for 1,000 containers' 40 series
each. Between two scrapes almost every series is the same series with a new
value, so, like kube-state-metrics, this keeps each series' rendered
`name{label="value",...} ` prefix across scrapes and only formats the value.
Series not seen in a scrape are dropped from the cache after it, so memory
follows the node's current series.

The output is byte-for-byte what `generate_latest` (prometheus_client 0.26,
default underscore escaping) writes for the same families: same HELP / TYPE
munging (counter -> `_total`, info -> `_info`, unknown -> untyped), labels
sorted by name, backslash / newline / double quote escaped in label values,
floats formatted like `floatToGoString`, and the OpenMetrics-only
`_created` / `_gsum` / `_gcount` samples moved to trailing gauge families.
tests/test_exposition.py holds it to that on the exporter's own families and
on generated ones.
"""
from __future__ import annotations

import threading
from typing import Iterable

from prometheus_client.core import Metric
from prometheus_client.openmetrics import exposition as _om
from prometheus_client.samples import Sample

_TYPE_MUNGE = {"counter": ("_total", "counter"), "info": ("_info", "gauge"), "stateset": ("", "gauge"),
               "gaugehistogram": ("", "histogram"), "unknown": ("", "untyped")}
_OM_SUFFIXES = ("_created", "_gsum", "_gcount")


def go_float(d) -> str:
    """prometheus_client.utils.floatToGoString, with the common cases first."""
    d = float(d)
    s = repr(d)
    if d > 0:
        dot = s.find(".")
        if dot > 6:  # Go switches to exponents sooner than Python
            mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1:]}".rstrip("0.")
            return f"{mantissa}e+{dot - 1:02d}"
        if s == "inf":
            return "+Inf"
        return s
    if s == "-inf":
        return "-Inf"
    if s == "nan":
        return "NaN"
    return s


def escape_label_value(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_doc(doc: str) -> str:
    return doc.replace("\\", r"\\").replace("\n", r"\n")


def _metric_name(name: str) -> str:
    return _om.escape_metric_name(name, _om.UNDERSCORES)


def _render_prefix(name: str, labels: dict) -> str:
    """`name{a="x",b="y"} `: the part of a sample line that does not change between scrapes."""
    if not labels:
        return f"{_metric_name(name)} "
    inner = ",".join(
        f'{_om.escape_label_name(k, _om.UNDERSCORES)}="{escape_label_value(v)}"' for k, v in sorted(labels.items())
    )
    return f"{_metric_name(name)}{{{inner}}} "


class Family:
    """A gauge or counter family for the hot collectors: rows of (label values, value).

    prometheus_client's families build a labels dict and a Sample on every
    add_metric (about 2 µs); at some 60 series a container that was the largest
    cost of a scrape at 1,000 containers, ahead of reading the cgroup files.
    Rows keep the label values as a tuple, which the writer uses as its cache
    key directly. `samples` still gives prometheus_client Samples for anything
    else (generate_latest, the parser-based tests), so a Family is a Metric
    wherever one is read.
    """

    __slots__ = ("name", "documentation", "type", "unit", "labelnames", "sample_name", "rows")

    def __init__(self, name: str, documentation: str, labels: Iterable[str] = (), counter: bool = False):
        self.name = name
        self.documentation = documentation
        self.type = "counter" if counter else "gauge"
        self.unit = ""
        self.labelnames = tuple(labels)
        self.sample_name = name + "_total" if counter else name
        self.rows: list[tuple[tuple[str, ...], float]] = []

    def add_metric(self, values: Iterable[str], value: float) -> None:
        self.rows.append((tuple(values), value))

    @property
    def samples(self) -> list[Sample]:
        names = self.labelnames
        return [Sample(self.sample_name, dict(zip(names, v)), x, None, None) for v, x in self.rows]


class ExpositionWriter:
    """Writes families as text; keeps rendered series prefixes from one write to the next.

    One writer per stream of scrapes (its cache holds the series of the last
    write). Thread-safe: concurrent writes are serialized.
    """

    def __init__(self) -> None:
        self._prefixes: dict[tuple, list] = {}
        self._headers: dict[tuple, str] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._prefixes)

    def write(self, families: Iterable[Metric]) -> bytes:
        with self._lock:
            return self._write(families)

    def _write(self, families: Iterable[Metric]) -> bytes:
        # Cache entry per series: [prefix, last value, last line]. A series whose
        # value did not change since the last write (limits, info, states: about
        # half of them) reuses its whole line; the others format only the value.
        old = self._prefixes
        new: dict[tuple, list] = {}
        headers = self._headers
        out: list[str] = []
        append = out.append
        for metric in families:
            hkey = (metric.name, metric.type, metric.documentation)
            header = headers.get(hkey)
            if header is None:
                suffix, mtype = _TYPE_MUNGE.get(metric.type, ("", metric.type))
                mname = _metric_name(metric.name + suffix)
                header = f"# HELP {mname} {_escape_doc(metric.documentation)}\n# TYPE {mname} {mtype}\n"
                if len(headers) > 10000:  # families are few; bound a pathological caller
                    headers.clear()
                headers[hkey] = header
            append(header)
            if type(metric) is Family:
                self._write_rows(metric, old, new, append)
                continue
            om_names = {metric.name + sfx: sfx for sfx in _OM_SUFFIXES}
            om_lines: dict[str, list[str]] = {}
            for name, labels, value, timestamp, *_ in metric.samples:
                # label names and values flattened: unambiguous, as the count of names fixes the split
                key = (name, *labels, *labels.values())
                entry = old.get(key)
                if entry is None:
                    entry = new.get(key)
                    if entry is None:
                        entry = [_render_prefix(name, labels), None, ""]
                new[key] = entry
                if timestamp is not None:
                    line = f"{entry[0]}{go_float(value)} {int(float(timestamp) * 1000):d}\n"
                # 0 == -0.0 but they print differently: zeros are always formatted (cheaply)
                elif value == entry[1] and value:
                    line = entry[2]
                else:
                    line = entry[2] = f"{entry[0]}{go_float(value)}\n"
                    entry[1] = value
                sfx = om_names.get(name)
                if sfx is None:
                    append(line)
                else:
                    om_lines.setdefault(sfx, []).append(line)
            for sfx, lines in sorted(om_lines.items()):
                mname = _metric_name(metric.name + sfx)
                append(f"# HELP {mname} {_escape_doc(metric.documentation)}\n# TYPE {mname} gauge\n")
                out.extend(lines)
        self._prefixes = new
        return "".join(out).encode("utf-8")

    @staticmethod
    def _write_rows(family: Family, old: dict, new: dict, append) -> None:
        """The Family fast path: the same lines as the general one, keyed by (name, values)."""
        name, labelnames = family.sample_name, family.labelnames
        for values, value in family.rows:
            key = (name, values)
            entry = old.get(key)
            if entry is None:
                entry = new.get(key)
                if entry is None:
                    entry = [_render_prefix(name, dict(zip(labelnames, values))), None, ""]
            new[key] = entry
            if value == entry[1] and value:
                append(entry[2])
            else:
                line = entry[2] = f"{entry[0]}{go_float(value)}\n"
                entry[1] = value
                append(line)

