"""Open file descriptors and sockets per container, TCP sockets by state per
pod: the latest readings of container_fds.py's sampler, which runs off the
scrape path. This collector hands the sampler its targets from the scrape's
inventory: running containers of cgroup-backed pods, and ready pods not on
the host's network (their namespace is the node's: its sockets are not the
pod's; PodSandboxStatus says which, asked once per sandbox).
"""
from __future__ import annotations

from typing import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from cri_exporter.collectors.base import ScrapeContext
from cri_exporter.collectors.containers import C_LABELS, P_LABELS, cgroup_backed_cached
from cri_exporter.container_fds import FD_COLUMNS, TCP_TAKEN_AT, FdSample, FdSampler
from cri_exporter.exposition import AnyFamily, ExtraLabelFamily, Family
from cri_exporter.fetch_once import FetchOnce
from cri_exporter.inventory import cgroup_backed
from cri_exporter.tcp_states import STATE_NAMES

FD_FAMILIES = ("cri_container_file_descriptors", "cri_container_sockets",
               "cri_container_file_descriptors_limit_ratio")
TCP_FAMILIES = ("cri_pod_tcp_connections",)
SAMPLER_FAMILIES = ("cri_fd_sampler_oldest_reading_timestamp_seconds", "cri_fd_sampler_pending",
                    "cri_fd_sampler_pass_duration_seconds", "cri_fd_sampler_pass_entries",
                    "cri_fd_sampler_cpu_seconds_total", "cri_fd_sampler_budget_exhausted_total",
                    "cri_fd_sampler_last_pass_timestamp_seconds", "cri_fd_sampler_interval_seconds")


