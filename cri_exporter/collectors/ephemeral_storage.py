"""Pods' ephemeral storage (the walk in ephemeral_storage.py, served as it
stands) and the node's headroom to the kubelet's disk eviction thresholds.

A pod is named from CRI's inventory by its uid; a directory whose uid no
current sandbox has (a pod being torn down, or the kubelet's leftovers) is
not served. The writable layers come from the stats snapshot (CRI
ListContainerStats), summed over the pod's current containers, so
`sum by (namespace, pod) (cri_pod_ephemeral_storage_bytes)` is what the
kubelet compares with the pod's ephemeral-storage limit.
"""
from __future__ import annotations

from typing import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from cri_exporter.collectors.base import PartialCollection, ScrapeContext
from cri_exporter.cri import CriError
from cri_exporter.ephemeral_storage import REASONS, EphemeralStorageWalker
from cri_exporter.exposition import AnyFamily, ExtraLabelFamily, Family, LabelCache
from cri_exporter.inventory import pod_identity

P_LABELS = ("namespace", "pod")

# Families the walk feeds: all denied, the walker is never started (Exporter).
WALK_FAMILIES = ("cri_pod_ephemeral_storage_bytes", "cri_pod_ephemeral_storage_inodes",
                 "cri_pod_emptydir_bytes", "cri_pod_emptydir_inodes", "cri_pod_emptydir_method_info",
                 "cri_pod_ephemeral_storage_measured_timestamp_seconds",
                 "cri_ephemeral_storage_walk_files_total", "cri_ephemeral_storage_walk_errors_total",
                 "cri_ephemeral_storage_walk_cpu_seconds_total", "cri_ephemeral_storage_walks_total",
                 "cri_ephemeral_storage_walk_last_completed_timestamp_seconds",
                 "cri_ephemeral_storage_walk_last_duration_seconds",
                 "cri_ephemeral_storage_walk_interval_seconds",
                 "cri_eviction_threshold_bytes", "cri_eviction_threshold_inodes",
                 "cri_eviction_headroom_bytes", "cri_eviction_headroom_inodes")


