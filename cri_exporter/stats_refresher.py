"""The CRI stats calls, run in the background so no scrape waits on them.

Measured on containerd 1.6.20 with 25 pods and 50 containers (development
machine): ListContainers + ListPodSandbox answer in about 1 ms together, but
ListContainerStats takes about 100 ms (14 ms of containerd's CPU) and
ListPodSandboxStats about 570 ms (86 ms of containerd's CPU), growing with
every pod. Reading the same containers' cgroup files takes about 7 ms. So the
stats calls run here on an interval, scrapes read the last snapshot, and
`cri_stats_snapshot_age_seconds` says how old it is.

Two intervals. Where the cgroup files and pod network namespaces give every
usage value live, the snapshot only carries writable-layer sizes and pod
process counts, which move slowly: it is refreshed every
--stats-idle-interval (300 s). The runtime then spends on this agent a
twentieth of what stats calls on every 15 s scrape would cost it for the
refresh, plus 0.002-0.03 for the scrapes' list calls (benchmarks/bench.py,
10 to 1,000 real containers: 0.052-0.079 in all; at 180 s the refresh alone
was 0.083 and the total reached 0.10). As soon as a scrape has to take a value from the snapshot (a
VM-based handler, an unreadable cgroup tree or /proc, the cgroup collector
off), it is refreshed every --stats-interval (15 s).

One broken sandbox (e.g. one without a cgroup parent) makes ListPodSandboxStats
fail for every pod ("cgroupPath is empty"; 1.6.20, 1.7.24, 2.1.9); then each
ready sandbox is asked alone with PodSandboxStats, and the ones that still fail
are counted and named in the log, so the rest are served. A ready sandbox the
list left out (1.7.16+ and 2.x leave out the ones they get NOT_FOUND for) is
asked alone too. A sandbox whose stats the runtime cannot give for a passing
reason (a container of it has just exited and its task is gone, or the sandbox
stopped since it was listed: sandbox_stats_errors.py) is counted apart and does
not fail the snapshot: an OOM kill must not read as a failing collector.
"""
from __future__ import annotations

import threading
from itertools import chain
import time
from dataclasses import dataclass, field

import structlog

from cri_exporter.cri import CriClient, CriError, model
from cri_exporter.sandbox_stats_errors import unavailable_reason
from cri_exporter.stats_rows import CONTAINER_FIELDS, POD_FIELDS, StatsRows

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class StatsSnapshot:
    taken_at: float  # wall clock, seconds
    # id -> a row of numbers (stats_rows.py): the answers' objects are not kept
    containers: StatsRows
    pods: StatsRows
    container_error: str | None = None
    pod_list_error: str | None = None
    failed_pod_ids: tuple[str, ...] = ()
    durations: dict[str, float] = field(default_factory=dict)
    # (sandbox id, sandbox_stats_errors reason): ready sandboxes whose stats the runtime could not
    # give for a passing reason; not failures
    unavailable_pods: tuple[tuple[str, str], ...] = ()
    # ListPodSandbox answered, so every ready sandbox was asked alone where the list left it out
    sandboxes_listed: bool = True

    @property
    def ok(self) -> bool:
        return self.container_error is None and not self.failed_pod_ids and (
            self.pod_list_error is None or self.sandboxes_listed
        )


