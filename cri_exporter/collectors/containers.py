"""Containers and pods: what the runtime holds (ListPodSandbox, ListContainers,
ContainerStatus) with their CPU, memory, disk and network use.

Usage values come live at scrape time where the pod runs under a runc-like
handler: CPU and memory from the cgroup files, network (every interface) from
the pod's network namespace; milliseconds, always fresh. They come from the
latest background CRI stats snapshot for handlers whose host cgroup describes
a VM rather than the container (kata, gVisor), where the host's files are not
readable (permission denied: a mode change, a remount, an LSM, a capability
the agent lost), and for what only the runtime knows (the writable layer,
process count). Same names and labels either way; the stats refresher is told
so, and refreshes every --stats-interval while any value comes from it.

A cgroup that turns unreadable after its usage was served live gets CRI's
values only from a snapshot taken after that last live reading: an older one
would take the CPU counter backwards, which Prometheus reads as a reset (the
whole counter counted again as new CPU time). Until such a snapshot exists,
one refresh at most, its usage series are absent.

Every series describes the *current* instance of a container or pod (see
inventory.py), so a restarted container's exited attempt never collides with
its running one. Only values the runtime or kernel gave are exported.
"""
from __future__ import annotations

import time
from sys import intern
from typing import Iterable

from cri_exporter.cgroups import USAGE_FIELDS, CgroupUnreadable, NodeCgroups
from cri_exporter.collectors.base import PartialCollection, ScrapeContext
from cri_exporter.collectors.cgroup_readings import Readings, cgroup_readings
from cri_exporter.cri import model
from cri_exporter.exposition import AnyFamily, ExtraLabelFamily, Family, LabelCache, Labels, RowsFamily
from cri_exporter.fetch_once import FetchOnce, status_key
from cri_exporter.inventory import ContainerIdentity, Inventory, PodIdentity, cgroup_backed
from cri_exporter.podnet import PodNetwork
from cri_exporter.running_without_cgroup import FAMILY as _WITHOUT_CGROUP
from cri_exporter.running_without_cgroup import HELP as _WITHOUT_CGROUP_HELP
from cri_exporter.running_without_cgroup import RunningWithoutCgroup
from cri_exporter.sandbox_stats_errors import REASONS
from cri_exporter.stats_refresher import StatsRefresher, StatsSnapshot
from cri_exporter.stats_rows import EMPTY_CONTAINERS, EMPTY_PODS, StatsRows

CONTAINER_STATES = ("created", "running", "exited", "unknown")
POD_STATES = ("ready", "notready")
C_LABELS = ("namespace", "pod", "container")
P_LABELS = ("namespace", "pod")
_C_INFO = C_LABELS + ("container_id", "pod_id", "pod_uid", "image", "image_id", "runtime_handler")
_P_INFO = P_LABELS + ("pod_uid", "pod_id", "runtime_handler", "attempt")


# ContainerStats attribute -> the live cgroup Usage attribute with the same meaning.
_LIVE = {
    "cpu_usage_ns": "cpu_usage_ns",
    "memory_working_set_bytes": "memory_working_set_bytes",
    "memory_usage_bytes": "memory_usage_bytes",
    "memory_rss_bytes": "memory_rss_bytes",
    "memory_page_faults": "memory_page_faults",
    "memory_major_page_faults": "memory_major_page_faults",
    "swap_usage_bytes": "memory_swap_bytes",
}

# ContainerStats attribute -> its live value's column in a cgroups.UsageRows row.
_LIVE_COLUMN = {attr: USAGE_FIELDS.index(live) for attr, live in _LIVE.items()}

