"""The collector contract: what a collector is, what one scrape gives it, how it fails.

The scraper (cri_exporter/scrape.py) runs collectors side by side under one
deadline and reports `cri_scrape_collector_success` / `..._duration_seconds`
for each, so a failing source never blanks the others. A collector signals
failure by raising; what it yielded before raising is dropped, never
half-served, unless it raises PartialCollection carrying the metrics worth
serving anyway.

This module imports nothing of the scraper's: collectors depend on it, the
scraper depends on it and on nothing collector-specific.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Iterable, Protocol, TypeVar, cast

import structlog

from cri_exporter.collectors.inventory_fetch import InventoryFetch, InventoryNotYet
from cri_exporter.cri import CriClient, CriError
from cri_exporter.exposition import AnyFamily, LabelCache
from cri_exporter.hostfs import HostFS
from cri_exporter.inventory import Inventory
from cri_exporter.metric_filter import EVERYTHING, MetricFilter

log = structlog.get_logger(__name__)

T = TypeVar("T")


class Collector(Protocol):
    """`name`: its --collectors name. A collector may also say which families
    it can export (`families`, names as on their # TYPE line): one whose
    families --metrics-allow / --metrics-deny all deny is not run at all
    (runs_for). Without the attribute it always runs, and what it yields is
    filtered at the end of the scrape."""

    name: str

    def collect(self, ctx: "ScrapeContext") -> Iterable[AnyFamily]: ...


def runs_for(collector: Collector, metrics: MetricFilter) -> bool:
    """False when every family the collector declares is denied."""
    families = getattr(collector, "families", None)
    return families is None or metrics.wants_any(families)


class PartialCollection(Exception):
    """A collector failed but has metrics worth serving (e.g. why it failed)."""

    def __init__(self, reason: str, metrics: Iterable[AnyFamily]):
        super().__init__(reason)
        self.metrics = list(metrics)


class StepNotDone(Exception):
    """The scrape's deadline came before a step its collector waited for."""


class _Step:
    """One reading of a scrape, made by the first collector that asks for it,
    in that collector's thread; the others wait for it without the GIL.

    Until issue 13's fixed-cost work a step ran in a thread of its own (kept
    idle between scrapes): two more threads handed the GIL at every scrape,
    for nothing a waiter could not do itself. Its time is still the step's
    own, never the asker's (ScrapeContext.step)."""

    __slots__ = ("started", "ended", "value", "error", "done")

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.ended: float | None = None
        self.value: object = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self, compute: Callable[[], object], name: str) -> None:
        thread = threading.current_thread()
        own = thread.name
        thread.name = f"step-{name}"  # in logs and profiles: which step
        try:
            self.value = compute()
        except (CriError, StepNotDone) as err:
            self.error = err
        except Exception as err:  # a bug: every collector waiting for it fails, the rest are served
            log.exception("scrape step crashed", step=name)
            self.error = err
        finally:
            self.ended = time.monotonic()
            self.done.set()
            thread.name = own

    def seconds(self) -> float:
        return (self.ended if self.ended is not None else time.monotonic()) - self.started


class ScrapeContext:
    """What collectors of one scrape share: the deadline, the rendered label
    sets, and the steps: readings several collectors use, made once per scrape.

    A step (the inventory: ListPodSandbox + ListContainers; the node's cgroup
    reading, collectors/cgroup_readings.py) is made by the first collector that
    asks, in its thread; every other asker waits for it without holding the GIL. Its time is the step's own
    (`cri_scrape_step_duration_seconds`), never a collector's: a collector's
    duration leaves out what it spent waiting for steps (`waited()`).
    `labels` is the Scraper's, kept across scrapes: a container's label set
    is rendered once for every collector and every scrape it lives through.
    `inventories`: the exporter's, kept across scrapes, so lists too slow for
    one scrape's deadline are used by the next (collectors/inventory_fetch.py);
    without it each scrape lists within its own deadline.
    `metrics`: the families served (--metrics-allow / --metrics-deny); ask
    `wants(name)` before doing the work for one.
    """

    def __init__(self, client: CriClient, hostfs: HostFS, deadline: float, labels: LabelCache | None = None,
                 inventories: InventoryFetch | None = None, metrics: MetricFilter = EVERYTHING):
        self.client = client
        self.hostfs = hostfs
        self.deadline = deadline
        self.labels = labels if labels is not None else LabelCache()
        self.metrics = metrics
        self.runtime_up = False
        self.inventories = inventories
        self._steps_lock = threading.Lock()
        self._steps: dict[str, _Step] = {}
        self._shared: dict[str, object] = {}
        self._waits = threading.local()

    def wants(self, name: str) -> bool:
        """Whether family `name` (as on its # TYPE line, counters with _total) is served."""
        return self.metrics.wants(name)

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def rpc_timeout(self) -> float:
        """A CRI call's deadline: its own limit, cut to what the scrape has left."""
        return max(0.001, min(self.client.timeout, self.remaining()))

    def step(self, name: str, compute: Callable[[], T]) -> T:
        """`compute()` once per scrape for `name`, in the thread of the first
        caller; later callers wait for it up to the deadline.

        Raises what it raised, or StepNotDone if the deadline came first (for
        the caller that made it: if it ended past the deadline). The time spent
        making or waiting counts as waited (`waited()`), once even when a step
        asks for another.
        """
        with self._steps_lock:
            step = self._steps.get(name)
            first = step is None
            if step is None:
                step = self._steps[name] = _Step()
        start, before = time.monotonic(), self.waited()
        try:
            if first:
                step.run(compute, name)
                if step.ended is not None and step.ended > self.deadline and step.error is None:
                    raise StepNotDone(f"{name}: the scrape deadline came before it was done")
            elif not step.done.wait(self.remaining()):
                raise StepNotDone(f"{name}: the scrape deadline came before it was done")
        finally:
            self._waits.seconds = before + time.monotonic() - start
        if step.error is not None:
            raise step.error
        return cast(T, step.value)

    def shared(self, name: str, read: Callable[[], T]) -> T:
        """`read()` once per scrape for `name`, for a value that is only
        fetched, not made (no step time): every collector of the scrape sees
        the same one. The stats snapshot: one published between the containers
        collector and the stats collector made cri_stats_snapshot_age_seconds
        describe a newer snapshot than the values served."""
        with self._steps_lock:
            if name not in self._shared:
                self._shared[name] = read()
            return cast(T, self._shared[name])

    def waited(self) -> float:
        """Seconds the calling thread spent waiting for steps in this scrape."""
        return getattr(self._waits, "seconds", 0.0)

    def step_seconds(self) -> dict[str, float]:
        """Each step asked for in this scrape: its time, so far if still running."""
        with self._steps_lock:
            return {name: step.seconds() for name, step in self._steps.items()}

    def inventory(self) -> Inventory:
        return self.step("inventory", self._list)

    def _list(self) -> Inventory:
        if self.inventories is not None:
            try:
                return self.inventories.get(self.remaining(), inline=True)
            except InventoryNotYet as err:
                raise StepNotDone(f"inventory: {err}") from None
        return self._list_now()

    def _list_now(self) -> Inventory:
        pods = self.client.list_pod_sandboxes(timeout=self.rpc_timeout())
        containers = self.client.list_containers(timeout=self.rpc_timeout())
        return Inventory(pods, containers)