class StatsRefresher:
    def __init__(self, client: CriClient, interval: float, timeout: float, idle_interval: float | None = None):
        self.client = client
        self.interval = interval
        self.idle_interval = interval if idle_interval is None else max(interval, idle_interval)
        self.timeout = timeout
        # Until a scrape says otherwise, assume the snapshot feeds usage values.
        self._feeds_usage = True
        self._wake = threading.Event()
        self.refreshes = 0
        self.failures: dict[str, int] = {"ListContainerStats": 0, "ListPodSandboxStats": 0, "PodSandboxStats": 0}
        self._snapshot: StatsSnapshot | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0  # monotonic, when start() ran

    def snapshot_feeds_usage(self, feeds: bool) -> None:
        """Called by each scrape: does any usage value come from the snapshot?"""
        if feeds and not self._feeds_usage:
            self._wake.set()  # refresh now, not at the end of a long idle wait
        self._feeds_usage = feeds

    @property
    def current_interval(self) -> float:
        return self.interval if self._feeds_usage else self.idle_interval

    @property
    def snapshot(self) -> StatsSnapshot | None:
        """The latest refresh, failed or not."""
        return self._snapshot

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="stats-refresher", daemon=True)
        self._thread.start()

    def why_no_snapshot(self) -> str:
        """Why `snapshot` is None, for the scrape that finds it so: on a freshly
        started agent the first refresh may still run (seconds on a large node:
        this module's docstring), and the log says so rather than only "failed"."""
        if self._thread is None:
            return "no stats snapshot: the background refresh was never started"
        return (f"no stats snapshot yet: the first background refresh, started "
                f"{time.monotonic() - self._started:.1f} s ago, has not finished")

    def stop(self) -> None:
        """Ask the loop to end; a call in flight is cut when the client closes."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=1)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.refresh()
            except Exception:  # never let the thread die: the next round may work
                log.exception("stats refresh crashed")
            while not self._stop.is_set():
                left = self.current_interval - (time.monotonic() - started)
                if left <= 0 or self._wake.wait(min(left, 5.0)):
                    break
            self._wake.clear()

    def refresh(self) -> StatsSnapshot:
        # Stamped with the start: the values are at least this old, never younger.
        started = time.time()
        durations: dict[str, float] = {}
        containers: dict[str, model.ContainerStats] = {}
        container_error = pod_list_error = None
        t = time.monotonic()
        try:
            containers = {s.id: s for s in self.client.list_container_stats(timeout=self.timeout)}
        except CriError as err:
            container_error = str(err)
            self.failures["ListContainerStats"] += 1
            log.warning("ListContainerStats failed", error=container_error)
        durations["ListContainerStats"] = time.monotonic() - t

        t = time.monotonic()
        try:
            pods = {s.id: s for s in self.client.list_pod_sandbox_stats(timeout=self.timeout)}
        except CriError as err:
            pod_list_error = str(err)
            pods = {}
            self.failures["ListPodSandboxStats"] += 1
            log.warning("ListPodSandboxStats failed; asking each sandbox alone", error=pod_list_error)
        failed, unavailable, listed = self._ask_left_out(pods)
        durations["ListPodSandboxStats"] = time.monotonic() - t

        # A container missing from ListContainerStats (or all of them, when it
        # failed) may still be in its pod's answer: the first of an id wins.
        container_rows = StatsRows.build(
            CONTAINER_FIELDS, chain(containers.values(), (c for p in pods.values() for c in p.containers)))
        pod_rows = StatsRows.build(POD_FIELDS, pods.values(), interfaces=True)
        del containers, pods  # the answers' objects go before the snapshot is published

        snap = StatsSnapshot(started, container_rows, pod_rows, container_error, pod_list_error, tuple(failed), durations,
                             tuple(unavailable), listed)
        self._snapshot = snap
        self.refreshes += 1
        return snap

    def _ask_left_out(self, pods: dict[str, model.PodStats]) -> tuple[list[str], list[tuple[str, str]], bool]:
        """Ask alone every ready sandbox `pods` lacks (all of them when the list failed), adding
        the answers to `pods`: the ids that failed, the (id, reason) of those the runtime could
        not give for a passing reason, and whether ListPodSandbox answered."""
        failed: list[str] = []
        unavailable: list[tuple[str, str]] = []
        try:
            sandboxes = self.client.list_pod_sandboxes(timeout=self.timeout)
        except CriError as err:
            log.warning("ListPodSandbox failed; no sandbox asked alone this round", error=str(err))
            return failed, unavailable, False
        deadline = time.monotonic() + self.timeout
        for sandbox in sandboxes:
            if sandbox.state != "ready" or sandbox.id in pods:
                continue
            try:
                pods[sandbox.id] = self.client.pod_sandbox_stats(
                    sandbox.id, timeout=max(0.001, min(self.client.timeout, deadline - time.monotonic()))
                )
            except CriError as err:
                where = dict(pod_sandbox_id=sandbox.id, namespace=sandbox.k8s_namespace, pod=sandbox.k8s_name,
                             error=str(err))
                reason = unavailable_reason(err)
                if reason is not None:
                    unavailable.append((sandbox.id, reason))
                    log.info("PodSandboxStats unavailable for one sandbox", reason=reason, **where)
                    continue
                failed.append(sandbox.id)
                self.failures["PodSandboxStats"] += 1
                log.warning("PodSandboxStats failed for one sandbox", **where)
        return failed, unavailable, True
