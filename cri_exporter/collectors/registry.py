"""The only list of collectors: each name and its factory, in the order they are served.

`--collectors` (settings.py) takes its names from here and the exporter builds
the enabled ones from here, as node_exporter registers collectors by name.
A factory imports its collector's module when called, so `--help` and
`doctor` load none of them.

A factory is given the Parts: what the exporter builds once and collectors
share (the CRI client, the host root, the stats snapshot, the cgroup paths,
the periodic doctor), each made only when a collector enabled needs it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from cri_exporter.cgroups import NodeCgroups
    from cri_exporter.collectors.base import Collector
    from cri_exporter.container_fds import FdSampler
    from cri_exporter.cri import CriClient
    from cri_exporter.doctor.child import DoctorChild
    from cri_exporter.doctor.metrics import DoctorCollector, PeriodicDoctor
    from cri_exporter.ephemeral_storage import EphemeralStorageWalker
    from cri_exporter.hostfs import HostFS
    from cri_exporter.pod_logs import ContainerLogSampler
    from cri_exporter.podnet import PodNetwork
    from cri_exporter.runtime_processes import RuntimeProcessSampler
    from cri_exporter.settings import Settings
    from cri_exporter.stats_refresher import StatsRefresher
    from cri_exporter.terminations import EventWatcher, TerminationTracker


def _runtime(parts: Parts) -> Collector:
    from cri_exporter.collectors.runtime import RuntimeCollector
    return RuntimeCollector(parts.reprobe)


def _containers(parts: Parts) -> Collector:
    from cri_exporter.collectors.containers import ContainersCollector
    return ContainersCollector(parts.refresher, parts.cgroups, parts.podnet)


def _terminations(parts: Parts) -> Collector:
    from cri_exporter.collectors.terminations import TerminationsCollector
    assert parts.terminations is not None
    return TerminationsCollector(parts.terminations, parts.events)


def _stats(parts: Parts) -> Collector:
    from cri_exporter.collectors.containers import StatsCollector
    assert parts.refresher is not None
    return StatsCollector(parts.refresher)


def _imagefs(parts: Parts) -> Collector:
    from cri_exporter.collectors.imagefs import ImageFsCollector
    return ImageFsCollector(parts.image_interval)


def _cgroups(parts: Parts) -> Collector:
    from cri_exporter.collectors.cgroups import CgroupCollector
    return CgroupCollector(parts.hostfs, cgroups=parts.cgroups)


def _runtime_processes(parts: Parts) -> Collector:
    from cri_exporter.collectors.runtime_processes import RuntimeProcessesCollector
    assert parts.runtime_processes is not None
    return RuntimeProcessesCollector(parts.runtime_processes, parts.shim_leak_grace)


def _container_logs(parts: Parts) -> Collector:
    from cri_exporter.collectors.container_logs import ContainerLogsCollector
    assert parts.container_logs is not None
    return ContainerLogsCollector(parts.container_logs)
def _ephemeral_storage(parts: Parts) -> Collector:
    from cri_exporter.collectors.ephemeral_storage import EphemeralStorageCollector
    assert parts.ephemeral_storage is not None
    return EphemeralStorageCollector(parts.ephemeral_storage, parts.refresher)


def _container_fds(parts: Parts) -> Collector:
    from cri_exporter.collectors.container_fds import ContainerFdsCollector
    assert parts.container_fds is not None
    return ContainerFdsCollector(parts.container_fds)


def _doctor(parts: Parts) -> Collector:
    from cri_exporter.collectors.doctor import DoctorScrape
    assert parts.doctor is not None
    return DoctorScrape(parts.doctor)


FACTORIES: dict[str, Callable[[Parts], Collector]] = {
    "runtime": _runtime,
    "containers": _containers,
    "terminations": _terminations,
    "stats": _stats,
    "imagefs": _imagefs,
    "cgroups": _cgroups,
    "runtime_processes": _runtime_processes,
    "container_logs": _container_logs,
    "container_fds": _container_fds,
    "ephemeral_storage": _ephemeral_storage,
    "doctor": _doctor,
}

NAMES: tuple[str, ...] = tuple(FACTORIES)


@dataclass
class Parts:
    """What collectors share, built once by the exporter.

    `refresher`: the background CRI stats snapshot, with "stats" enabled (the
    stats collector reports its health, the containers collector falls back
    on it). `cgroups`: one cgroup path cache for the containers' live usage
    values and the cgroup collector, so each cgroup is resolved once; with
    "cgroups" enabled, and `podnet` with it. `doctor`: the latest periodic
    doctor report, with "doctor" enabled. `runtime_processes`: the walk of
    /proc for the runtime's own processes, on its own interval, with
    "runtime_processes" enabled. `terminations` and `events`: every
    container termination counted, fed by the scrape's inventory and, where
    the runtime broadcasts them, its container events, with "terminations"
    enabled. `container_logs`: the stat of every container's log files and
    the kubelet's rotation limits, on its own interval, with "container_logs"
    enabled.
    `container_fds`: fds, sockets and TCP states read on their own
    interval within a budget, with "container_fds" enabled.
    enabled. `ephemeral_storage`: the paced walk of pods' emptyDirs and log
    directories, on its own interval, with "ephemeral_storage" enabled.
    """

    client: CriClient
    hostfs: HostFS
    reprobe: Callable[[], bool] | None = None
    refresher: StatsRefresher | None = None
    cgroups: NodeCgroups | None = None
    podnet: PodNetwork | None = None
    doctor: DoctorCollector | None = None
    runtime_processes: RuntimeProcessSampler | None = None
    shim_leak_grace: float = 120.0  # --runtime-shim-leak-grace
    image_interval: float = 60.0  # --image-interval
    doctor_thread: PeriodicDoctor | None = None
    doctor_child: DoctorChild | None = None
    terminations: TerminationTracker | None = None
    events: EventWatcher | None = None
    container_logs: ContainerLogSampler | None = None
    container_fds: FdSampler | None = None
    ephemeral_storage: EphemeralStorageWalker | None = None

    @classmethod
    def build(cls, settings: Settings, client: CriClient, hostfs: HostFS,
              reprobe: Callable[[], bool] | None) -> Parts:
        parts = cls(client, hostfs, reprobe, image_interval=settings.image_interval)
        enabled = set(settings.collectors)
        if "stats" in enabled:
            from cri_exporter.stats_refresher import StatsRefresher
            parts.refresher = StatsRefresher(client, settings.stats_interval, settings.stats_timeout,
                                             settings.stats_idle_interval)
        if "cgroups" in enabled:
            from cri_exporter.cgroups import NodeCgroups
            from cri_exporter.podnet import PodNetwork
            parts.cgroups = NodeCgroups(hostfs)
            parts.podnet = PodNetwork(hostfs, parts.cgroups)
        if "terminations" in enabled:
            from cri_exporter.terminations import EventWatcher, TerminationTracker
            parts.terminations = TerminationTracker()
            parts.events = EventWatcher(client, parts.terminations)
        if "runtime_processes" in enabled:
            from cri_exporter.runtime_processes import RuntimeProcesses, RuntimeProcessSampler
            parts.runtime_processes = RuntimeProcessSampler(
                RuntimeProcesses(hostfs, lambda: client.endpoint), settings.runtime_process_interval)
            parts.shim_leak_grace = settings.runtime_shim_leak_grace
        if "container_logs" in enabled:
            from cri_exporter.pod_logs import ContainerLogSampler
            parts.container_logs = ContainerLogSampler(hostfs, client, settings.container_log_interval,
                                                       settings.runtime_timeout)
        if "container_fds" in enabled:
            from cri_exporter.cgroups import NodeCgroups
            from cri_exporter.container_fds import FdSampler
            parts.container_fds = FdSampler(hostfs, parts.cgroups or NodeCgroups(hostfs),
                                            settings.fd_sample_interval, settings.fd_sample_budget)
        if "ephemeral_storage" in enabled:
            from cri_exporter.ephemeral_storage import EphemeralStorageWalker

            def imagefs_mounts() -> list[str]:
                return [f.mountpoint for f in client.image_fs_info(timeout=settings.runtime_timeout)
                        if f.kind == "image" and f.mountpoint]
            parts.ephemeral_storage = EphemeralStorageWalker(
                hostfs, settings.ephemeral_storage_interval, settings.ephemeral_storage_files_per_second,
                imagefs_mounts)
        if "doctor" in enabled:
            import structlog

            from cri_exporter.doctor.child import DoctorChild
            from cri_exporter.doctor.metrics import DoctorCollector, PeriodicDoctor
            log = structlog.get_logger(__name__)
            parts.doctor = DoctorCollector()
            parts.doctor_child = DoctorChild(hostfs.root, lambda: client.endpoint)
            parts.doctor_thread = PeriodicDoctor(
                parts.doctor_child.run, parts.doctor, settings.doctor_interval,
                on_error=lambda err: log.warning("doctor run failed", error=str(err)),
            )
        return parts

    def collectors(self, names: tuple[str, ...]) -> list[Collector]:
        """The collectors named, in the table's order."""
        return [FACTORIES[name](self) for name in NAMES if name in names]

    def start(self) -> None:
        if self.refresher is not None:
            self.refresher.start()
        if self.runtime_processes is not None:
            self.runtime_processes.start()
        if self.container_logs is not None:
            self.container_logs.start()
        if self.ephemeral_storage is not None:
            self.ephemeral_storage.start()
        if self.events is not None:
            self.events.start()
        if self.container_fds is not None:
            self.container_fds.start()
        if self.doctor_thread is not None:
            self.doctor_thread.start()

    def stop(self) -> None:
        if self.events is not None:
            self.events.stop()
        if self.refresher is not None:
            self.refresher.stop()
        if self.runtime_processes is not None:
            self.runtime_processes.stop()
        if self.container_logs is not None:
            self.container_logs.stop()
        if self.container_fds is not None:
            self.container_fds.stop()
        if self.ephemeral_storage is not None:
            self.ephemeral_storage.stop()
        if self.doctor_thread is not None:
            self.doctor_thread.stop()
        if self.doctor_child is not None:
            self.doctor_child.stop()