class EphemeralStorageCollector:
    name = "ephemeral_storage"
    families = WALK_FAMILIES

    def __init__(self, walker: EphemeralStorageWalker, refresher=None):
        self.walker = walker
        self.refresher = refresher

    def collect(self, ctx: ScrapeContext) -> Iterable[AnyFamily]:
        if not self.walker.started:
            # In-process (tests, the benchmark's floor): walk here, unpaced, once.
            if not self.walker.first.is_set():
                self.walker.walk_once()
        else:
            self.walker.first.wait(ctx.remaining())
        sample = self.walker.sample()
        metrics: list[AnyFamily] = list(self._node(sample))
        try:
            inventory = ctx.inventory()
        except CriError as err:
            raise PartialCollection(f"pods unknown, CRI did not answer: {err}", metrics) from None
        metrics.extend(self._pods(sample, inventory, ctx.labels))
        if self.walker.last_error:
            raise PartialCollection(self.walker.last_error, metrics)
        return metrics

    def _pods(self, sample, inventory, cache: LabelCache) -> tuple[AnyFamily, ...]:
        """Per pod: the exposition's Family rows on the scrape's cached pod label
        sets (the source or volume written into the line), not a library Sample
        per series: 3,500 series at 1,000 containers took 4.1 ms a scrape."""
        used = ExtraLabelFamily(
            "cri_pod_ephemeral_storage_bytes",
            "Ephemeral storage the kubelet counts against the pod, by source: writable_layer (CRI stats, its current "
            "containers summed), emptydir (disk-backed emptyDir volumes) and logs (its log directory), in allocated "
            "blocks as du counts them.", P_LABELS, "source")
        inodes = ExtraLabelFamily(
            "cri_pod_ephemeral_storage_inodes", "Inodes of the pod's ephemeral storage, by source.", P_LABELS, "source")
        vol_bytes = ExtraLabelFamily(
            "cri_pod_emptydir_bytes", "Bytes of each disk-backed emptyDir volume of the pod (allocated blocks).",
            P_LABELS, "volume")
        vol_inodes = ExtraLabelFamily(
            "cri_pod_emptydir_inodes", "Inodes of each disk-backed emptyDir volume of the pod.", P_LABELS, "volume")
        method = Family(
            "cri_pod_emptydir_method_info",
            "How each disk-backed emptyDir was measured: method quota (its project quota, where the kubelet assigned "
            "one and the agent may read it: CAP_SYS_ADMIN) or walk, with the reason it was walked (no_project, "
            "no_capability, accounting_off, not_supported, shared_project, error; empty for quota).",
            [*P_LABELS, "volume", "method", "reason"])
        measured = Family(
            "cri_pod_ephemeral_storage_measured_timestamp_seconds",
            "When the pod's emptyDirs and logs were last walked (Unix time): their numbers are this old.",
            labels=P_LABELS)
        snapshot = self.refresher.snapshot if self.refresher is not None else None
        layers: dict[str, tuple[int, int]] = {}
        if snapshot is not None:
            rows = snapshot.containers
            row_of, numbers = rows.index.get, rows.values
            col_b, col_i = rows.column("writable_layer_bytes"), rows.column("writable_layer_inodes")
            for c in inventory.current_containers.values():
                row = row_of(c.id)
                if row is None:
                    continue
                used_b = numbers[row + col_b]
                if used_b != used_b:  # NaN: no writable layer in the answer
                    continue
                used_i = numbers[row + col_i]
                uid = inventory.pod_uid(c)
                b, i = layers.get(uid, (0, 0))
                layers[uid] = (b + int(used_b), i + (int(used_i) if used_i == used_i else 0))
        label = cache.get
        for p in sorted(inventory.current_pods.values(), key=lambda p: (p.k8s_namespace, p.k8s_name)):
            ident = pod_identity(p)
            labels = label(P_LABELS, (ident.namespace, ident.pod))
            uid = p.k8s_uid
            if uid in layers:
                used.add_extra(labels, "writable_layer", float(layers[uid][0]))
                inodes.add_extra(labels, "writable_layer", float(layers[uid][1]))
            walked = sample.pods.get(uid)
            if walked is None:
                continue
            if walked.emptydirs:
                used.add_extra(labels, "emptydir", float(sum(u.bytes for u in walked.emptydirs.values())))
                inodes.add_extra(labels, "emptydir", float(sum(u.inodes for u in walked.emptydirs.values())))
                for name in sorted(walked.emptydirs):
                    volume = walked.emptydirs[name]
                    vol_bytes.add_extra(labels, name, float(volume.bytes))
                    vol_inodes.add_extra(labels, name, float(volume.inodes))
                    if volume.method is not None:
                        method.add_metric((*labels.values, name, *volume.method), 1.0)
            if walked.logs is not None:
                used.add_extra(labels, "logs", float(walked.logs.bytes))
                inodes.add_extra(labels, "logs", float(walked.logs.inodes))
            measured.add(labels, walked.measured_at)
        return used, inodes, vol_bytes, vol_inodes, method, measured

    def _node(self, sample) -> Iterable[Metric]:
        c = self.walker.counters
        files = CounterMetricFamily(
            "cri_ephemeral_storage_walk_files",
            "Directory entries the ephemeral-storage walk has visited (paced by --ephemeral-storage-files-per-second).")
        files.add_metric([], float(c.files))
        errors = CounterMetricFamily(
            "cri_ephemeral_storage_walk_errors",
            "Entries the walk could not measure, by reason: permission (unreadable), vanished (deleted mid-walk), "
            "too_deep (past 64 levels), other.", labels=["reason"])
        for reason in REASONS:
            errors.add_metric([reason], float(c.errors[reason]))
        cpu = CounterMetricFamily("cri_ephemeral_storage_walk_cpu_seconds", "CPU time the walking thread has used.")
        cpu.add_metric([], c.cpu_seconds)
        walks = CounterMetricFamily("cri_ephemeral_storage_walks", "Walks of every pod's emptyDirs and logs completed.")
        walks.add_metric([], float(c.walks))
        every = GaugeMetricFamily("cri_ephemeral_storage_walk_interval_seconds",
                                  "Seconds from the start of one walk to the next (--ephemeral-storage-interval); "
                                  "a longer walk goes on, the next starts when it ends.")
        every.add_metric([], self.walker.interval)
        out: list[Metric] = [files, errors, cpu, walks, every]
        if c.last_completed_at is not None and c.last_duration is not None:
            done = GaugeMetricFamily("cri_ephemeral_storage_walk_last_completed_timestamp_seconds",
                                     "When the last complete walk of every pod ended (Unix time).")
            done.add_metric([], c.last_completed_at)
            took = GaugeMetricFamily("cri_ephemeral_storage_walk_last_duration_seconds",
                                     "How long the last complete walk took, pacing included.")
            took.add_metric([], c.last_duration)
            out += [done, took]
        thr_b = GaugeMetricFamily(
            "cri_eviction_threshold_bytes",
            "The kubelet's hard eviction threshold on a filesystem as bytes (percentages applied to its capacity), "
            "from its effective flags and config, defaults merged as the kubelet does.", labels=["signal", "path"])
        thr_i = GaugeMetricFamily("cri_eviction_threshold_inodes", "The kubelet's hard eviction threshold on free inodes.",
                                  labels=["signal", "path"])
        head_b = GaugeMetricFamily(
            "cri_eviction_headroom_bytes",
            "Available bytes above the kubelet's hard eviction threshold (negative: below it, the kubelet evicts).",
            labels=["signal", "path"])
        head_i = GaugeMetricFamily("cri_eviction_headroom_inodes", "Free inodes above the kubelet's hard eviction threshold.",
                                   labels=["signal", "path"])
        for h in sample.headroom:
            inodes = h.signal.endswith("inodesFree")
            (thr_i if inodes else thr_b).add_metric([h.signal, h.path], h.threshold)
            (head_i if inodes else head_b).add_metric([h.signal, h.path], h.headroom)
        return [*out, thr_b, thr_i, head_b, head_i]
