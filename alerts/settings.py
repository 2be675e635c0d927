"""Every threshold, selector and window of the alerts, in one place.

As in the monitoring mixins: change a value here, run `python -m codegen`,
and the rule file, the PrometheusRule manifest and (through the same
settings, shortened) the end-to-end test's rules all follow. The promtool
unit tests in alerts/tests/ pin the production values on purpose: changing
a threshold should make you look at them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Settings:
    #: Selects the exporter's series (and its `up`); every alert starts from it.
    selector: str = 'job="cri-exporter"'
    #: Labels that name one exporter, i.e. one node. Aggregations keep them.
    node_labels: tuple[str, ...] = ("job", "instance")
    #: Runbooks live in the repo; an alert's runbook_url is this + "<AlertName>.md".
    runbook_base: str = "https://github.com/cri-exporter/cri-exporter/blob/main/alerts/runbooks/"

    #: Window of rate()/increase() in the alerts.
    rate_window: str = "5m"

    # --- thresholds --------------------------------------------------------
    #: Share of CFS periods throttled above which a container is "throttled"
    #: (kubernetes-mixin's CPUThrottlingHigh uses 25%).
    cpu_throttling_ratio: float = 0.25
    #: An OOM kill stays "recent" (the alert stays active) this long.
    oom_recent_window: str = "10m"
    oom_recent_seconds: int = 600
    #: Terminations of one container within crashloop_window that make it
    #: "crash-looping" (the kubelet's back-off reaches 5 minutes between
    #: restarts: a container stuck in CrashLoopBackOff still ends ~6 times in 30m).
    crashloop_window: str = "30m"
    crashloop_terminations: int = 3
    #: OOM kills in one pod within oom_kills_window that make them "repeated".
    oom_kills_window: str = "15m"
    oom_kills: int = 2
    #: Working set / memory limit above which a container is near its limit.
    memory_limit_ratio: float = 0.90
    #: Image filesystem: available / capacity below which it is almost full.
    #: The kubelet's default imagefs.available eviction threshold is 15%.
    imagefs_available_ratio: float = 0.15
    #: Predicted full: linear fit over this window, this far ahead...
    imagefs_predict_window: str = "6h"
    imagefs_predict_horizon_seconds: int = 24 * 3600
    #: ...and only when less than this share is available already (no pages
    #: for a nearly empty disk that happened to grow).
    imagefs_predict_available_ratio: float = 0.40
    #: Free inodes / inodes below which the filesystem runs out of inodes.
    imagefs_inodes_free_ratio: float = 0.10
    #: A pod's ephemeral storage growth, fitted (deriv) over this window and
    #: carried this far ahead, larger than the node's headroom to the
    #: kubelet's disk eviction threshold: the pod will push the node into
    #: DiskPressure (the kubelet's volume stats refresh every minute).
    ephemeral_growth_window: str = "1h"
    ephemeral_growth_horizon_seconds: int = 4 * 3600
    #: Free inodes above the kubelet's nodefs.inodesFree eviction threshold,
    #: as a share of that threshold, below which the node is close to inode
    #: eviction: 1.0 = fewer free inodes than twice the threshold (under 10%
    #: free with the kubelet's default 5%). Inodes are rarely near it at all;
    #: a pod making small files (caches, sessions) uses them up at a rate no
    #: byte-based alert sees.
    nodefs_inodes_headroom_ratio: float = 1.0
    #: Receive + transmit errors per second on one pod interface.
    network_errors_per_second: float = 0.1
    #: The runtime daemon's open fds / its soft limit above which it is near it
    #: (containerd past its limit fails to accept CRI calls and to start shims).
    runtime_fds_ratio: float = 0.80
    #: A container process's open fds / its soft limit above which it is near
    #: it (past it, open(), socket() and accept() fail with EMFILE).
    container_fds_ratio: float = 0.90
    #: A runtime restart stays "recent" (the alert stays active) this long.
    runtime_restart_window: str = "15m"
    #: A container's live log / the kubelet's containerLogMaxSize above which
    #: rotation is not keeping up (the kubelet rotates at 1.0, checking every
    #: 10 s; a log outgrowing the limit by half for the `for` window is not
    #: being rotated: kubernetes#110630, #134287, #134324).
    log_size_ratio: float = 1.5
    #: Share of scrapes in which a collector failed, over rate_window.
    collector_failure_ratio: float = 0.10
    #: Seconds a scrape may take on average before it counts as slow
    #: (the exporter's --scrape-timeout default is 8 s).
    scrape_duration_seconds: float = 5.0
    #: A background reader's numbers are stale when older than this many of its
    #: periods (its configured interval plus what its last reading took: a walk
    #: on a big node legitimately takes minutes) plus the margin (a reading in
    #: flight when scraped, the scrape interval).
    stale_periods: int = 3
    stale_margin_seconds: int = 120

    #: `for` window of each alert.
    for_: dict[str, str] = field(default_factory=lambda: {
        "CriExporterDown": "5m",
        "CriRuntimeDown": "2m",
        "CriRuntimeNotReady": "5m",
        "CriNetworkNotReady": "5m",
        "CriPodStatsUnavailable": "15m",
        "CriContainerRunningWithoutCgroup": "5m",
        "CriRuntimeRestarted": "0m",
        "CriRuntimeFdsNearLimit": "15m",
        "CriRuntimeShimsLeaked": "30m",
        "CriContainerCPUThrottlingHigh": "15m",
        "CriContainerOOMKilled": "1m",
        "CriContainerCrashLooping": "5m",
        "CriPodOOMKillsRepeated": "1m",
        "CriContainerMemoryNearLimit": "15m",
        "CriContainerLogNotRotated": "15m",
        "CriContainerFdsNearLimit": "15m",
        "CriImageFsAlmostFull": "15m",
        "CriImageFsPredictedFull": "1h",
        "CriImageFsInodesLow": "15m",
        "CriPodNetworkErrors": "15m",
        "CriPodEphemeralStorageFillingNode": "15m",
        "CriNodefsInodesNearEviction": "15m",
        "CriPodEphemeralInodesFillingNode": "15m",
        "CriDoctorCheckFailing": "15m",
        "CriCollectorFailing": "15m",
        "CriExporterScrapeSlow": "15m",
        "CriCgroupsUnreadable": "15m",
        "CriExporterWebConfigReloadFailed": "10m",
        "CriExporterRestartNeeded": "10m",
        "CriBackgroundReadingStale": "5m",
    })

    def by(self, *labels: str) -> str:
        """`job, instance, <labels>`: the grouping every per-node aggregation keeps."""
        return ", ".join((*self.node_labels, *labels))

    def sel(self, *matchers: str) -> str:
        """`{<selector>, <matchers>}`."""
        return "{" + ", ".join((self.selector, *matchers)) + "}"


PRODUCTION = Settings()


def fast(scrape_interval_seconds: float = 1.0, for_window: str = "3s") -> Settings:
    """The production rules with short windows, for a Prometheus scraping every
    second in a test: same expressions, thresholds and labels."""
    return replace(
        PRODUCTION,
        rate_window=f"{max(5, int(scrape_interval_seconds * 10))}s",
        for_={name: for_window for name in PRODUCTION.for_},
    )
