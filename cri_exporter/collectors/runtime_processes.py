"""The runtime's own health: its daemon's and shims' memory, CPU, fds,
threads and start time, leaked shims and zombies (runtime_processes.py reads
them off the scrape path; this serves the latest walk).

Labels stay bounded: `process` is a binary's name (containerd, crio,
containerd-shim-runc-v2, conmon...), never a pid. A shim binary's series sum
all its processes; a pid label would make a series per pod that dies with it.
"""
from __future__ import annotations

import time
from typing import Iterable

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from cri_exporter.cri import CriError
from cri_exporter.runtime_processes import CRI_NAMESPACE, RuntimeProcessSampler, RuntimeSample
from cri_exporter.collectors.base import PartialCollection, ScrapeContext

log = structlog.get_logger(__name__)

# A shim unknown to CRI counts as leaked only past this age: containerd
# starts a sandbox's shim before the sandbox is in the list CRI answers from
# (RunPodSandbox adds it last, after the network is set up; 1.6 to 2.1), and
# the kubelet gives RunPodSandbox its runtimeRequestTimeout (2m by default)
# before it cancels, whereupon containerd tears the sandbox down. A node whose
# kubelet has a longer timeout (slow CNI or VM sandboxes) sets
# --runtime-shim-leak-grace to match.
LEAK_GRACE_SECONDS = 120.0

_P = ["process"]


def leaked_shims(sample: RuntimeSample, known_ids: set[str], alive, now: float,
                 grace: float = LEAK_GRACE_SECONDS) -> dict[str, int]:
    """Shim name -> shims serving an id CRI does not know (neither a sandbox
    nor a container), older than `grace` seconds and still alive now (a
    shim whose pod was removed after the walk has exited by the time CRI
    forgets the pod). Only shims of CRI's containerd namespace (k8s.io) or
    CRI-O's conmon are compared: a shim of docker's `moby` namespace is no
    CRI pod and never leaked."""
    shims = sample.shims  # read by column (runtime_processes.Shims)
    out = {name: 0 for name in shims.names}
    for i, id_ in enumerate(shims.ids):
        if not id_ or shims.namespaces[i] not in ("", CRI_NAMESPACE):
            continue
        if id_ in known_ids or now - shims.start_time_seconds[i] < grace:
            continue
        if alive(shims.pids[i], shims.start_ticks[i]):
            out[shims.names[i]] += 1
    return out