# (metric name, help, ContainerStats attribute, units per base unit, is counter)
# Not exported: usage_nano_cores and available_bytes. usage_nano_cores is the
# runtime's rate since the previous stats call of any client (the kubelet's,
# ours), 0 on a first call: its window is whoever asked last (measured on
# containerd 1.6.20, 1.7.24 and 2.1.9, tests/test_runtime_versions.py).
# available_bytes is 0 without a limit, so a zero cannot be told from "not
# measured". rate(cpu_usage_seconds_total) and the cgroup collector's limit
# give the same answers honestly.
_CONTAINER_STATS = (
    ("cri_container_cpu_usage_seconds", "Cumulative CPU time the container used.", "cpu_usage_ns", 1e9, True),
    ("cri_container_memory_working_set_bytes", "Memory working set (usage minus inactive file cache): what the kubelet evicts on (the OOM killer ranks by RSS, swap and page tables instead).", "memory_working_set_bytes", 1, False),
    ("cri_container_memory_usage_bytes", "Memory usage including all caches.", "memory_usage_bytes", 1, False),
    ("cri_container_memory_rss_bytes", "Anonymous and swap cache memory (RSS).", "memory_rss_bytes", 1, False),
    ("cri_container_memory_page_faults", "Cumulative page faults.", "memory_page_faults", 1, True),
    ("cri_container_memory_major_page_faults", "Cumulative major page faults.", "memory_major_page_faults", 1, True),
    ("cri_container_memory_swap_bytes", "Swap the container uses (runtimes that report it).", "swap_usage_bytes", 1, False),
    ("cri_container_writable_layer_bytes", "Bytes used by the container's writable layer.", "writable_layer_bytes", 1, False),
    ("cri_container_writable_layer_inodes", "Inodes used by the container's writable layer.", "writable_layer_inodes", 1, False),
)

_POD_STATS = (
    ("cri_pod_cpu_usage_seconds", "Cumulative CPU time of every process in the pod.", "cpu_usage_ns", 1e9, True),
    ("cri_pod_memory_working_set_bytes", "Memory working set of the pod.", "memory_working_set_bytes", 1, False),
    ("cri_pod_memory_usage_bytes", "Memory usage of the pod including caches.", "memory_usage_bytes", 1, False),
    ("cri_pod_memory_rss_bytes", "RSS of the pod.", "memory_rss_bytes", 1, False),
    ("cri_pod_processes", "Processes running in the pod.", "process_count", 1, False),
)

_POD_NET = (
    ("cri_pod_network_receive_bytes", "Bytes received by the pod on the interface.", "rx_bytes"),
    ("cri_pod_network_transmit_bytes", "Bytes transmitted by the pod on the interface.", "tx_bytes"),
    ("cri_pod_network_receive_errors", "Receive errors on the pod's interface.", "rx_errors"),
    ("cri_pod_network_transmit_errors", "Transmit errors on the pod's interface.", "tx_errors"),
    # Live only: CRI's NetworkInterfaceUsage carries bytes and errors, not these.
    ("cri_pod_network_receive_packets", "Packets received by the pod on the interface.", "rx_packets"),
    ("cri_pod_network_transmit_packets", "Packets transmitted by the pod on the interface.", "tx_packets"),
    ("cri_pod_network_receive_packets_dropped", "Received packets dropped on the pod's interface.", "rx_dropped"),
    ("cri_pod_network_transmit_packets_dropped", "Packets dropped on transmit on the pod's interface.", "tx_dropped"),
)


# A state outside the known ones (never seen: the model maps CRI's): 0 for every series.
_NO_STATE = {n: (0.0,) * n for n in (len(CONTAINER_STATES), len(POD_STATES))}
# state -> the value of each state's series (1.0 for it, 0.0 for the others)
_CONTAINER_STATE_VALUES = {s: tuple(1.0 if s == t else 0.0 for t in CONTAINER_STATES) for s in CONTAINER_STATES}
_POD_STATE_VALUES = {s: tuple(1.0 if s == t else 0.0 for t in POD_STATES) for s in POD_STATES}


def cgroup_backed_cached(pod: model.PodSandbox | None, known: dict[str, bool]) -> bool:
    """inventory.cgroup_backed, once per runtime handler a scrape (`known`)."""
    handler = pod.runtime_handler if pod else ""
    backed = known.get(handler)
    if backed is None:
        backed = known[handler] = cgroup_backed(pod)
    return backed


