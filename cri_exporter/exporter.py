"""Wires the readers, collectors and scraper of `serve` from Settings."""
from __future__ import annotations

import math
import platform
import threading
import time
from typing import Mapping, cast

import grpc
import structlog
# Submodules, not the package: `serve` imports them without prometheus_client's
# __init__ and its HTTP servers (prometheus_on_demand.py).
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics import Counter, disable_created_metrics
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from cri_exporter import __version__, memory_tuning
from cri_exporter.collectors.base import ScrapeContext, runs_for
from cri_exporter.collectors.inventory_fetch import InventoryFetch
from cri_exporter.collectors.registry import Parts
from cri_exporter.cri.client import CriClient, probe_endpoints, resolve_endpoint
from cri_exporter.doctor.metrics import DoctorCollector
from cri_exporter.exposition import CONTENT_TYPE
from cri_exporter.hostfs import HostFS
from cri_exporter.httprequest import Headers, accepts_encoding
from cri_exporter.request_histogram import RequestDurations
from cri_exporter.scrape import Collection, Scraper
from cri_exporter.settings import Settings

log = structlog.get_logger(__name__)

# Measured on the 1,000-container text (7.4 MB) with zlib: level 1 takes 29 ms
# for 0.84 MB, level 6 53 ms for 0.69 MB, level 9 100 ms for 0.68 MB. ISA-L
# (deflate.py), where installed, does level 1 in a fifth of zlib's time.
GZIP_LEVEL = 1

# Prometheus sends its scrape timeout; answering a little before it lets the
# partial result arrive instead of a timed-out scrape.
SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
TIMEOUT_MARGIN = 0.5
MIN_SCRAPE_TIMEOUT = 0.5

# Without an explicit endpoint and with no runtime answering, the sockets are
# probed again this often (a stat each; Version only where a socket exists).
REPROBE_SECONDS = 5.0

# At most one malloc_trim this often (release_memory): under a millisecond
# each at 5,000 containers, so even 50 scrapers back to back cost little, and
# a collection that ends within a second of the last one is still trimmed.
RELEASE_SECONDS = 0.1

# `_created` series double the self-metrics' series for a timestamp Prometheus
# does not use in the text format.
disable_created_metrics()