class RuntimeProcessesCollector:
    name = "runtime_processes"
    # All denied (--metrics-deny), the collector is not run and its sampler
    # never walks /proc (Exporter).
    families = ("cri_runtime_process_resident_memory_bytes", "cri_runtime_process_cpu_seconds_total",
                "cri_runtime_process_threads", "cri_runtime_process_open_fds", "cri_runtime_process_max_fds",
                "cri_runtime_process_start_time_seconds", "cri_runtime_shims", "cri_runtime_zombie_processes",
                "cri_runtime_process_sample_timestamp_seconds", "cri_runtime_process_sample_duration_seconds",
                "cri_runtime_process_sample_processes", "cri_runtime_shims_leaked",
                "cri_runtime_process_sample_interval_seconds")

    def __init__(self, sampler: RuntimeProcessSampler, leak_grace: float = LEAK_GRACE_SECONDS):
        self.sampler = sampler
        self.leak_grace = leak_grace

    def collect(self, ctx: ScrapeContext) -> Iterable[Metric]:
        sample = self.sampler.current(ctx.remaining())
        if sample is None:
            raise PartialCollection(self.sampler.last_error or "no walk of /proc finished yet", [])
        metrics = list(self._families(sample))
        try:
            inventory = ctx.inventory()
        except CriError as err:
            raise PartialCollection(f"leaked shims unknown, CRI did not answer: {err}", metrics) from None
        known = {p.id for p in inventory.pods} | {c.id for c in inventory.containers}
        leaked = GaugeMetricFamily(
            "cri_runtime_shims_leaked",
            f"Shims serving a sandbox or container the runtime no longer knows (CRI lists neither), "
            f"older than {self.leak_grace:g} s: each holds memory, a mount and often a network "
            "namespace until killed.", labels=_P)
        for name, n in sorted(leaked_shims(sample, known, self.sampler.reader.alive, time.time(),
                                                    self.leak_grace).items()):
            leaked.add_metric([name], float(n))
        metrics.append(leaked)
        if sample.daemon is None:
            raise PartialCollection(f"no containerd or crio process serves {self.sampler.reader.socket}", metrics)
        return metrics

    def _families(self, sample: RuntimeSample) -> Iterable[Metric]:
        rss = GaugeMetricFamily(
            "cri_runtime_process_resident_memory_bytes",
            "Resident memory of the runtime's processes: the daemon serving the CRI socket, and each shim binary's "
            "processes summed.", labels=_P)
        cpu = CounterMetricFamily(
            "cri_runtime_process_cpu_seconds",
            "CPU (user + system) of the runtime's processes. The daemon's resets when it restarts; a shim binary's "
            "is accumulated by the exporter over its shims, those gone included.", labels=_P)
        threads = GaugeMetricFamily(
            "cri_runtime_process_threads", "Threads of the runtime's processes (shims summed).", labels=_P)
        fds = GaugeMetricFamily(
            "cri_runtime_process_open_fds", "Open file descriptors of the runtime's processes (shims summed).",
            labels=_P)
        max_fds = GaugeMetricFamily(
            "cri_runtime_process_max_fds", "The runtime daemon's soft limit of open file descriptors (RLIMIT_NOFILE).",
            labels=_P)
        start = GaugeMetricFamily(
            "cri_runtime_process_start_time_seconds",
            "Start time of the runtime daemon, seconds since the Unix epoch: it changes when the runtime restarts.",
            labels=_P)
        shims = GaugeMetricFamily(
            "cri_runtime_shims", "Shim processes of the runtime (containerd-shim-*, conmon), by binary.", labels=_P)
        zombies = GaugeMetricFamily(
            "cri_runtime_zombie_processes",
            "Zombie (defunct) processes under the runtime's shims (in their containers, whose init does not reap "
            "them), and zombie children of the runtime daemon (shims it did not reap), by the shim or daemon binary.",
            labels=_P)
        d = sample.daemon
        if d is not None:
            rss.add_metric([d.name], float(d.resident_bytes))
            cpu.add_metric([d.name], d.cpu_seconds)
            threads.add_metric([d.name], float(d.threads))
            if d.open_fds is not None:
                fds.add_metric([d.name], float(d.open_fds))
            if d.max_fds is not None:
                max_fds.add_metric([d.name], float(d.max_fds))
            start.add_metric([d.name], d.start_time_seconds)
        s = sample.shims  # read by column (runtime_processes.Shims)
        groups: dict[str, list[int]] = {}
        for i, name in enumerate(s.names):
            groups.setdefault(name, []).append(i)
        for name in sorted(groups):
            members = groups[name]
            if d is not None and name == d.name:
                continue  # never two series of one name (cannot happen with real binaries)
            rss.add_metric([name], float(sum(s.resident_bytes[i] for i in members)))
            cpu.add_metric([name], sample.shim_cpu_seconds.get(name, 0.0))
            threads.add_metric([name], float(sum(s.threads[i] for i in members)))
            counted = [s.open_fds[i] for i in members if s.open_fds[i] >= 0]
            if len(counted) == len(members):
                fds.add_metric([name], float(sum(counted)))
            shims.add_metric([name], float(len(members)))
        for name, n in sorted(sample.zombies.items()):
            zombies.add_metric([name], float(n))
        taken = GaugeMetricFamily(
            "cri_runtime_process_sample_timestamp_seconds",
            "When the runtime's processes were last read (a walk of /proc every --runtime-process-interval).")
        taken.add_metric([], sample.taken_at)
        took = GaugeMetricFamily(
            "cri_runtime_process_sample_duration_seconds", "How long the last walk of /proc took.")
        took.add_metric([], sample.duration)
        walked = GaugeMetricFamily(
            "cri_runtime_process_sample_processes", "Processes read in the last walk of /proc (its cost grows with them).")
        walked.add_metric([], float(sample.processes))
        every = GaugeMetricFamily(
            "cri_runtime_process_sample_interval_seconds", "Seconds between walks of /proc (--runtime-process-interval).")
        every.add_metric([], self.sampler.interval)
        yield from (rss, cpu, threads, fds, max_fds, start, shims, zombies, taken, took, walked, every)