def _value_rows(stats: tuple, fields: tuple[str, ...]) -> list:
    """This scrape's families of a stats table, each with what _add_values
    needs: (family, live cgroup attribute or None, the CRI value's column in a
    StatsRows row of `fields`, units per base unit)."""
    return [(Family(n, d, labels, counter), _LIVE_COLUMN.get(attr), fields.index(attr), per)
            for n, d, labels, attr, per, counter in stats]


def _exposed(name: str, counter: bool) -> str:
    return name + "_total" if counter else name


# Families that need ContainerStatus (one call per new container and exit):
# denied, the calls are not made.
_STATUS_FAMILIES = ("cri_container_start_time_seconds", "cri_container_last_terminated_reason",
                    "cri_container_last_terminated_exit_code", "cri_container_last_terminated_time_seconds")
STATUS_FAMILIES = _STATUS_FAMILIES  # served: its scrapes keep the ContainerStatus cache (the log round shares it)
# Families read from the pods' network namespaces (and PodSandboxStatus for hostNetwork).
_NET_FAMILIES = tuple(_exposed(n, True) for n, _, _ in _POD_NET)
_CONTAINER_USAGE = tuple(_exposed(n, c) for n, _, attr, _, c in _CONTAINER_STATS if attr in _LIVE)
_POD_USAGE = tuple(_exposed(n, c) for n, _, attr, _, c in _POD_STATS if attr in _LIVE)