class ContainerFdsCollector:
    name = "container_fds"
    # With every fd and TCP family denied the collector does not run, and
    # with one side denied the sampler is given no targets for it.
    families = FD_FAMILIES + TCP_FAMILIES + SAMPLER_FAMILIES

    def __init__(self, sampler: FdSampler):
        self.sampler = sampler
        self.host_network = FetchOnce(lambda client, sid, t: client.pod_sandbox_uses_host_network(sid, timeout=t))

    def collect(self, ctx: ScrapeContext) -> Iterable[AnyFamily]:
        inv = ctx.inventory()
        want_fds = ctx.metrics.wants_any(FD_FAMILIES)
        want_tcp = ctx.metrics.wants_any(TCP_FAMILIES)
        containers: dict[str, str] = {}
        if want_fds:
            known: dict[str, bool] = {}  # runtime handler -> cgroup_backed
            for c in inv.current_containers.values():
                if c.state == "running" and cgroup_backed_cached(inv.pods_by_id.get(c.pod_sandbox_id), known):
                    containers[c.id] = inv.pod_uid(c)
        pods: dict[str, str] = {}
        if want_tcp:
            ready = [p for p in inv.current_pods.values() if p.state == "ready" and cgroup_backed(p)]
            self.host_network.refresh(ctx.client, [(p.id, p.id) for p in ready], inv.pods_by_id.__contains__,
                                      lambda: min(ctx.rpc_timeout(), ctx.remaining() / 2))
            pods = {p.id: p.k8s_uid for p in ready if self.host_network.get(p.id) is False}
        self.sampler.set_targets(containers, pods)
        sample = self.sampler.sample()

        label = ctx.labels.get
        fds = Family("cri_container_file_descriptors",
                     "Open file descriptors of the container's processes, summed (/proc/<pid>/fd), "
                     "read every --fd-sample-interval.", labels=C_LABELS)
        sockets = Family("cri_container_sockets",
                         "Open sockets of the container's processes, summed (fds linking to socket:[...]).",
                         labels=C_LABELS)
        ratio = Family("cri_container_file_descriptors_limit_ratio",
                       "The highest share of its soft RLIMIT_NOFILE that one process of the container has open: "
                       "at 1 its open(), socket() and accept() fail with EMFILE.", labels=C_LABELS)
        oldest: float | None = None
        rows, v = sample.containers.index, sample.containers.values
        for ident, c in inv.current_containers.items():
            i = rows.get(c.id) if c.id in containers else None
            if i is None:
                continue
            # NaN (x != x): not known
            n_fds, n_sockets, limit_ratio, _, taken_at = v[i * FD_COLUMNS:(i + 1) * FD_COLUMNS]
            labels = label(C_LABELS, (ident.namespace, ident.pod, ident.container))
            if n_fds == n_fds:
                fds.add(labels, n_fds)
            if n_sockets == n_sockets:
                sockets.add(labels, n_sockets)
            if limit_ratio == limit_ratio:
                ratio.add(labels, limit_ratio)
            oldest = taken_at if oldest is None else min(oldest, taken_at)
        tcp = ExtraLabelFamily("cri_pod_tcp_connections",
                               "TCP sockets in the pod's network namespace by state (/proc/<pid>/net/tcp and tcp6); "
                               "absent for hostNetwork pods and where the files outgrow the read limit.",
                               P_LABELS, "state")
        states = tuple(STATE_NAMES)
        width = TCP_TAKEN_AT + 1
        rows, v = sample.pods.index, sample.pods.values
        for pod_ident, p in inv.current_pods.items():
            i = rows.get(p.id) if p.id in pods else None
            if i is None:
                continue
            row = v[i * width:(i + 1) * width]
            if row[0] != row[0]:  # a tcp file over the read limit
                continue
            labels = label(P_LABELS, (pod_ident.namespace, pod_ident.pod))
            tcp.add_each(labels, states, row[:TCP_TAKEN_AT])
            taken_at = row[TCP_TAKEN_AT]
            oldest = taken_at if oldest is None else min(oldest, taken_at)
        yield from (fds, sockets, ratio, tcp)
        yield from self._sampler_health(sample, oldest, self.sampler.interval)

    @staticmethod
    def _sampler_health(sample: FdSample, oldest: float | None, interval: float) -> Iterable[AnyFamily]:
        age = GaugeMetricFamily(
            "cri_fd_sampler_oldest_reading_timestamp_seconds",
            "When the oldest fd, socket or TCP reading served was taken (Unix time): the budget "
            "(--fd-sample-budget) may spread a node's reads over several --fd-sample-interval.")
        if oldest is not None:
            age.add_metric([], oldest)
        pending = GaugeMetricFamily(
            "cri_fd_sampler_pending", "Containers and pods with no fd or TCP reading yet (new, or left out by the budget).")
        pending.add_metric([], float(sample.pending))
        took = GaugeMetricFamily("cri_fd_sampler_pass_duration_seconds", "How long the last pass took.")
        took.add_metric([], sample.last_pass_duration)
        entries = GaugeMetricFamily(
            "cri_fd_sampler_pass_entries",
            "Entries read in the last pass: fd entries, TCP socket lines, and one per container or pod.")
        entries.add_metric([], float(sample.last_pass_entries))
        cpu = CounterMetricFamily("cri_fd_sampler_cpu_seconds", "CPU time the passes took (thread time).")
        cpu.add_metric([], sample.cpu_seconds)
        exhausted = CounterMetricFamily(
            "cri_fd_sampler_budget_exhausted",
            "Passes that stopped at --fd-sample-budget before reading every target (those come first next pass).")
        exhausted.add_metric([], float(sample.budget_exhausted))
        # The pass's own clock, apart from the readings': with the budget spent, the oldest
        # reading is legitimately several intervals old; a pass that stops ending is not.
        passed = GaugeMetricFamily("cri_fd_sampler_last_pass_timestamp_seconds",
                                   "When the last pass ended (Unix time).")
        if sample.last_pass_at is not None:
            passed.add_metric([], sample.last_pass_at)
        every = GaugeMetricFamily("cri_fd_sampler_interval_seconds", "Seconds between passes (--fd-sample-interval).")
        every.add_metric([], interval)
        yield from (age, pending, took, entries, cpu, exhausted, passed, every)
