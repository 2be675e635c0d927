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

log = structlog.get_logger(__name__)

T = TypeVar("T")


class Collector(Protocol):
    name: str

    def collect(self, ctx: "ScrapeContext") -> Iterable[AnyFamily]: ...


class PartialCollection(Exception):
    """A collector failed but has metrics worth serving (e.g. why it failed)."""

    def __init__(self, reason: str, metrics: Iterable[AnyFamily]):
        super().__init__(reason)
        self.metrics = list(metrics)


class StepNotDone(Exception):
    """The scrape's deadline came before a step its collector waited for."""


class _Step:
    """One reading of a scrape, made in a thread of its own whoever asks first."""

    __slots__ = ("started", "ended", "value", "error", "done")

    def __init__(self, compute: Callable[[], object], name: str):
        self.started = time.monotonic()
        self.ended: float | None = None
        self.value: object = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        threading.Thread(target=self._run, args=(compute, name), name=f"step-{name}", daemon=True).start()

    def _run(self, compute: Callable[[], object], name: str) -> None:
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

    def seconds(self) -> float:
        return (self.ended if self.ended is not None else time.monotonic()) - self.started


class ScrapeContext:
    """What collectors of one scrape share: the deadline, the rendered label
    sets, and the steps: readings several collectors use, made once per scrape.

    A step (the inventory: ListPodSandbox + ListContainers; the node's cgroup
    reading, collectors/cgroup_readings.py) runs in a thread of its own,
    started by the first collector that asks; every asker waits for it without
    holding the GIL. Its time is the step's own
    (`cri_scrape_step_duration_seconds`), never a collector's: a collector's
    duration leaves out what it spent waiting for steps (`waited()`).
    `labels` is the Scraper's, kept across scrapes: a container's label set
    is rendered once for every collector and every scrape it lives through.
    `inventories`: the exporter's, kept across scrapes, so lists too slow for
    one scrape's deadline are used by the next (collectors/inventory_fetch.py);
    without it each scrape lists within its own deadline.
    """

    def __init__(self, client: CriClient, hostfs: HostFS, deadline: float, labels: LabelCache | None = None,
                 inventories: InventoryFetch | None = None):
        self.client = client
        self.hostfs = hostfs
        self.deadline = deadline
        self.labels = labels if labels is not None else LabelCache()
        self.runtime_up = False
        self.inventories = inventories
        self._steps_lock = threading.Lock()
        self._steps: dict[str, _Step] = {}
        self._waits = threading.local()

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def rpc_timeout(self) -> float:
        """A CRI call's deadline: its own limit, cut to what the scrape has left."""
        return max(0.001, min(self.client.timeout, self.remaining()))

    def step(self, name: str, compute: Callable[[], T]) -> T:
        """`compute()` once per scrape for `name`, in a thread of its own.

        Waits for it up to the deadline; raises what it raised, or StepNotDone
        if the deadline came first.
        """
        with self._steps_lock:
            step = self._steps.get(name)
            if step is None:
                step = self._steps[name] = _Step(compute, name)
        start = time.monotonic()
        try:
            if not step.done.wait(self.remaining()):
                raise StepNotDone(f"{name}: the scrape deadline came before it was done")
        finally:
            self._waits.seconds = self.waited() + time.monotonic() - start
        if step.error is not None:
            raise step.error
        return cast(T, step.value)

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