class ContainersCollector:
    name = "containers"
    families = (
        "cri_containers", "cri_pods", "cri_container_info", "cri_container_state", "cri_container_restarts",
        *_STATUS_FAMILIES, *(_exposed(n, c) for n, _, _, _, c in _CONTAINER_STATS),
        "cri_pod_info", "cri_pod_state", "cri_pod_created_time_seconds",
        *(_exposed(n, c) for n, _, _, _, c in _POD_STATS), *_NET_FAMILIES, _WITHOUT_CGROUP,
    )

    def __init__(self, refresher: StatsRefresher | None, cgroups: NodeCgroups | None = None,
                 podnet: PodNetwork | None = None):
        self.refresher = refresher
        self.cgroups = cgroups
        self.podnet = podnet
        # keyed by container id and state (fetch_once.status_key)
        self.statuses: FetchOnce[model.KeptStatus] = FetchOnce(lambda client, cid, t: _kept(client.container_status(cid, timeout=t),
                                                              self.keep_log_paths), _status_settled)
        # Set by the Exporter when the container log round shares this cache: it
        # needs the log path, which it then keeps nowhere else.
        self.keep_log_paths = False
        # keyed by sandbox id
        self.host_network = FetchOnce(lambda client, sid, t: client.pod_sandbox_uses_host_network(sid, timeout=t))
        # running containers whose cgroup is gone (running_without_cgroup.py), across readings
        self.without_cgroup = RunningWithoutCgroup()

    def collect(self, ctx: ScrapeContext) -> Iterable[AnyFamily]:
        inv = ctx.inventory()
        snapshot = stats_snapshot(ctx, self.refresher) if self.refresher else None
        statuses = ctx.metrics.wants_any(_STATUS_FAMILIES)
        network = self.podnet is not None and ctx.metrics.wants_any(_NET_FAMILIES)
        last_exited = inv.last_exited() if statuses else {}
        self._refresh_statuses(ctx, inv, last_exited, statuses, network)
        readings = cgroup_readings(ctx, self.cgroups) if self.cgroups else Readings()
        taken_at = snapshot.taken_at if snapshot else 0.0
        containers, containers_used = self._containers(ctx.labels, inv, readings, last_exited,
                                                       snapshot.containers if snapshot else EMPTY_CONTAINERS, taken_at)
        pods, pods_used = self._pods(ctx.labels, inv, readings, snapshot.pods if snapshot else EMPTY_PODS, taken_at,
                                     network,
                                     ctx.metrics.wants_any(_POD_USAGE))
        if self.refresher:
            # Only a family served makes the snapshot a source worth refreshing often.
            self.refresher.snapshot_feeds_usage((containers_used and ctx.metrics.wants_any(_CONTAINER_USAGE)) or pods_used)
        yield from self._node_counts(inv)
        yield from containers
        yield from pods
        if self.cgroups:
            yield self._without_cgroup(ctx.labels, inv, readings)

    def _without_cgroup(self, cache: LabelCache, inv: Inventory, readings: Readings) -> Family:
        known: dict[str, bool] = {}
        family = Family(_WITHOUT_CGROUP, _WITHOUT_CGROUP_HELP, labels=C_LABELS)
        for ident, since in self.without_cgroup.update(inv, readings.containers.index, readings.pods.index,
                                                       readings.denied_containers,
                                                       lambda pod: cgroup_backed_cached(pod, known)):
            family.add(cache.get(C_LABELS, (ident.namespace, ident.pod, ident.container)), since)
        return family

    def _refresh_statuses(self, ctx: ScrapeContext, inv: Inventory,
                          last_exited: dict[ContainerIdentity, model.Container],
                          containers: bool = True, network: bool = True) -> None:
        """Per-object status calls for what is new since the last scrape.

        They get half of what the scrape has left: on a first scrape of
        thousands of containers the rest is asked next time, and the series
        that need no status call are still served in this one. `containers` /
        `network`: whether a family served needs ContainerStatus /
        PodSandboxStatus at all (--metrics-deny).
        """
        stop_at = time.monotonic() + ctx.remaining() / 2

        def timeout() -> float:
            return min(ctx.rpc_timeout(), stop_at - time.monotonic())

        if containers:
            wanted = [c for c in inv.current_containers.values() if c.state in ("running", "exited")]
            wanted += list(last_exited.values())
            listed = {status_key(c.id, c.state) for c in inv.containers}
            self.statuses.refresh(ctx.client, [(status_key(c.id, c.state), c.id) for c in wanted], listed.__contains__,
                                  timeout)
        if self.podnet and network:
            ready = [p.id for p in inv.current_pods.values() if p.state == "ready"]
            self.host_network.refresh(ctx.client, [(i, i) for i in ready], inv.pods_by_id.__contains__, timeout)

    def _node_counts(self, inv: Inventory) -> Iterable[AnyFamily]:
        containers = Family(
            "cri_containers", "Container instances the runtime holds by state, old attempts included.", labels=["state"]
        )
        for state in CONTAINER_STATES:
            containers.add_metric([state], float(sum(1 for c in inv.containers if c.state == state)))
        pods = Family("cri_pods", "Pod sandboxes the runtime holds by state, old ones included.", labels=["state"])
        for state in POD_STATES:
            pods.add_metric([state], float(sum(1 for p in inv.pods if p.state == state)))
        yield containers
        yield pods

    def _containers(self, cache: LabelCache, inv: Inventory, readings: Readings, last_exited: dict[ContainerIdentity, model.Container],
                    stats: StatsRows, taken_at: float) -> tuple[list[Family], bool]:
        """The container families, and whether any running container's usage came from the snapshot."""
        snapshot_used = False
        info = RowsFamily(
            "cri_container_info",
            "The current instance of each container: ids, image and pod; always 1.",
            _C_INFO, _container_info_values(inv),
        )
        state = ExtraLabelFamily("cri_container_state", "1 for the container's current state, 0 for the others.",
                                 C_LABELS, "state")
        restarts = Family("cri_container_restarts", "Restarts of the container: the attempt number of its current instance.", labels=C_LABELS)
        started = Family("cri_container_start_time_seconds", "Unix time the current instance started.", labels=C_LABELS)
        reason = ExtraLabelFamily(
            "cri_container_last_terminated_reason",
            "Why the container's latest exited instance ended (OOMKilled, Error, Completed...); always 1.",
            C_LABELS, "reason",
        )
        exit_code = Family("cri_container_last_terminated_exit_code", "Exit code of the container's latest exited instance.", labels=C_LABELS)
        finished = Family("cri_container_last_terminated_time_seconds", "Unix time the container's latest exited instance ended.", labels=C_LABELS)
        values = _value_rows(tuple((n, d, C_LABELS, attr, per, counter) for n, d, attr, per, counter in _CONTAINER_STATS),
                             stats.fields)
        row_of, numbers = stats.index.get, stats.values
        live_containers, live_numbers = readings.containers.index.get, readings.containers.values
        label = cache.get
        known: dict[str, bool] = {}

        for ident, c in inv.current_containers.items():
            key = (ident.namespace, ident.pod, ident.container)
            labels = label(C_LABELS, key)
            pod = inv.pods_by_id.get(c.pod_sandbox_id)
            # Info label sets back one series each: their values made and rendered
            # when written (about 1 µs, exposition.render_labels), not kept (3 MB at
            # 5,000 containers) nor held until then (exposition.RowsFamily).
            info.add_row(ident, c, 1.0)
            state.add_each(labels, CONTAINER_STATES, _CONTAINER_STATE_VALUES.get(c.state) or _NO_STATE[len(CONTAINER_STATES)])
            restarts.add(labels, float(c.attempt))
            status = self.statuses.get(status_key(c.id, c.state))
            if status is not None and status.started_at_ns > 0:
                started.add(labels, status.started_at_ns / 1e9)
            live = None
            usage_from_snapshot = True
            if c.state == "running" and cgroup_backed_cached(pod, known):
                live = live_containers(c.id)
                usage_from_snapshot = live is not None or _snapshot_not_older(readings.denied_containers, c.id, taken_at)
            if c.state == "running" and live is None:
                snapshot_used = True
            _add_values(values, labels, live, live_numbers, numbers, row_of(c.id), usage_from_snapshot)

        for ident, c in last_exited.items():
            status = self.statuses.get(status_key(c.id, c.state))
            if status is None:
                continue
            key = (ident.namespace, ident.pod, ident.container)
            labels = label(C_LABELS, key)
            reason.add_extra(labels, status.reason or "Unknown", 1.0)
            exit_code.add(labels, float(status.exit_code))
            if status.finished_at_ns > 0:
                finished.add(labels, status.finished_at_ns / 1e9)

        families = [info, state, restarts, started, reason, exit_code, finished] + [row[0] for row in values]
        return families, snapshot_used

    def _pods(self, cache: LabelCache, inv: Inventory, readings: Readings, stats: StatsRows,
              taken_at: float, network: bool = True, usage: bool = True) -> tuple[list[Family], bool]:
        """The pod families, and whether any ready pod's usage or network came from the snapshot.
        `network` / `usage`: whether a network / usage family is served at all."""
        snapshot_used = False
        info = RowsFamily("cri_pod_info", "The current sandbox of each pod: ids and runtime handler; always 1.", _P_INFO,
                          _pod_info_values)
        state = ExtraLabelFamily("cri_pod_state", "1 for the pod sandbox's current state, 0 for the other.",
                                 P_LABELS, "state")
        created = Family("cri_pod_created_time_seconds", "Unix time the pod's current sandbox was created.", labels=P_LABELS)
        values = _value_rows(tuple((n, d, P_LABELS, attr, per, counter) for n, d, attr, per, counter in _POD_STATS),
                             stats.fields)
        row_of, numbers = stats.index.get, stats.values
        live_pods, live_numbers = readings.pods.index.get, readings.pods.values
        # The interface is written into each line (ExtraLabelFamily), not kept in a
        # label set of its own a pod and interface (2,500 sets, some 0.7 MB kept
        # between scrapes at 5,000 containers); the eight families share the splits.
        splits: dict = {}
        net = [(ExtraLabelFamily(n, d, P_LABELS, "interface", counter=True, splits=splits), attr)
               for n, d, attr in _POD_NET]
        label = cache.get
        known: dict[str, bool] = {}

        podnet = self.podnet if network else None  # the netns read is skipped when its families are denied
        if podnet:
            podnet.retain({p.id for p in inv.current_pods.values()})
        for ident, p in inv.current_pods.items():
            key = (ident.namespace, ident.pod)
            labels = label(P_LABELS, key)
            info.add_row(ident, p, 1.0)
            state.add_each(labels, POD_STATES, _POD_STATE_VALUES.get(p.state) or _NO_STATE[len(POD_STATES)])
            created.add(labels, p.created_at_ns / 1e9)
            live = None
            usage_from_snapshot = True
            backed = cgroup_backed_cached(p, known)
            if p.state == "ready" and backed:
                live = live_pods(p.k8s_uid)
                usage_from_snapshot = live is not None or _snapshot_not_older(readings.denied_pods, p.k8s_uid, taken_at)
            row = row_of(p.id)
            _add_values(values, labels, live, live_numbers, numbers, row, usage_from_snapshot)
            interfaces = None
            # hostNetwork pods' namespace holds the node's interfaces: CRI's word only.
            if p.state == "ready" and backed and podnet and self.host_network.get(p.id) is False:
                interfaces = podnet.interfaces(p.id, p.k8s_uid)
                snapshot_used = snapshot_used or interfaces is None
            if p.state == "ready" and live is None and usage:
                snapshot_used = True
            if interfaces is None:
                interfaces = stats.interfaces(p.id) if row is not None and network else ()
            for iface in interfaces:
                for family, attr in net:
                    v = getattr(iface, attr)
                    if v is not None:
                        family.add_extra(labels, iface.name, float(v))
        return [info, state, created] + [row[0] for row in values] + [f for f, _ in net], snapshot_used


