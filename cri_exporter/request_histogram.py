"""cri_request_duration_seconds: the latency of the exporter's CRI calls, by method.

prometheus_client's Histogram made a fifth of a scrape's CPU at ten
containers: every scrape it built a Sample and a labels dict for each of its
17 series per method (and formatted each bucket bound again), and the writer
then took each apart. Here each method's buckets are counts in a list and
its lines are written from label text rendered once; the text is what the
library's Histogram gives through generate_latest, byte for byte
(tests/test_exposition.py feeds both the same observations).
"""
from __future__ import annotations

import math
import threading
from bisect import bisect_left
from typing import Iterable, Iterator, Sequence

from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from cri_exporter.exposition import RenderedFamily, go_float, render_labels


class RequestDurations:
    """A histogram with one label, observed by label value; a collector for
    a CollectorRegistry (auto_describe=False)."""

    def __init__(self, name: str, documentation: str, label: str, buckets: Sequence[float]):
        self.name, self.documentation, self.label = name, documentation, label
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.bounds = tuple(bounds)
        self._les = tuple(floatToGoString(b) for b in self.bounds)
        self._lock = threading.Lock()
        # label value -> [count in each bucket (not cumulative)..., sum of observations]
        self._children: dict[str, list[float]] = {}
        # label value -> rendered label text of its lines (bucket ones, then count/sum's)
        self._texts: dict[str, tuple[tuple[str, ...], str]] = {}

    def observe(self, value: str, amount: float) -> None:
        """As Histogram.labels(value).observe(amount): the first bucket whose
        bound is >= amount (none for NaN), and the sum."""
        i = bisect_left(self.bounds, amount) if amount == amount else len(self.bounds)
        with self._lock:
            child = self._children.get(value)
            if child is None:
                child = self._children[value] = [0.0] * (len(self.bounds) + 1)
            if i < len(self.bounds):
                child[i] += 1.0
            child[-1] += amount

    def collect(self) -> Iterator[RenderedFamily]:
        with self._lock:
            rows = [(value, child.copy()) for value, child in self._children.items()]
        yield _HistogramRows(self, rows)

    def _text_of(self, value: str) -> tuple[tuple[str, ...], str]:
        texts = self._texts.get(value)
        if texts is None:
            names = ("le", self.label)
            texts = (tuple(render_labels(names, (le, value)) for le in self._les), render_labels((self.label,), (value,)))
            if len(self._texts) < 1000:  # CRI methods are a few dozen; bound a pathological caller
                self._texts[value] = texts
        return texts


class _HistogramRows(RenderedFamily):
    type = "histogram"

    def __init__(self, owner: RequestDurations, rows: list[tuple[str, list[float]]]):
        self.owner, self.rows = owner, rows
        self.name, self.documentation = owner.name, owner.documentation

    def series(self) -> int:
        return len(self.rows) * (len(self.owner.bounds) + 2)

    def text(self, mname: str) -> str:
        out = []
        bucket, count, total = f"{mname}_bucket", f"{mname}_count", f"{mname}_sum"
        for value, child in self.rows:
            les, own = self.owner._text_of(value)
            acc = 0.0
            for le, n in zip(les, child):
                acc += n
                out.append(f"{bucket}{le} {go_float(acc)}\n")
            out.append(f"{count}{own} {go_float(acc)}\n")
            if self.owner.bounds[0] >= 0:
                out.append(f"{total}{own} {go_float(child[-1])}\n")
        return "".join(out)

    @property
    def samples(self) -> list[Sample]:
        return list(self._samples())

    def _samples(self) -> Iterable[Sample]:
        label = self.owner.label
        for value, child in self.rows:
            acc = 0.0
            for le, n in zip(self.owner._les, child):
                acc += n
                yield Sample(self.name + "_bucket", {label: value, "le": le}, acc, None, None)
            yield Sample(self.name + "_count", {label: value}, acc, None, None)
            if self.owner.bounds[0] >= 0:
                yield Sample(self.name + "_sum", {label: value}, child[-1], None, None)
