"""Terminations of every container instance (terminations.py), as counters.

The scrape's inventory is the poll that feeds the tracker; the event stream,
where it runs, feeds it between scrapes. The counts are served even from a
scrape whose inventory failed. ContainerStatus is asked only about
instances newly exited since the last scrape, with what the scrape has left.
"""
from __future__ import annotations

from typing import Iterable

from cri_exporter.cri import CriError, model
from cri_exporter.exposition import AnyFamily, Family
from cri_exporter.collectors.base import PartialCollection, ScrapeContext
from cri_exporter.terminations import EventWatcher, TerminationTracker

_LABELS = ("namespace", "pod", "container", "reason", "exit_code")
# Status calls stop when the scrape has less than this left; the rest are asked next time.
_MIN_REMAINING = 0.5


class TerminationsCollector:
    name = "terminations"
    # All denied (--metrics-deny), the collector is not run: no poll, no status calls.
    families = ("cri_container_terminations_total", "cri_container_events_subscribed",
                "cri_container_events_stream_breaks_total", "cri_container_events_received_total")

    def __init__(self, tracker: TerminationTracker, watcher: EventWatcher | None = None):
        self.tracker = tracker
        self.watcher = watcher

    def collect(self, ctx: ScrapeContext) -> Iterable[AnyFamily]:
        """The counts so far are served even when the runtime does not answer
        (they stay true; the collector is still reported failed)."""
        try:
            self._poll(ctx)
        except CriError as err:
            raise PartialCollection(str(err), self._families(ctx)) from None
        return self._families(ctx)

    def _poll(self, ctx: ScrapeContext) -> None:
        inv = ctx.inventory()

        def fetch(container_id: str) -> model.ContainerStatus | None:
            if ctx.remaining() < _MIN_REMAINING:
                return None
            try:
                return ctx.client.container_status(container_id, timeout=ctx.rpc_timeout())
            except CriError:
                return None  # removed meanwhile, or the runtime is struggling: next time

        self.tracker.observe(inv, fetch, ctx.client.endpoint)

    def _families(self, ctx: ScrapeContext) -> list[AnyFamily]:
        total = Family(
            "cri_container_terminations",
            "Container instances that ended since the exporter started, by the runtime's reason and exit code "
            "(exit codes that mean something on their own, else \"other\"; \"Unknown\"/\"unknown\": the instance "
            "was removed before its status could be read). Instances already exited at start are not counted.",
            labels=_LABELS, counter=True,
        )
        label = ctx.labels.get
        for ident, reason, code, n in self.tracker.snapshot():
            total.add(label(_LABELS, (ident.namespace, ident.pod, ident.container, reason, code)), float(n))
        subscribed = Family(
            "cri_container_events_subscribed",
            "1 while the exporter follows the runtime's GetContainerEvents stream (containerd 2.x, CRI-O 1.33+), 0 when "
            "terminations come from polling ListContainers alone.",
        )
        subscribed.add_metric([], 1.0 if self.watcher is not None and self.watcher.subscribed else 0.0)
        breaks = Family(
            "cri_container_events_stream_breaks",
            "Times a GetContainerEvents stream that had delivered events ended (runtime restarts); the exporter "
            "subscribes again.",
            counter=True,
        )
        breaks.add_metric([], float(self.watcher.breaks if self.watcher is not None else 0))
        events = Family(
            "cri_container_events_received",
            "Container events received from the runtime's GetContainerEvents stream (every type, sandboxes' too).",
            counter=True,
        )
        events.add_metric([], float(self.watcher.events if self.watcher is not None else 0))
        return [total, subscribed, breaks, events]