# containerd 1.6.20 handles a container's exit and the kernel's OOM event
# separately: under load ContainerStatus says "Error" (137) first and
# "OOMKilled" a moment later. An exit is asked about again for this long.
_EXIT_SETTLE_SECONDS = 10.0


def _kept(status: model.ContainerStatus, log_path: bool = False) -> model.KeptStatus:
    """What the status cache keeps of an answer: the families read its times,
    exit code and reason, never its message, nor its log path (a path is some
    140 bytes a container: 0.7 MB at 5,000, kept between scrapes) unless the
    container log round shares the cache (`log_path`), which needs it. A
    running container's, most of them: a model.RunningStatus (its start and
    its path in shared parts)."""
    if (status.state == "running" and status.finished_at_ns == 0 and status.exit_code == 0
            and not status.reason):
        return model.RunningStatus(status.started_at_ns, status.log_path if log_path else "")
    status.message = ""
    if not log_path:
        status.log_path = ""
    status.reason = intern(status.reason)  # a few values node-wide (Completed, Error, OOMKilled)
    return status


def _status_settled(status: model.KeptStatus) -> bool:
    return status.state != "exited" or time.time() - status.finished_at_ns / 1e9 > _EXIT_SETTLE_SECONDS


def _snapshot_not_older(denied: dict[str, CgroupUnreadable], key: str, taken_at: float) -> bool:
    """False while the snapshot predates the last live reading of a cgroup now unreadable."""
    err = denied.get(key)
    return err is None or taken_at >= err.read_at


