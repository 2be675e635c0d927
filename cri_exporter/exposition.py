"""The Prometheus text format, written from label sets rendered once.

prometheus_client's `generate_latest` formats every label set of every sample
on every scrape: 266 ms for 1,000 containers' 61,000 samples on the
benchmark's machine (docs/performance.md). Between two scrapes almost every
series is the same series with a new value, so, like kube-state-metrics, the
hot collectors keep each container's and pod's rendered `{label="value",...}`
across scrapes (LabelCache, one object shared by the container's every
series) and a write only joins the name, that text and the formatted value.
Label sets not asked for in a scrape are dropped after the next one, so
memory follows the node's containers.

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
from array import array
from typing import Any, Callable, Iterable, Iterator, Sequence

from prometheus_client.core import Metric
from prometheus_client.openmetrics import exposition as _om
from prometheus_client.samples import Sample

from cri_exporter.deflate import gzip_compressor

# The Content-Type of what ExpositionWriter writes: the text format 0.0.4.
# /metrics answers it to every Accept header, OpenMetrics asked first (as
# Prometheus 2 and 3 ask) included: every Prometheus and compatible collector
# reads it, and nothing exported needs what OpenMetrics adds (docs/install.md,
# "Prometheus 2 and 3"). Spelled out, because prometheus_client's
# CONTENT_TYPE_LATEST follows the library's version: 0.0.4 in 0.20, 1.0.0
# (the UTF-8 text format) in 0.26. Prometheus 3 fails a scrape whose
# Content-Type is missing or unknown.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_TYPE_MUNGE = {"counter": ("_total", "counter"), "info": ("_info", "gauge"), "stateset": ("", "gauge"),
               "gaugehistogram": ("", "histogram"), "unknown": ("", "untyped")}
_OM_SUFFIXES = ("_created", "_gsum", "_gcount")


def go_float(d) -> str:
    """prometheus_client.utils.floatToGoString, with the common cases first:
    between -inf and a million Python's repr is already Go's."""
    if d.__class__ is not float:
        d = float(d)
    if _MINUS_INF < d < 1e6:
        return repr(d)
    return _go_float_rest(d)


def _go_float_rest(d: float) -> str:
    """go_float from a million up, and NaN / -Inf: Go writes an exponent from
    seven integer digits on, Python only from 1e16. A third of a scrape's
    values are bytes, nanoseconds or Unix times in that range, so this is
    written for speed. Most are whole numbers below 1e16, whose shortest
    repr is their integer's digits: those skip the float repr (a quarter
    less time, 0.9 against 1.2 µs a value at load 5)."""
    if 1e6 <= d < 1e16:
        whole = int(d)
        if whole == d:
            s = str(whole)
            digits = s[1:].rstrip("0")
            exponent = _BY_LENGTH[len(s)]
            return f"{s[0]}.{digits}{exponent}" if digits else s[0] + exponent
    s = repr(d)
    if d >= 1e6:
        dot = s.find(".")
        if dot > 6:
            digits = s[1:-2].rstrip("0") if s[-2:] == ".0" else s[1:dot] + s[dot + 1:]
            exponent = _EXPONENTS.get(dot) or f"e+{dot - 1:02d}"
            return f"{s[0]}.{digits}{exponent}" if digits else s[0] + exponent
        if s == "inf":
            return "+Inf"
        return s
    return "NaN" if d != d else "-Inf"


# Where the dot is in repr -> Go's exponent (repr is positional below 1e16).
_EXPONENTS = {dot: f"e+{dot - 1:02d}" for dot in range(7, 17)}
# A whole number's digit count -> Go's exponent (7 digits from 1e6 to 16 below 1e16).
_BY_LENGTH = _EXPONENTS
_MINUS_INF = float("-inf")


def escape_label_value(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_doc(doc: str) -> str:
    return doc.replace("\\", r"\\").replace("\n", r"\n")


def _metric_name(name: str) -> str:
    return _om.escape_metric_name(name, _om.UNDERSCORES)


def _render_prefix(name: str, labels: dict) -> str:
    """`name{a="x",b="y"} `: the part of a sample line that does not change between scrapes."""
    return f"{_metric_name(name)}{render_labels(labels, labels.values())} "


class Labels:
    """One label set, rendered once: its values and its `{a="x",b="y"}` text.

    The hot collectors keep these across scrapes (LabelCache), one per
    container or pod identity and label names, and use the same object in
    every family with those names: a container's 60 series cost one
    rendering, not 40, and no lookup at all when written. Two slots and no
    key tuple of its own: the cache finds it by its values tuple (17,500 of
    these at 5,000 containers).
    """

    __slots__ = ("values", "text")

    def __init__(self, names: tuple[str, ...], values: tuple[str, ...]):
        self.values = values
        self.text = render_labels(names, values)


class LabelsWrittenOnce(Labels):
    """A label set used once a scrape (`Family.add_metric`: a container's or pod's
    info series), its text rendered when its line is written and not kept.

    Rendered at `add_metric` (until 6 December) the 7,500 texts of 5,000
    containers' and 2,500 pods' info series, 385 bytes each, were all alive
    from the collection to the end of the writing: 2.9 MB of the 7.2 MB of
    small objects alive at a scrape's peak, whose pymalloc pools stay with the
    process as holes between what scrapes keep (docs/performance.md, "Issue
    13's 64 MB: the scrape's peak of small objects"). Rendered when written,
    each lives for the making of its own line. Still rendered once a text
    (the exposition of a collection is made once), the same text."""

    __slots__ = ("names",)

    def __init__(self, names: tuple[str, ...], values: tuple[str, ...]):
        self.values = values
        self.names = names

    @property
    def text(self) -> str:  # type: ignore[override]  # read-only here: nothing sets a Labels' text after it is made
        return render_labels(self.names, self.values)


def render_labels(names: Iterable[str], values: Iterable[str]) -> str:
    """The `{...}` of a sample line as generate_latest writes it: sorted by name, escaped.

    For a tuple of distinct names (every Family's) the sort and the names'
    escaping are done once per tuple (`_plan`), leaving a join of the values:
    0.9 µs instead of 7 µs for a container's nine info labels, so a label set
    used once a scrape costs little enough not to be kept (see LabelCache)."""
    if names.__class__ is tuple:
        plan = _PLANS.get(names)
        if plan is None:
            plan = _plan(names)
        if plan:
            if values.__class__ is not tuple:
                values = tuple(values)
            parts = []
            for i, head in plan:
                v = values[i]
                if '"' in v or "\\" in v or "\n" in v:
                    v = escape_label_value(v)
                parts.append(head)
                parts.append(v)
            parts.append('"}')
            return "".join(parts)
    pairs = sorted(zip(names, values))
    if not pairs:
        return ""
    inner = ",".join(f'{_om.escape_label_name(k, _om.UNDERSCORES)}="{escape_label_value(v)}"' for k, v in pairs)
    return f"{{{inner}}}"


# label names -> ((index into the values, `{name="` or `",name="`), ...) in
# the text's order; () where the generic path applies (no names, or a name
# twice, which generate_latest orders by value too).
_PLANS: dict[tuple[str, ...], tuple[tuple[int, str], ...]] = {}


def _plan(names: tuple[str, ...]) -> tuple[tuple[int, str], ...]:
    plan: tuple[tuple[int, str], ...] = ()
    if names and len(set(names)) == len(names):
        order = sorted(range(len(names)), key=names.__getitem__)
        plan = tuple((i, ("{" if n == 0 else '",') + _om.escape_label_name(names[i], _om.UNDERSCORES) + '="')
                     for n, i in enumerate(order))
    if len(_PLANS) > 1000:  # families' label names are few; bound a pathological caller
        _PLANS.clear()
    _PLANS[names] = plan
    return plan


class LabelCache:
    """Labels kept from one scrape to the next: what a scrape did not ask for is
    dropped after the following one, so memory follows the node's current
    containers. Call `next_scrape()` once per scrape and `end_scrape()` when it
    is done: between scrapes only the last scrape's label sets are held, not
    also the one before's table. Tolerates concurrent use (a miss only
    renders again)."""

    def __init__(self) -> None:
        # label names -> values -> Labels: keyed by the values tuple the Labels
        # holds anyway, so an entry costs no key object of its own.
        self._old: dict[tuple[str, ...], dict[tuple[str, ...], Labels]] = {}
        self._new: dict[tuple[str, ...], dict[tuple[str, ...], Labels]] = {}

    def next_scrape(self) -> None:
        self._old, self._new = self._new, {}

    def end_scrape(self) -> None:
        self._old = {}

    def get(self, names: tuple[str, ...], values: tuple[str, ...]) -> Labels:
        new = self._new.get(names)
        if new is None:
            new = self._new.setdefault(names, {})
        labels = new.get(values)
        if labels is None:
            old = self._old.get(names)
            labels = old.get(values) if old is not None else None
            if labels is None:
                labels = Labels(names, values)
            # Stored under the label set's own values: the strings of this
            # scrape's lookup key (equal, but new objects) are not kept too.
            new[labels.values] = labels
        return labels

    def __len__(self) -> int:
        return sum(len(by_values) for by_values in self._new.values())


class Family:
    """A gauge or counter family for the hot collectors: label sets and values.

    prometheus_client's families build a labels dict and a Sample on every
    add_metric (about 2 µs); at some 60 series a container that was the largest
    cost of a scrape at 1,000 containers, ahead of reading the cgroup files.
    A series here is an already rendered label set and a value, kept in two
    parallel sequences: no tuple per series, so tens of thousands of series
    add nothing for the garbage collector to trace, and the values sit in a
    C array of doubles (8 bytes each, not a 24-byte float object and its
    8-byte slot: 7.6 MB less at the peak of a 5,000-container scrape).
    `samples` still gives prometheus_client Samples for anything else
    (generate_latest, the parser-based tests), so a Family is a Metric
    wherever one is read. Label sets must be made with this family's label
    names (the writer-vs-generate_latest tests would see any mismatch).
    """

    __slots__ = ("name", "documentation", "type", "unit", "labelnames", "sample_name", "labelsets", "values")

    def __init__(self, name: str, documentation: str, labels: Iterable[str] = (), counter: bool = False):
        self.name = name
        self.documentation = documentation
        self.type = "counter" if counter else "gauge"
        self.unit = ""
        self.labelnames = tuple(labels)
        self.sample_name = name + "_total" if counter else name
        self.labelsets: list[Labels] = []
        self.values = array("d")

    def add(self, labels: Labels, value: float) -> None:
        self.labelsets.append(labels)
        self.values.append(value)

    def add_metric(self, values: Iterable[str], value: float) -> None:
        """For the few-series families and label sets used once a scrape (info):
        renders the label set when written, keeps nothing past the scrape."""
        self.add(LabelsWrittenOnce(self.labelnames, tuple(values)), value)

    def text(self, mname: str, start: int = 0, stop: int | None = None) -> str:
        """The sample lines of series [start:stop]; `mname` is the escaped
        sample name (the header's).

        Joined on `\\n<name>` rather than made line by line: one string less a
        series, and the value formatted inline (go_float's common case), about
        a third less time than a list of lines (1,000 containers' families)."""
        labelsets, values = self.labelsets, self.values
        if start or stop is not None:
            labelsets, values = labelsets[start:stop], values[start:stop]
        if not values:
            return ""
        return mname + ("\n" + mname).join(
            [f"{labels.text} {repr(v) if _MINUS_INF < v < 1e6 else _go_float_rest(v)}"
             for labels, v in zip(labelsets, values)]) + "\n"

    @property
    def samples(self) -> list[Sample]:
        names = self.labelnames
        return [Sample(self.sample_name, dict(zip(names, labels.values)), x, None, None)
                for labels, x in zip(self.labelsets, self.values)]


class ExtraLabelFamily(Family):
    """A Family whose series are a cached label set plus one more label whose
    value is given per series: `state` beside a container's namespace, pod
    and container, or the `device` of its block I/O. The extra label is
    written into the line, not kept: four states for each of thousands of
    containers were four in ten of all label sets kept between scrapes, and
    a label set per container and device were 15,000 of 32,500 at 5,000
    containers."""

    __slots__ = ("extra_name", "extras", "_before", "_splits")

    def __init__(self, name: str, documentation: str, labels: Iterable[str], extra_name: str, counter: bool = False,
                 splits: dict | None = None):
        """`splits`: a dict shared by families of the same label names and
        extra name (a pod's eight network families), so each label set's text
        is split around the extra pair once for all of them, not once a family."""
        labels = tuple(labels)
        if extra_name in labels:
            raise ValueError(f"{extra_name!r} is already one of {labels}")
        super().__init__(name, documentation, labels + (extra_name,), counter)
        self.extra_name = extra_name
        self.extras: list[str] = []
        # The text format sorts labels by name: the extra one goes before the
        # first name after it, or last (None).
        self._before = min((n for n in labels if n > extra_name), default=None)
        self._splits = splits

    def add_extra(self, labels: Labels, extra: str, value: float) -> None:
        """`labels`: a label set of this family's names without the extra one."""
        self.labelsets.append(labels)
        self.extras.append(extra)
        self.values.append(value)

    def add_each(self, labels: Labels, extras: tuple[str, ...], values: Sequence[float]) -> None:
        """One series per extra value, all of `labels`: a container's four
        states in one call rather than four."""
        self.labelsets.extend([labels] * len(extras))
        self.extras.extend(extras)
        self.values.extend(values)

    def add(self, labels: Labels, value: float) -> None:
        raise TypeError("an ExtraLabelFamily series needs its extra label: use add_extra")

    def text(self, mname: str, start: int = 0, stop: int | None = None) -> str:
        labelsets, extras, values = self.labelsets, self.extras, self.values
        if start or stop is not None:
            labelsets, extras, values = labelsets[start:stop], extras[start:stop], values[start:stop]
        if not values:
            return ""
        name = self.extra_name
        pair: dict[str, str] = {}  # a few values (states, reasons, devices) for many series
        for extra in extras:
            if extra not in pair:
                pair[extra] = f'{name}="{escape_label_value(extra)}"'
        before = self._before
        # Each label set's text around the extra pair, split once for the series
        # of that set that follow one another (a container's four states, its
        # devices), and kept for the whole family only in a dict shared by
        # families of the same sets (a pod's eight network families). Kept in a
        # dict of every set (until 6 December), the splits of 4,096 series' sets
        # were alive at once, some 1 MB at a 5,000-container scrape's peak of
        # small objects. Inside a rendered value every double quote is escaped,
        # so the first `",name="` is where the pair of `name` starts; `{name=`
        # when it is first.
        shared = self._splits
        marker = f'",{before}="'
        parts = []
        last: Labels | None = None
        around = ("", "")
        for labels, extra, v in zip(labelsets, extras, values):
            if labels is not last:
                last = labels
                found = shared.get(labels) if shared is not None else None
                if found is not None:
                    around = found
                else:
                    text = labels.text
                    if not text:
                        around = ("{", "}")
                    elif before is None:
                        around = (text[:-1] + ",", "}")
                    elif text.startswith(f"{{{before}="):
                        around = ("{", "," + text[1:])
                    else:
                        cut = text.index(marker) + 1
                        around = (text[:cut] + ",", text[cut:])
                    if shared is not None:
                        shared[labels] = around
            parts.append(f"{around[0]}{pair[extra]}{around[1]} {repr(v) if _MINUS_INF < v < 1e6 else _go_float_rest(v)}")
        return mname + ("\n" + mname).join(parts) + "\n"

    @property
    def samples(self) -> list[Sample]:
        names = self.labelnames
        return [Sample(self.sample_name, dict(zip(names, labels.values + (extra,))), x, None, None)
                for labels, extra, x in zip(self.labelsets, self.extras, self.values)]


class RowsFamily(Family):
    """A Family of series used once a scrape (a container's or pod's info),
    whose label values are made from two objects the scrape holds anyway (an
    identity and its container or sandbox, both the inventory's) when its
    lines are written: no values tuple nor label set a series. Those
    (LabelsWrittenOnce and its tuple of nine strings) were 1.3 MB of the 2.4
    MB of small objects alive at a 5,000-container scrape's peak, the holes
    pymalloc keeps at rest (docs/performance.md). The same values, rendered
    the same way, once a text."""

    __slots__ = ("firsts", "seconds", "values_of")

    def __init__(self, name: str, documentation: str, labels: Iterable[str],
                 values_of: Callable[[Any, Any], tuple[str, ...]], counter: bool = False):
        """`values_of(first, second)`: a series' label values, in `labels`' order."""
        super().__init__(name, documentation, labels, counter)
        self.firsts: list = []
        self.seconds: list = []
        self.values_of = values_of

    def add_row(self, first: object, second: object, value: float) -> None:
        self.firsts.append(first)
        self.seconds.append(second)
        self.values.append(value)

    def add(self, labels: Labels, value: float) -> None:
        raise TypeError("a RowsFamily series is added by its objects: use add_row")

    def add_metric(self, values: Iterable[str], value: float) -> None:
        raise TypeError("a RowsFamily series is added by its objects: use add_row")

    def text(self, mname: str, start: int = 0, stop: int | None = None) -> str:
        firsts, seconds, values = self.firsts, self.seconds, self.values
        if start or stop is not None:
            firsts, seconds, values = firsts[start:stop], seconds[start:stop], values[start:stop]
        if not values:
            return ""
        names, values_of = self.labelnames, self.values_of
        return mname + ("\n" + mname).join(
            [f"{render_labels(names, values_of(a, b))} {repr(v) if _MINUS_INF < v < 1e6 else _go_float_rest(v)}"
             for a, b, v in zip(firsts, seconds, values)]) + "\n"

    @property
    def samples(self) -> list[Sample]:
        names, values_of = self.labelnames, self.values_of
        return [Sample(self.sample_name, dict(zip(names, values_of(a, b))), x, None, None)
                for a, b, x in zip(self.firsts, self.seconds, self.values)]


class RenderedFamily:
    """A family that writes its own sample lines (`text`) and can still give
    prometheus_client Samples (`samples`) for everything else: for the
    exporter's own metrics whose library form costs more than the data
    (request_histogram.py)."""

    name: str
    documentation: str
    type: str
    unit = ""

    def text(self, mname: str) -> str:
        """The sample lines; `mname` is the escaped family name (the header's)."""
        raise NotImplementedError

    def series(self) -> int:
        raise NotImplementedError

    @property
    def samples(self) -> list[Sample]:
        raise NotImplementedError


# What a collector yields and the writer writes: a prometheus_client family or one of ours.
AnyFamily = Metric | Family | RenderedFamily


# Series a chunk of text holds at most: the largest family at 5,000
# containers (a container's four states, 20,000 series, 2.3 MB of text) is
# made in five pieces, so a write holds about half a megabyte of text (and
# its list of lines) besides its output, not a whole family's.
SLICE_SERIES = 4096
# Parts smaller than this are joined with the next (the compressor hands back
# a few bytes for some chunks, nothing for others): the server sends a part
# at a time, and a few dozen parts of at least 64 kB are as many sends.
PART_BYTES = 65536


def _coalesced(pieces: Iterable[bytes]) -> list[bytes]:
    """`pieces` in order, the small ones joined into parts of at least PART_BYTES (but the last)."""
    parts: list[bytes] = []
    pending: list[bytes] = []
    size = 0
    for piece in pieces:
        if not piece:
            continue
        pending.append(piece)
        size += len(piece)
        if size >= PART_BYTES:
            parts.append(pending[0] if len(pending) == 1 else b"".join(pending))
            pending, size = [], 0
    if pending:
        parts.append(b"".join(pending))
    return parts


class ExpositionWriter:
    """Writes families as text, plain or gzip-compressed.

    Family rows carry their rendered label sets (see Labels). For other
    metrics (prometheus_client's own, the few small families) the rendered
    `name{...} ` prefix of each series is kept from one write to the next.
    Thread-safe: concurrent writes are serialized.
    """

    def __init__(self) -> None:
        self._prefixes: dict[tuple, list] = {}
        self._headers: dict[tuple, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._prefixes)

    def write(self, families: Iterable[AnyFamily]) -> bytes:
        return b"".join(self.write_parts(families))

    def write_gzip(self, families: Iterable[AnyFamily], level: int) -> bytes:
        return b"".join(self.write_gzip_parts(families, level))

    def write_parts(self, families: Iterable[AnyFamily]) -> list[bytes]:
        """The text as UTF-8 parts to send one after the other, never joined:
        at 5,000 containers the text is 42 MB, and a joined str plus its
        encoding held three copies at once (126 MB; now the parts and one
        slice of a family)."""
        with self._lock:
            return _coalesced(chunk.encode("utf-8") for chunk in self._chunks(families))

    def write_gzip_parts(self, families: Iterable[AnyFamily], level: int) -> list[bytes]:
        """One gzip member of the text as parts to send in order, compressed a
        slice of a family at a time: neither the whole text nor a joined copy of
        the compressed one (5 MB at 5,000 containers) is ever held."""
        packer = gzip_compressor(level)  # ISA-L's deflate where installed (deflate.py)
        with self._lock:
            parts = _coalesced(packer.compress(chunk.encode("utf-8")) for chunk in self._chunks(families))
        tail = packer.flush()
        if parts and len(parts[-1]) + len(tail) <= PART_BYTES:
            parts[-1] += tail
        else:
            parts.append(tail)
        return parts

    def _header(self, metric: AnyFamily) -> tuple[str, str]:
        """(HELP and TYPE lines, escaped sample name for Family rows), made once per family."""
        hkey = (metric.name, metric.type, metric.documentation)
        header = self._headers.get(hkey)
        if header is None:
            suffix, mtype = _TYPE_MUNGE.get(metric.type, ("", metric.type))
            mname = _metric_name(metric.name + suffix)
            header = (f"# HELP {mname} {_escape_doc(metric.documentation)}\n# TYPE {mname} {mtype}\n", mname)
            if len(self._headers) > 10000:  # families are few; bound a pathological caller
                self._headers.clear()
            self._headers[hkey] = header
        return header

    def _chunks(self, families: Iterable[AnyFamily]) -> Iterator[str]:
        """The text, a family (or a few small ones) at a time."""
        old = self._prefixes
        new: dict[tuple, list] = {}
        small: list[str] = []
        for metric in families:
            header, mname = self._header(metric)
            if isinstance(metric, Family) and len(metric.values) > SLICE_SERIES:
                if small:
                    yield "".join(small)
                    small = []
                yield header
                for start in range(0, len(metric.values), SLICE_SERIES):
                    yield metric.text(mname, start, start + SLICE_SERIES)
                continue
            if isinstance(metric, (Family, RenderedFamily)):
                # Family.sample_name is name (+ _total): the same escaped name as the header's.
                text = metric.text(mname)
                if (len(metric.values) if isinstance(metric, Family) else metric.series()) > 64:
                    if small:
                        yield "".join(small)
                        small = []
                    yield header + text
                else:
                    small.append(header)
                    small.append(text)
                continue
            small.append(header)
            self._write_samples(metric, old, new, small.append)
        if small:
            yield "".join(small)
        self._prefixes = new

    @staticmethod
    def _write_samples(metric: Metric, old: dict, new: dict, append) -> None:
        """Any prometheus_client Metric; cache entry per series: [prefix, last value, last line]."""
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
            for line in lines:
                append(line)
