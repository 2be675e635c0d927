"""Container log files against the kubelet's rotation limits (pod_logs.py
stats them off the scrape path; this serves the latest round).

The limits are node-wide (one kubelet config per node), so they are series
without labels: a rule compares a container's log with them through
`on(instance) group_left`.
"""
from __future__ import annotations

from typing import Iterable

from cri_exporter.collectors.base import PartialCollection, ScrapeContext
from cri_exporter.collectors.containers import C_LABELS
from cri_exporter.exposition import AnyFamily, Family
from cri_exporter.pod_logs import ContainerLogSampler


class ContainerLogsCollector:
    name = "container_logs"
    # All denied (--metrics-deny), the collector is not run and its sampler
    # neither lists containers nor stats a log (Exporter).
    families = ("cri_container_log_file_bytes", "cri_container_log_rotated_files", "cri_container_log_bytes",
                "cri_container_log_max_size_bytes", "cri_container_log_max_files",
                "cri_container_log_sample_timestamp_seconds", "cri_container_log_sample_duration_seconds",
                "cri_container_log_sample_files", "cri_container_log_sample_interval_seconds")

    def __init__(self, sampler: ContainerLogSampler):
        self.sampler = sampler

    def collect(self, ctx: ScrapeContext) -> Iterable[AnyFamily]:
        sample = self.sampler.current(ctx.remaining())
        if sample is None:
            raise PartialCollection(self.sampler.last_error or "no round over the container logs finished yet", [])
        metrics: list[AnyFamily] = []
        current = Family(
            "cri_container_log_file_bytes",
            "Size of the log file the runtime writes for the container now: the kubelet rotates it once it reaches "
            "containerLogMaxSize (cri_container_log_max_size_bytes).", labels=C_LABELS)
        rotated = Family(
            "cri_container_log_rotated_files",
            "Rotated files kept beside the container's log (<log>.<timestamp> and its .gz), as the kubelet counts "
            "them: at most containerLogMaxFiles - 1.", labels=C_LABELS)
        total = Family(
            "cri_container_log_bytes",
            "Bytes of the container's log on disk: the live file, its rotated and compressed files, and leftovers "
            "of an interrupted rotation.", labels=C_LABELS)
        label = ctx.labels.get
        for ident, current_bytes, rotated_files, total_bytes in sample.logs.rows():
            labels = label(C_LABELS, (ident.namespace, ident.pod, ident.container))
            current.add(labels, float(current_bytes))
            rotated.add(labels, float(rotated_files))
            total.add(labels, float(total_bytes))
        metrics += [current, rotated, total]
        limits = sample.limits
        max_size = Family(
            "cri_container_log_max_size_bytes",
            "The kubelet's containerLogMaxSize (flag, config file and drop-ins, else its default 10Mi); absent "
            "where rotation is off (a negative size) or the value is invalid.")
        max_files = Family(
            "cri_container_log_max_files",
            "The kubelet's containerLogMaxFiles: the live log and its rotated files together (default 5).")
        if limits is not None and limits.max_size_bytes is not None:
            max_size.add_metric([], float(limits.max_size_bytes))
        if limits is not None and limits.max_files is not None:
            max_files.add_metric([], float(limits.max_files))
        metrics += [max_size, max_files]
        taken = Family(
            "cri_container_log_sample_timestamp_seconds",
            "When the container logs were last stat'ed (every --container-log-interval, off the scrape path).")
        taken.add_metric([], sample.taken_at)
        took = Family("cri_container_log_sample_duration_seconds",
                      "How long the last round over the container logs took (CRI lists and stats).")
        took.add_metric([], sample.duration)
        files_n = Family("cri_container_log_sample_files", "Log files stat'ed in the last round (its cost grows with them).")
        files_n.add_metric([], float(sample.files))
        every = Family("cri_container_log_sample_interval_seconds",
                       "Seconds between rounds over the container logs (--container-log-interval).")
        every.add_metric([], self.sampler.interval)
        metrics += [taken, took, files_n, every]
        if self.sampler.last_error is not None:
            raise PartialCollection(f"the last round failed, serving the one before: {self.sampler.last_error}", metrics)
        if self.sampler.limits_error is not None:
            raise PartialCollection(f"kubelet log limits unreadable: {self.sampler.limits_error}", metrics)
        return metrics