class Exporter:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.hostfs = HostFS(settings.host_root)
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(_BuildInfo())
        self.request_duration = RequestDurations(
            "cri_request_duration_seconds",
            "Latency of CRI calls the exporter made, by method.",
            "method",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        # A collector by shape; it yields a RenderedFamily, which the writer and filter take.
        self.registry.register(cast(Collector, self.request_duration))
        self.request_errors = Counter(
            "cri_request_errors", "CRI calls that failed, by method and gRPC code.", ["method", "code"],
            registry=self.registry,
        )
        endpoint, probed = resolve_endpoint(settings.runtime_endpoint, settings.host_root)
        self._last_probe = time.monotonic()
        log.info("runtime endpoint", endpoint=endpoint, found_by_probing=probed)
        self.client = CriClient(
            endpoint, timeout=settings.runtime_timeout, max_recv_bytes=settings.max_recv_bytes, observer=self._observe
        )
        self.inventories = InventoryFetch(self.client)
        self.parts = Parts.build(settings, self.client, self.hostfs, self._reprobe if probed else None)
        # What the HTTP side reads: the stats snapshot's cadence, the latest doctor report.
        self.refresher = self.parts.refresher
        self.doctor: DoctorCollector | None = self.parts.doctor
        self.metrics = settings.metric_filter()
        # A collector all of whose families are denied never runs (nor is it
        # reported in cri_scrape_collector_*: as if --collectors left it out).
        built = self.parts.collectors(settings.collectors)
        collectors = [c for c in built if runs_for(c, self.metrics)]
        if not any(c.name == "runtime_processes" for c in collectors):
            self.parts.runtime_processes = None  # its sampler feeds only that collector: never started
        if not any(c.name == "container_logs" for c in collectors):
            self.parts.container_logs = None  # the same: no lists, no stats of log files
        elif self.parts.container_logs is not None:
            self.parts.container_logs.inventories = self.inventories.latest  # no lists of its own
        if not any(c.name == "container_fds" for c in collectors):
            self.parts.container_fds = None  # likewise
        if not any(c.name == "ephemeral_storage" for c in collectors):
            self.parts.ephemeral_storage = None  # likewise its walker
        self._share_caches(collectors)
        if self.metrics.active:
            log.info("metric families filtered", allow=self.metrics.allow_spec, deny=self.metrics.deny_spec,
                     pod_cgroup_metrics=settings.pod_cgroup_metrics,
                     collectors_not_run=",".join(c.name for c in built if c not in collectors))
            kept = self.metrics.health_named_by_deny()
            if kept:
                log.warning("--metrics-deny names scrape-health families; they are served anyway (cri_up and "
                            "cri_scrape_* are never filtered: without them a failing source looks like a quiet node)",
                            kept=",".join(kept))
        self.scraper = Scraper(collectors, self._context, settings.scrape_timeout)
        # CPU seconds the last collection's text took to make (ScrapeResult.encode_seconds):
        # the server renders small answers on its loop (server.LOOP_RENDER_SECONDS).
        self.encode_seconds = math.inf
        self._release_lock = threading.Lock()
        self._released_at = 0.0

    def _share_caches(self, collectors: list) -> None:
        """Per-object CRI answers asked once, whoever needs them (fetch_once.py):
        the log round takes its log paths from the ContainerStatus cache the
        containers collector's scrapes keep (asking into it for a container
        they did not ask about yet), and the fd collector shares its
        PodSandboxStatus (hostNetwork) cache, both pruned by the same scrape's
        inventory."""
        from cri_exporter.collectors.containers import STATUS_FAMILIES, ContainersCollector

        containers = next((c for c in collectors if isinstance(c, ContainersCollector)), None)
        if containers is None:
            return
        sampler = self.parts.container_logs
        if sampler is not None and self.metrics.wants_any(STATUS_FAMILIES):
            containers.keep_log_paths = True  # kept once, here, instead of in a cache of the sampler's own
            sampler.statuses = containers.statuses
            sampler.statuses_kept_by_scrape = True  # pruned by the scrapes, which ask every running container's
        for fds in collectors:
            if fds.name == "container_fds":
                fds.host_network = containers.host_network

    def _reprobe(self) -> bool:
        """Probe crictl's sockets again (at most every REPROBE_SECONDS); switch
        the client when another one answers. True when it switched."""
        now = time.monotonic()
        if now - self._last_probe < REPROBE_SECONDS:
            return False
        self._last_probe = now
        answering, _ = probe_endpoints(self.settings.host_root, probe_timeout=0.5)
        if answering is None or answering == self.client.endpoint:
            return False
        log.info("runtime found at another endpoint", old=self.client.endpoint, new=answering)
        self.client.retarget(answering)
        return True

    def _context(self, deadline: float) -> ScrapeContext:
        return ScrapeContext(self.client, self.hostfs, deadline, inventories=self.inventories, metrics=self.metrics)

    def _observe(self, method: str, seconds: float, code: str) -> None:
        self.request_duration.observe(method, seconds)
        if code != "OK":
            self.request_errors.labels(method, code).inc()

    def start(self) -> None:
        self.parts.start()

    def stop(self) -> None:
        self.client.close()  # cancels calls in flight, so nothing below waits on a hung runtime
        self.parts.stop()
        self.scraper.close()

    def release_memory(self) -> None:
        """After a /metrics answer: hand the scrape's freed heap back to the
        kernel (memory_tuning.release_freed_memory), at most every RELEASE_SECONDS
        however many scrapers share a collection, and never two at once."""
        if not self._release_lock.acquire(blocking=False):
            return
        try:
            now = time.monotonic()
            if now - self._released_at >= RELEASE_SECONDS:
                self._released_at = now
                memory_tuning.release_freed_memory()
        finally:
            self._release_lock.release()

    def scrape_timeout(self, request_headers: Mapping[str, str]) -> float:
        """Seconds this scraper waits for the collection: --scrape-timeout, or
        Prometheus's X-Prometheus-Scrape-Timeout-Seconds less TIMEOUT_MARGIN if
        that is shorter (never under MIN_SCRAPE_TIMEOUT). It bounds this
        scraper's wait only: the collection it shares runs to --scrape-timeout."""
        timeout = self.settings.scrape_timeout
        raw = Headers(request_headers).get(SCRAPE_TIMEOUT_HEADER)
        if raw:
            try:
                theirs = float(raw)
            except ValueError:
                theirs = math.nan
            if not math.isnan(theirs):
                timeout = min(timeout, max(MIN_SCRAPE_TIMEOUT, theirs - TIMEOUT_MARGIN))
        return timeout

    def render(self, request_headers: Mapping[str, str] | None = None,
               collection: Collection | None = None) -> tuple[list[bytes], dict[str, str]]:
        """The /metrics answer to a request with `request_headers` (any mapping;
        names are matched case-insensitively): its body as parts to write in
        order, and its response headers. Content negotiation (Accept-Encoding,
        and whatever else a request's headers choose) happens here.

        The first parts are the collection's text, rendered once per collection
        and shared by all its scrapers (series prefixes cached across scrapes,
        see exposition.py), never joined (42 MB of text at 5,000 containers);
        the last the exporter's own metrics. With gzip, the collection's parts
        are one gzip member and the last another: a concatenation of members
        is one valid gzip stream (RFC 1952). Kept apart, a slow reader holds
        no copy of the shared parts.

        `collection`: the one to answer from, already waited for up to this
        scraper's deadline (the server waits without a thread); its full result
        if done, else what is ready. None: join or start one now and wait here."""
        headers = Headers(request_headers)
        if collection is None:
            collection = self.scraper.collection()
            collection.wait(self.scrape_timeout(headers))
        result = collection.result()
        gzip_ok = accepts_encoding(headers.get("Accept-Encoding"), "gzip")
        level = GZIP_LEVEL if gzip_ok else None
        body = result.encoded(self.scraper.exposition, level)
        if result.encode_seconds is not None:
            self.encode_seconds = result.encode_seconds
        own_metrics = self.metrics.filter(self.registry.collect())
        if level is None:
            own = self.scraper.own_exposition.write(own_metrics)
        else:
            own = self.scraper.own_exposition.write_gzip(own_metrics, level)
        response_headers = {"Content-Type": CONTENT_TYPE, "Vary": "Accept-Encoding"}
        if gzip_ok:
            response_headers["Content-Encoding"] = "gzip"
        return [*body, own], response_headers


class _BuildInfo:
    def collect(self):
        g = GaugeMetricFamily(
            "cri_exporter_build_info",
            "The exporter's version and the versions it runs with; always 1.",
            labels=["version", "python_version", "grpc_version"],
        )
        g.add_metric([__version__, platform.python_version(), grpc.__version__], 1.0)
        yield g
