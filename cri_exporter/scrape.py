"""One scrape: every collector under one deadline, in flight once.

Collectors run one after another in one thread while they keep finishing,
side by side when one stalls (STALL_SECONDS).

A scrape never waits past its deadline: collectors still running then are
reported as failed (`cri_scrape_collector_success 0`) and what is ready is
served, so a hung runtime cannot make Prometheus time out the whole target.
Scrapes that arrive while one is in flight share its result instead of
multiplying the load on the runtime; each still answers by its own deadline
(Collection).
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import structlog
from prometheus_client.core import GaugeMetricFamily

from cri_exporter.collectors.base import (
    Collector,
    PartialCollection,
    ScrapeContext,
    StepNotDone,
)
from cri_exporter.cri import CriError
from cri_exporter.exposition import AnyFamily, ExpositionWriter, LabelCache

log = structlog.get_logger(__name__)

# A collection's collectors run one after another in one thread, as long as
# one finishes at least this often; when none has for this long (one waits on
# a slow or hung runtime, or reads a large node), the next ones start beside
# it in another thread, and so on, up to a thread each, as before issue 13's
# fixed-cost work. One thread a scrape instead of eight hands the GIL far less
# (docs/performance.md, "Fixed cost a scrape").
STALL_SECONDS = 0.02


@dataclass
class ScrapeResult:
    """One collection's families, and their exposition once someone asked for it.

    Scrapes that share a collection share its rendered text (and its gzip
    member, per level) too: the second of 50 concurrent scrapers pays nothing.
    """

    metrics: list[AnyFamily]
    _encoded: dict = field(default_factory=dict, repr=False, compare=False)
    _encode_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    # CPU seconds the last text made of it took (None before any): what its
    # size costs to render, whoever asks later.
    encode_seconds: float | None = field(default=None, repr=False, compare=False)

    def encoded(self, writer: ExpositionWriter, gzip_level: int | None = None) -> list[bytes]:
        """The text `writer` makes of the metrics, gzip-compressed at `gzip_level` if
        given, as parts to send in order (never joined: exposition.py); each
        made once. Prometheus asks for gzip: the plain text is then never made
        at all."""
        with self._encode_lock:
            body = self._encoded.get(gzip_level)
            if body is None:
                started = time.thread_time()
                if gzip_level is None:
                    body = writer.write_parts(self.metrics)
                else:
                    body = writer.write_gzip_parts(self.metrics, gzip_level)
                self._encoded[gzip_level] = body
                self.encode_seconds = time.thread_time() - started
            return body


class Collection:
    """One run of every collector, shared by the scrapes that arrive while it runs.

    It runs to the exporter's own deadline (--scrape-timeout) whoever started
    it, and each scraper waits for it only until its own deadline: one whose
    deadline comes first is answered from what is ready then (`result()`
    before `done`), the collectors still running reported failed, as a lone
    scrape with that deadline would have been. So a short
    X-Prometheus-Scrape-Timeout-Seconds (even 0) cuts only its sender's wait,
    never the collection the others share; before issue 17 the first
    scraper's header set everyone's deadline, and a scraper that joined a
    collection already in flight waited for its end whatever its own
    deadline (a 3 s scrape took 4.86 s).
    """

    def __init__(self, scraper: "Scraper", started: float, timeout: float):
        self.started = started
        self.timeout = timeout
        self.ctx = scraper.make_context(started + timeout)
        scraper.labels.next_scrape()
        self.ctx.labels = scraper.labels
        self._runtime_collector = scraper.runtime_collector
        self._futures: dict[str, cf.Future] = {c.name: cf.Future() for c in scraper.collectors}
        # Collectors not started yet, taken in order by the runners (popleft is atomic).
        self._todo = collections.deque(scraper.collectors)
        self._pool = scraper._pool
        self._count_lock = threading.Lock()
        self._finished = 0
        self._runners = 1
        self._all_done = threading.Event()
        if not self._futures:
            self._all_done.set()
        self._pool.submit(self._drain)
        self._partial: dict[frozenset, ScrapeResult] = {}
        self._partial_lock = threading.Lock()
        # Set (by the leader thread) to the full result once every collector
        # is done or the deadline has passed.
        self.done: cf.Future[ScrapeResult] = scraper._leader.submit(self._finish)

    def _drain(self) -> None:
        """Run the collectors not started yet, one after another."""
        while True:
            try:
                collector = self._todo.popleft()
            except IndexError:
                return
            future = self._futures[collector.name]
            if future.set_running_or_notify_cancel():
                future.set_result(_run(collector, self.ctx))
            with self._count_lock:
                self._finished += 1
                if self._finished == len(self._futures):
                    self._all_done.set()

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the full result; True if it is there."""
        try:
            self.done.result(max(0.0, timeout))
            return True
        except cf.TimeoutError:
            return False

    def result(self) -> ScrapeResult:
        """The full result once done; before that, what is ready now (made once
        per set of finished collectors, however many scrapers ask)."""
        if self.done.done():
            return self.done.result()
        ready = frozenset(name for name, fut in self._futures.items() if fut.done())
        with self._partial_lock:
            result = self._partial.get(ready)
            if result is None:
                waiting = sorted(set(self._futures) - ready)
                log.warning("scrape deadline came before the collection's; the collectors still running are served as failed",
                            collectors=",".join(waiting), collection_age_seconds=round(time.monotonic() - self.started, 3))
                result = self._partial[ready] = self._build(ready, final=False)
            return result

    def _finish(self) -> ScrapeResult:
        end = self.started + self.timeout
        seen = 0
        while not self._all_done.wait(max(0.0, min(STALL_SECONDS, end - time.monotonic()))):
            if time.monotonic() >= end:
                break
            # No collector finished for STALL_SECONDS: the next ones start beside it.
            if self._finished == seen and self._todo and self._runners < len(self._futures):
                self._runners += 1
                self._pool.submit(self._drain)
            seen = self._finished
        ready = frozenset(name for name, fut in self._futures.items() if fut.done())
        result = self._build(ready, final=True)
        with self._partial_lock:
            self._partial.clear()
        self.ctx.labels.end_scrape()
        return result

    def _build(self, ready: frozenset, final: bool) -> ScrapeResult:
        """The collection's families with every collector not in `ready` counted
        as failed. `final`: the collection's own end, which logs why each failed."""
        metrics: list[AnyFamily] = []
        success = GaugeMetricFamily(
            "cri_scrape_collector_success", "1 if the collector's source answered in this scrape, else 0.",
            labels=["collector"],
        )
        duration = GaugeMetricFamily(
            "cri_scrape_collector_duration_seconds", "Time the collector took in this scrape.", labels=["collector"]
        )
        for name, fut in self._futures.items():
            if name not in ready:
                ok, elapsed = False, time.monotonic() - self.started
                if final:
                    log.warning("collector timed out", collector=name, timeout_seconds=round(self.timeout, 3))
            else:
                out, elapsed, error = fut.result()
                metrics.extend(self.ctx.metrics.filter(out))  # the safety net: a denied name never appears
                ok = error is None
                if error is not None and final:
                    log.warning("collector failed", collector=name, error=error)
            success.add_metric([name], 1.0 if ok else 0.0)
            duration.add_metric([name], elapsed)
        steps = GaugeMetricFamily(
            "cri_scrape_step_duration_seconds",
            "Time a reading several collectors share took in this scrape (so far, if still running at the deadline).",
            labels=["step"],
        )
        for step, seconds in sorted(self.ctx.step_seconds().items()):
            steps.add_metric([step], seconds)
        if self._runtime_collector is not None:
            up = GaugeMetricFamily("cri_up", "1 if the container runtime answered CRI in this scrape (Version, or Status once its Version is known), else 0.")
            up.add_metric([], 1.0 if self.ctx.runtime_up else 0.0)
            metrics.append(up)
        metrics.extend([success, duration])
        if steps.samples:
            metrics.append(steps)
        return ScrapeResult(metrics)