def _container_info_values(inv: Inventory):
    """cri_container_info's label values (_C_INFO) of an identity and its container, from `inv`."""
    pods_by_id, pod_uid = inv.pods_by_id, inv.pod_uid

    def values(ident: ContainerIdentity, c: model.Container) -> tuple[str, ...]:
        pod = pods_by_id.get(c.pod_sandbox_id)
        return (ident.namespace, ident.pod, ident.container, c.id, c.pod_sandbox_id, pod_uid(c), c.image, c.image_id,
                pod.runtime_handler if pod else "")
    return values


def _pod_info_values(ident: PodIdentity, p: model.PodSandbox) -> tuple[str, ...]:
    """cri_pod_info's label values (_P_INFO) of a pod's identity and its sandbox."""
    return (ident.namespace, ident.pod, p.k8s_uid, p.id, p.runtime_handler, str(p.attempt))


def _add_values(values, labels: Labels, live: int | None, live_numbers, numbers, row: int | None,
                usage_from_snapshot: bool = True) -> None:
    """Each value from the live cgroup reading if it has it (`live_numbers[live
    + live column]`, NaN for none: cgroups.UsageRows; `live` None when the
    cgroup was not read), else from the CRI snapshot (`numbers[row + column]`,
    NaN for none: stats_rows.py; `row` None when the snapshot has no row);
    usage values (those a cgroup gives) only if `usage_from_snapshot`."""
    for family, live_column, column, per in values:
        v = None
        if live_column is not None:
            if live is not None:
                v = live_numbers[live + live_column]
                if v != v:
                    v = None
            if v is None and row is not None and usage_from_snapshot:
                v = numbers[row + column]
                if v != v:
                    v = None
        elif row is not None:
            v = numbers[row + column]
            if v != v:
                v = None
        if v is not None:  # Family.add, inlined: this runs for every row of every container and pod
            family.labelsets.append(labels)
            family.values.append(v / per)


