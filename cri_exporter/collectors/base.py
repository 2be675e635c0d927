"""What every collector is: a named source that yields metric families.

The scraper (scrape.py) runs collectors side by side under one deadline and
reports `cri_scrape_collector_success` / `..._duration_seconds` for each, so a
failing source never blanks the others. A collector signals failure by
raising; what it yielded before raising is dropped, never half-served, unless
it raises scrape.PartialCollection carrying the metrics worth serving anyway.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Protocol

from prometheus_client.core import Metric

if TYPE_CHECKING:
    from cri_exporter.scrape import ScrapeContext


class Collector(Protocol):
    name: str

    def collect(self, ctx: "ScrapeContext") -> Iterable[Metric]: ...