class Scraper:
    def __init__(
        self,
        collectors: list[Collector],
        make_context: Callable[[float], ScrapeContext],
        timeout: float,
        runtime_collector: str | None = "runtime",
    ):
        self.collectors = collectors
        self.make_context = make_context
        self.timeout = timeout
        self.runtime_collector = runtime_collector if any(c.name == runtime_collector for c in collectors) else None
        # One worker per collector; a collector still stuck from an earlier
        # scrape makes later ones queue and time out rather than add threads.
        self._pool = cf.ThreadPoolExecutor(max_workers=max(1, len(collectors)), thread_name_prefix="collector")
        _start_workers(self._pool, max(1, len(collectors)))
        # Reentrant: a collection that finishes before add_done_callback runs
        # calls _forget at once, in the thread that holds this lock.
        self._lock = threading.RLock()
        self._inflight: Collection | None = None
        self._leader = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="scrape")
        # Text writers that keep each series' rendered labels across scrapes:
        # one for the collections, one for whatever else the caller serves.
        self.exposition = ExpositionWriter()
        self.own_exposition = ExpositionWriter()
        self.labels = LabelCache()

    def collection(self) -> Collection:
        """The collection in flight, or a new one, which runs to `self.timeout`
        (--scrape-timeout) whichever scraper's request started it."""
        with self._lock:
            if self._inflight is None or self._inflight.done.done():
                collection = self._inflight = Collection(self, time.monotonic(), self.timeout)
                collection.done.add_done_callback(self._forget)
                return collection
            return self._inflight

    def scrape(self, timeout: float | None = None) -> ScrapeResult:
        """The metrics of a collection (joining the one in flight if there is
        one), or what is ready of it after `timeout` seconds."""
        collection = self.collection()
        collection.wait(self.timeout if timeout is None else min(timeout, self.timeout))
        return collection.result()

    def _forget(self, done: cf.Future) -> None:
        """A finished collection is joined by nobody new (a done one starts a
        new one), so holding it would only keep its families (tens of MB at
        thousands of containers) alive between scrapes. (Given the future, not
        the collection: a callback holding the collection would make a cycle
        that keeps those families until the garbage collector's next full pass.)"""
        with self._lock:
            if self._inflight is not None and self._inflight.done is done:
                self._inflight = None

    def close(self) -> None:
        self._leader.shutdown(wait=False, cancel_futures=True)
        self._pool.shutdown(wait=False, cancel_futures=True)


