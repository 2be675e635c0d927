"""A reading several collectors share is a step of the scrape: made once, in a thread
of its own, timed as its own and left out of the collectors' durations."""
from __future__ import annotations

import threading
import time

from prometheus_client.core import GaugeMetricFamily

from cri_exporter.collectors.base import ScrapeContext
from cri_exporter.hostfs import HostFS
from cri_exporter.scrape import Scraper
from tests.exporter_proc import wait_for


class NoRuntime:
    timeout = 1.0


def test_two_collectors_share_one_step_timed_as_its_own(tmp_path):
    release = threading.Event()
    computed: list[str] = []
    waiting = []

    started: list[float] = []

    def compute() -> int:
        computed.append(threading.current_thread().name)
        started.append(time.monotonic())
        release.wait(30)
        return 42

    class Uses:
        def __init__(self, name: str):
            self.name = name

        def collect(self, ctx: ScrapeContext):
            waiting.append(self.name)
            g = GaugeMetricFamily(f"got_{self.name}", "the step's value")
            g.add_metric([], ctx.step("shared", compute))
            return [g]

    scraper = Scraper([Uses("a"), Uses("b")], lambda d: ScrapeContext(NoRuntime(), HostFS(str(tmp_path)), d),
                      timeout=30, runtime_collector=None)
    try:
        collection = scraper.collection()
        # The step lasts a while after both collectors asked for it: far longer than their own work.
        wait_for(lambda: len(waiting) == 2 and started and time.monotonic() - started[0] > 0.5, timeout=30,
                 interval=0.05, what="both collectors waiting for the step")
        release.set()
        assert collection.wait(30)
        got = {s.name: s for m in collection.result().metrics for s in m.samples
               if s.name.startswith(("got_", "cri_scrape_step"))}
    finally:
        scraper.close()
    assert computed == ["step-shared"]
    assert got["got_a"].value == got["got_b"].value == 42
    step = next(s for s in got.values() if s.name == "cri_scrape_step_duration_seconds")
    assert step.labels == {"step": "shared"}
    durations = {s.labels["collector"]: s.value for m in collection.result().metrics for s in m.samples
                 if s.name == "cri_scrape_collector_duration_seconds"}
    assert set(durations) == {"a", "b"}
    # Each collector waited the whole step out; its own work is the rest.
    assert all(d < step.value for d in durations.values()), (durations, step.value)


def test_a_step_the_deadline_passes_fails_its_collectors_not_the_scrape(tmp_path):
    release = threading.Event()

    class Waits:
        name = "waits"

        def collect(self, ctx: ScrapeContext):
            ctx.step("stuck", lambda: release.wait(30))
            return []

    scraper = Scraper([Waits()], lambda d: ScrapeContext(NoRuntime(), HostFS(str(tmp_path)), d),
                      timeout=0.2, runtime_collector=None)
    try:
        start = time.monotonic()
        result = scraper.scrape()
        assert time.monotonic() - start < 30
    finally:
        release.set()
        scraper.close()
    success = {s.labels["collector"]: s.value for m in result.metrics for s in m.samples
               if s.name == "cri_scrape_collector_success"}
    assert success == {"waits": 0.0}


def test_a_snapshot_published_mid_scrape_is_not_the_one_the_age_describes(tmp_path):
    """The containers collector serves the values of the snapshot it found; a
    refresh published before the stats collector runs in the same scrape must
    not make cri_stats_snapshot_age_seconds and _timestamp_seconds describe the
    newer one (seen on a loaded machine: the age then understated how old the
    served CPU time was)."""
    from cri_exporter.collectors.containers import StatsCollector, stats_snapshot
    from cri_exporter.stats_refresher import StatsRefresher, StatsSnapshot
    from cri_exporter.stats_rows import EMPTY_CONTAINERS, EMPTY_PODS

    refresher = StatsRefresher(NoRuntime(), interval=1.0, timeout=1.0)  # type: ignore[arg-type]
    older = StatsSnapshot(1_000.0, EMPTY_CONTAINERS, EMPTY_PODS)
    newer = StatsSnapshot(2_000.0, EMPTY_CONTAINERS, EMPTY_PODS)
    refresher._snapshot = older
    ctx = ScrapeContext(NoRuntime(), HostFS(str(tmp_path)), time.monotonic() + 5)  # type: ignore[arg-type]
    assert stats_snapshot(ctx, refresher) is older  # what the containers collector serves
    refresher._snapshot = newer  # a refresh lands mid-scrape
    families = {f.name: f for f in StatsCollector(refresher).collect(ctx)}
    assert families["cri_stats_snapshot_timestamp_seconds"].samples[0].value == 1_000.0
    assert families["cri_stats_snapshot_age_seconds"].samples[0].value >= time.time() - 1_000.0 - 1
    # the next scrape takes the newer one
    ctx2 = ScrapeContext(NoRuntime(), HostFS(str(tmp_path)), time.monotonic() + 5)  # type: ignore[arg-type]
    assert stats_snapshot(ctx2, refresher) is newer