def stats_snapshot(ctx: ScrapeContext, refresher: StatsRefresher) -> StatsSnapshot | None:
    """The snapshot this scrape serves, the same for the values and for their age."""
    return ctx.shared("stats_snapshot", lambda: refresher.snapshot)


class StatsCollector:
    """Health of the background stats snapshot the containers collector joins."""

    name = "stats"
    families = ("cri_stats_refreshes_total", "cri_stats_refresh_failures_total", "cri_stats_snapshot_age_seconds",
                "cri_stats_snapshot_timestamp_seconds", "cri_stats_refresh_duration_seconds",
                "cri_stats_pod_sandbox_failures", "cri_stats_pod_sandboxes_unavailable",
                "cri_stats_refresh_interval_seconds")

    def __init__(self, refresher: StatsRefresher):
        self.refresher = refresher

    def collect(self, ctx: ScrapeContext) -> Iterable[AnyFamily]:
        snap = stats_snapshot(ctx, self.refresher)
        out: list[AnyFamily] = []
        refreshes = Family("cri_stats_refreshes", "Background refreshes of the CRI stats snapshot.", counter=True)
        refreshes.add_metric([], float(self.refresher.refreshes))
        failures = Family("cri_stats_refresh_failures", "Failed CRI stats calls in background refreshes.", ["method"], counter=True)
        for method, n in sorted(self.refresher.failures.items()):
            failures.add_metric([method], float(n))
        interval = Family("cri_stats_refresh_interval_seconds",
                          "Seconds between background refreshes now in force: --stats-interval while the snapshot "
                          "feeds usage values, else --stats-idle-interval.")
        interval.add_metric([], self.refresher.current_interval)
        out += [refreshes, failures, interval]
        if snap is None:
            raise PartialCollection(self.refresher.why_no_snapshot(), out)
        age = Family("cri_stats_snapshot_age_seconds", "Age of the CRI stats snapshot the container and pod stats come from.")
        age.add_metric([], max(0.0, time.time() - snap.taken_at))
        ts = Family("cri_stats_snapshot_timestamp_seconds", "Unix time the CRI stats snapshot was taken.")
        ts.add_metric([], snap.taken_at)
        dur = Family("cri_stats_refresh_duration_seconds", "Time each stats call took in the latest refresh.", labels=["method"])
        for method, seconds in sorted(snap.durations.items()):
            dur.add_metric([method], seconds)
        failed = Family(
            "cri_stats_pod_sandbox_failures",
            "Ready pod sandboxes whose stats could not be read in the latest refresh (ListPodSandboxStats failed "
            "or left them out, and PodSandboxStats failed too).",
        )
        failed.add_metric([], float(len(snap.failed_pod_ids)))
        # Not failures (sandbox_stats_errors.py): a container of the pod has just exited and the
        # runtime still lists it running without its task, or the sandbox stopped since it was listed.
        unavailable = Family(
            "cri_stats_pod_sandboxes_unavailable",
            "Ready pod sandboxes whose stats the runtime could not give in the latest refresh for a passing "
            "reason: task_gone (a container exited and its task is gone while the runtime still lists it "
            "running), sandbox_gone (stopped or removed since it was listed).",
            labels=["reason"],
        )
        for reason in REASONS:
            unavailable.add_metric([reason], float(sum(1 for _, r in snap.unavailable_pods if r == reason)))
        out += [age, ts, dur, failed, unavailable]
        if not snap.ok:
            raise PartialCollection(snap.container_error or snap.pod_list_error or "some pod sandboxes failed", out)
        return out