def _run(collector: Collector, ctx: ScrapeContext) -> tuple[list[AnyFamily], float, str | None]:
    """Run one collector; never raises, so a bug in one cannot break a scrape.

    Its duration leaves out the time it waited for the scrape's steps: those
    are reported as their own (cri_scrape_step_duration_seconds).
    """
    start, waited = time.monotonic(), ctx.waited()

    def elapsed() -> float:
        return max(0.0, time.monotonic() - start - (ctx.waited() - waited))

    try:
        return list(collector.collect(ctx)), elapsed(), None
    except PartialCollection as err:
        return err.metrics, elapsed(), str(err)
    except (CriError, StepNotDone) as err:
        return [], elapsed(), str(err)
    except Exception as err:  # a collector bug: report it, keep serving the rest
        log.exception("collector crashed", collector=collector.name)
        return [], elapsed(), f"{type(err).__name__}: {err}"


def _start_workers(pool: cf.ThreadPoolExecutor, n: int) -> None:
    """Start the pool's `n` threads now, each held until all are up (or a
    second passed). Collectors run in one of them while they keep finishing,
    so the pool would otherwise grow only when a scrape first stalls (a slow
    runtime, a loaded machine): a thread count that steps up at the first
    bad moment reads like a leak. Idle, they cost their stacks, as the eight
    threads a scrape started before did."""
    barrier = threading.Barrier(n)

    def hold() -> None:
        try:
            barrier.wait(1.0)
        except threading.BrokenBarrierError:
            pass

    for _ in range(n):
        pool.submit(hold)
