"""The alert rules, built from alerts/settings.py.

Severity: critical pages a person now (the node cannot run pods, or we are
blind), warning is work for the day, info helps troubleshooting.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from alerts.settings import PRODUCTION, Settings

CONTAINER = "{{ $labels.namespace }}/{{ $labels.pod }}/{{ $labels.container }}"
POD = "{{ $labels.namespace }}/{{ $labels.pod }}"
ON = "{{ $labels.instance }}"


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    severity: str
    summary: str
    description: str

    def rule(self, s: Settings) -> dict:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": s.for_[self.name],
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": f"{s.runbook_base}{self.name}.md",
            },
        }


def _pct(x: float) -> str:
    return f"{x * 100:g}%"


def runtime_alerts(s: Settings) -> list[Alert]:
    return [
        Alert("CriExporterDown", f"up{s.sel()} == 0", "warning",
              "cri-exporter cannot be scraped.",
              f"Prometheus has not scraped cri-exporter at {ON} for {s.for_['CriExporterDown']}: this node's "
              "runtime, container and doctor metrics are missing, and the alerts based on them cannot fire."),
        Alert("CriRuntimeDown", f"cri_up{s.sel()} == 0", "critical",
              "The container runtime does not answer CRI.",
              f"The container runtime on {ON} has not answered CRI (Version or Status) for {s.for_['CriRuntimeDown']}: "
              "the kubelet cannot start, stop or inspect containers on this node."),
        Alert("CriRuntimeNotReady", "cri_runtime_condition" + s.sel('condition="RuntimeReady"') + " == 0",
              "critical",
              "The container runtime reports RuntimeReady=false.",
              f"The container runtime on {ON} has reported RuntimeReady=false (reason: "
              "\"{{ $labels.reason }}\") for " + s.for_["CriRuntimeNotReady"] +
              ": the kubelet marks the node NotReady and starts no pods on it."),
        Alert("CriNetworkNotReady", "cri_runtime_condition" + s.sel('condition="NetworkReady"') + " == 0",
              "critical",
              "The container runtime reports NetworkReady=false (CNI).",
              f"The container runtime on {ON} has reported NetworkReady=false (reason: "
              "\"{{ $labels.reason }}\") for " + s.for_["CriNetworkNotReady"] +
              ": the CNI plugin is not ready, so no new pod gets a network on this node."),
        # Not CriCollectorFailing: a container that has just exited makes containerd 1.6.20/1.7.24
        # answer NOT_FOUND for its pod's stats for under a second (cri_exporter/sandbox_stats_errors.py),
        # which is no failure of the exporter; one that lasts is the runtime's, and says which pod.
        Alert("CriPodStatsUnavailable",
              f"sum by ({s.by()}) (cri_stats_pod_sandboxes_unavailable{s.sel()}) > 0",
              "warning",
              "The container runtime gives no stats for some ready pods.",
              f"The container runtime on {ON} has given no stats for {{{{ $value }}}} ready pod sandbox(es) for "
              f"{s.for_['CriPodStatsUnavailable']}: it lists a container running whose task is gone, so the "
              "kubelet does not restart that container and the pod's usage is missing. "
              "`cri-exporter doctor --check cri.pod_stats` on the node names the pod."),
        # The same runtime fault seen on every containerd version (2.x answers the pod's stats): the
        # container's cgroup is gone while CRI lists it running (cri_exporter/running_without_cgroup.py,
        # which already waits 30 s and two readings out the races of a normal exit). The `for` outlasts
        # containerd's longest retry back-off (5 minutes), after which a disk freed by itself is seen.
        Alert("CriContainerRunningWithoutCgroup",
              f"max by ({s.by('namespace', 'pod', 'container')}) "
              f"(cri_container_running_without_cgroup_since_time_seconds{s.sel()})",
              "warning",
              "The container runtime lists a container running that has no processes left.",
              f"Container {CONTAINER} on {ON} has had no cgroup since {{{{ $value | humanizeTimestamp }}}} while the "
              "container runtime lists it running: its processes exited and the runtime could not record it "
              "(its state directory not writable: a full or read-only disk). The kubelet believes the runtime "
              "and does not restart it, so the container is down until the disk is fixed. "
              "`cri-exporter doctor --check cri.running_without_cgroup` on the node names it."),
    ]


def runtime_process_alerts(s: Settings) -> list[Alert]:
    """From the runtime_processes collector: the runtime's own health."""
    proc = "{{ $labels.process }}"
    return [
        Alert("CriRuntimeRestarted",
              f"changes(cri_runtime_process_start_time_seconds{s.sel()}[{s.runtime_restart_window}]) > 0",
              "warning",
              "The container runtime restarted.",
              f"{proc} on {ON} started {{{{ $value }}}} time(s) anew in the last {s.runtime_restart_window}: "
              "while it was down the kubelet could not start or stop containers, and a crash loses its "
              "in-memory state (pulls, exec sessions, event subscribers)."),
        Alert("CriRuntimeFdsNearLimit",
              f"cri_runtime_process_open_fds{s.sel()} / (cri_runtime_process_max_fds{s.sel()} > 0) "
              f"> {s.runtime_fds_ratio:g}",
              "warning",
              "The container runtime is close to its open file limit.",
              f"{proc} on {ON} holds {{{{ $value | humanizePercentage }}}} of its open file descriptor limit "
              f"(threshold {_pct(s.runtime_fds_ratio)}): at the limit it cannot accept CRI connections, "
              "start shims or open container logs, and pods fail to start."),
        Alert("CriRuntimeShimsLeaked",
              f"cri_runtime_shims_leaked{s.sel()} > 0",
              "warning",
              "Shims run for pods the container runtime no longer knows.",
              f"{{{{ $value }}}} {proc} process(es) on {ON} serve a sandbox or container that CRI no longer lists: "
              "each holds memory, the container's processes, mounts and often a network namespace and a pod IP, "
              "and nothing will ever stop them."),
    ]


def _new_or_increase(metric: str, window: str, indent: str = "  ") -> str:
    """increase() over `window`, but the whole value of a series born within it.

    increase() needs two samples, so the first count of a series that appears
    already at 1 (a container's first termination) is lost to it. A
    terminations series is only born with a termination (the exporter's
    baseline counts nothing), so its whole value is the news.
    """
    return (f"({metric} unless {metric} offset {window})\n"
            f"{indent}or\n{indent}increase({metric}[{window}])")


def container_alerts(s: Settings) -> list[Alert]:
    w = s.rate_window
    key = s.by("namespace", "pod", "container")
    pod_key = s.by("namespace", "pod")
    oom_killed = s.sel('reason="OOMKilled"')
    return [
        Alert("CriContainerCPUThrottlingHigh",
              f"sum by ({key}) (increase(cri_container_cpu_cfs_throttled_periods_total{s.sel()}[{w}]))\n"
              f"  /\nsum by ({key}) (increase(cri_container_cpu_cfs_periods_total{s.sel()}[{w}]))\n"
              f"  > {s.cpu_throttling_ratio:g}",
              "info",
              "A container is CPU-throttled by its limit.",
              f"Container {CONTAINER} on {ON} was throttled in {{{{ $value | humanizePercentage }}}} of its CFS "
              f"periods over the last {w} (threshold {_pct(s.cpu_throttling_ratio)}): it waits for CPU its limit "
              "does not allow, which shows as latency."),
        Alert("CriContainerOOMKilled",
              # Two ways an OOM kill shows: a process killed inside a container
              # that lives on (cgroup oom_kill counter), or the container's
              # main process killed (CRI reports the exited instance as
              # OOMKilled). A counter whose series appears already at 1 (the
              # kill happened before the first scrape) is only seen the second way.
              f"max by ({key}) (increase(cri_container_memory_oom_kills_total{s.sel()}[{s.oom_recent_window}]) > 0)\n"
              f"or on ({key})\n"
              f"max by ({key}) (\n"
              f"  cri_container_last_terminated_reason{oom_killed}\n"
              f"  and on ({key})\n"
              f"  (time() - cri_container_last_terminated_time_seconds{s.sel()} < {s.oom_recent_seconds})\n"
              f")",
              "warning",
              "A container was OOM-killed.",
              f"The OOM killer killed a process of container {CONTAINER} on {ON} in the last "
              f"{s.oom_recent_window}: it used more memory than its limit. Its work was lost or restarted."),
        Alert("CriContainerCrashLooping",
              f"sum by ({key}) (\n"
              f"  {_new_or_increase('cri_container_terminations_total' + s.sel(), s.crashloop_window)}\n"
              f") >= {s.crashloop_terminations}",
              "warning",
              "A container keeps terminating and being restarted (CrashLoopBackOff).",
              f"Container {CONTAINER} on {ON} ended {{{{ $value | humanize }}}} times in the last "
              f"{s.crashloop_window} (threshold {s.crashloop_terminations}): it crashes or exits and the kubelet "
              "restarts it with a growing back-off. `cri_container_terminations_total` says why (reason, exit code)."),
        Alert("CriPodOOMKillsRepeated",
              # The pod cgroup's memory.events oom_kill (cgroup v2, hierarchical:
              # every container's kills, even of instances gone since) is the
              # kernel's count, whatever the runtime reports: containerd 2.1.9
              # under load reports an OOM-killed container as Error/137. Where
              # it is missing (cgroup v1), the OOMKilled terminations.
              f"(\n"
              f"  sum by ({pod_key}) (increase(cri_pod_memory_oom_kills_total{s.sel()}[{s.oom_kills_window}]))\n"
              f"or\n"
              f"  sum by ({pod_key}) (\n"
              f"    {_new_or_increase('cri_container_terminations_total' + oom_killed, s.oom_kills_window, indent='    ')}\n"
              f"  )\n"
              f") >= {s.oom_kills}",
              "warning",
              "A pod's containers are OOM-killed again and again.",
              f"The OOM killer killed {{{{ $value | humanize }}}} processes of pod {POD} on {ON} in the last "
              f"{s.oom_kills_window} (threshold {s.oom_kills}): its memory limits are too low for its work, "
              "or it leaks."),
        Alert("CriContainerMemoryNearLimit",
              f"max by ({key}) (cri_container_memory_working_set_bytes{s.sel()})\n"
              f"  /\nmax by ({key}) (cri_container_spec_memory_limit_bytes{s.sel()} > 0)\n"
              f"  > {s.memory_limit_ratio:g}",
              "warning",
              "A container's memory working set is near its limit.",
              f"Container {CONTAINER} on {ON} has a working set of {{{{ $value | humanizePercentage }}}} of its "
              f"memory limit (threshold {_pct(s.memory_limit_ratio)}): the next allocation spike gets it OOM-killed."),
    ]


def container_log_alerts(s: Settings) -> list[Alert]:
    """From the container_logs collector: logs the kubelet does not rotate."""
    key = s.by("namespace", "pod", "container")
    return [
        Alert("CriContainerLogNotRotated",
              f"max by ({key}) (cri_container_log_file_bytes{s.sel()})\n"
              f"  > on ({s.by()}) group_left ()\n"
              f"max by ({s.by()}) (cri_container_log_max_size_bytes{s.sel()} * {s.log_size_ratio:g})",
              "warning",
              "A container's log outgrows the kubelet's containerLogMaxSize.",
              f"The log of container {CONTAINER} on {ON} is {{{{ $value | humanize1024 }}}}B, more than "
              f"{s.log_size_ratio:g} times the kubelet's containerLogMaxSize, and has been for "
              f"{s.for_['CriContainerLogNotRotated']}: the kubelet's log rotation is not keeping up with it (or "
              "not running), so the file grows until the node's disk fills and the kubelet evicts pods."),
    ]


def container_fd_alerts(s: Settings) -> list[Alert]:
    """From the container_fds collector. The ratio is per process (a limit is
    a process's), the highest of the container's: a sum over processes
    against one limit would be meaningless."""
    key = s.by("namespace", "pod", "container")
    return [
        Alert("CriContainerFdsNearLimit",
              f"max by ({key}) (cri_container_file_descriptors_limit_ratio{s.sel()}) > {s.container_fds_ratio:g}",
              "warning",
              "A container's process is close to its open file limit.",
              f"A process of container {CONTAINER} on {ON} holds {{{{ $value | humanizePercentage }}}} of its open "
              f"file descriptor limit (threshold {_pct(s.container_fds_ratio)}): at the limit its open(), socket() "
              "and accept() fail with \"too many open files\"."),
    ]


def filesystem_alerts(s: Settings) -> list[Alert]:
    fs = "{{ $labels.fs }} filesystem ({{ $labels.mountpoint }})"
    return [
        Alert("CriImageFsAlmostFull",
              f"cri_imagefs_available_bytes{s.sel()} / cri_imagefs_capacity_bytes{s.sel()} < {s.imagefs_available_ratio:g}",
              "warning",
              "The runtime's image filesystem is almost full.",
              f"The runtime's {fs} on {ON} has only {{{{ $value | humanizePercentage }}}} space available "
              f"(threshold {_pct(s.imagefs_available_ratio)}): the kubelet garbage-collects images and then "
              "evicts pods, and image pulls fail once it is full."),
        Alert("CriImageFsPredictedFull",
              f"(\n  cri_imagefs_available_bytes{s.sel()} / cri_imagefs_capacity_bytes{s.sel()} "
              f"< {s.imagefs_predict_available_ratio:g}\nand\n"
              f"  predict_linear(cri_imagefs_available_bytes{s.sel()}[{s.imagefs_predict_window}], "
              f"{s.imagefs_predict_horizon_seconds}) < 0\n)",
              "warning",
              "The runtime's image filesystem is predicted to fill up.",
              f"At the rate of the last {s.imagefs_predict_window}, the runtime's {fs} on {ON} "
              f"(now {{{{ $value | humanizePercentage }}}} available) will be full within "
              f"{s.imagefs_predict_horizon_seconds // 3600}h."),
        Alert("CriImageFsInodesLow",
              f"cri_imagefs_inodes_free{s.sel()} / (cri_imagefs_inodes{s.sel()} > 0) < {s.imagefs_inodes_free_ratio:g}",
              "warning",
              "The runtime's image filesystem is running out of inodes.",
              f"The runtime's {fs} on {ON} has only {{{{ $value | humanizePercentage }}}} of its inodes free "
              f"(threshold {_pct(s.imagefs_inodes_free_ratio)}): once none are left no file can be created, "
              "whatever the free space."),
    ]


def eviction_alerts(s: Settings) -> list[Alert]:
    """The kubelet's own disk eviction thresholds, from the ephemeral_storage collector."""
    signal = s.sel('signal="nodefs.inodesFree"')
    ratio = s.nodefs_inodes_headroom_ratio
    than = "the threshold itself" if ratio == 1 else f"{ratio:g} times the threshold"
    return [
        # Bytes are watched by the pods that grow (CriPodEphemeralStorageFillingNode), imagefs inodes by
        # CriImageFsInodesLow; nodefs inodes (emptyDirs, logs: --root-dir) had nothing. A ratio of the
        # kubelet's own threshold, not a fit: free inodes move with every process of the node.
        Alert("CriNodefsInodesNearEviction",
              f"cri_eviction_headroom_inodes{signal}\n"
              f"  < on ({s.by('signal', 'path')})\n"
              f"cri_eviction_threshold_inodes{signal} * {s.nodefs_inodes_headroom_ratio:g}",
              "warning",
              "The node's kubelet filesystem is close to the kubelet's inode eviction threshold.",
              f"The kubelet's filesystem ({{{{ $labels.path }}}}: emptyDirs, pod logs) on {ON} has only "
              "{{ $value | humanize }} free inodes above the kubelet's nodefs.inodesFree eviction threshold, fewer "
              f"than {than}: once they are gone the kubelet "
              "sets DiskPressure and evicts pods, the largest inode users first, whatever the free space."),
    ]


def _growth_over_headroom(s: Settings, sources: str, signal: str, unit: str = "bytes",
                          carried: tuple[str, ...] = ()) -> str:
    """What a pod adds (`unit`: bytes or inodes) in the horizon at its recent rate,
    where that exceeds the node's headroom to `signal` (growth only: a shrinking
    pod never fires); the alert takes the headroom's `carried` labels."""
    pod = s.by("namespace", "pod")
    used = f"cri_pod_ephemeral_storage_{unit}" + s.sel('source=~"%s"' % sources)
    headroom = f"cri_eviction_headroom_{unit}" + s.sel('signal="%s"' % signal)
    return (f"  (sum by ({pod}) (deriv({used}[{s.ephemeral_growth_window}])) > 0)"
            f" * {s.ephemeral_growth_horizon_seconds}\n"
            f"  > on ({s.by()}) group_left ({', '.join(carried)})\n"
            f"  max by ({s.by(*carried)}) ({headroom})")


#: The pod's sources on each filesystem the kubelet evicts for (pkg/kubelet/eviction/helpers.go:
#: emptyDirs and logs on nodefs, writable layers on imagefs; one filesystem on most nodes).
INODE_SIGNAL_SOURCES = (("nodefs.inodesFree", "emptydir|logs"), ("imagefs.inodesFree", "writable_layer"))


def _query_value(s: Settings, expr: str, *labels: str) -> str:
    """Go template: the value of `expr` (a printf format taking `labels`' values, in order)
    at the alert's evaluation, humanized, or "?" when it has none. A raw (backquoted)
    string, so the selector's quotes need no escaping; %q quotes label values as PromQL reads them."""
    fmt = expr.replace("%", "%%").replace("%%q", "%q")
    args = " ".join(f"$labels.{label}" for label in labels)
    return f"{{{{ with printf `{fmt}` {args} | query }}}}{{{{ . | first | value | humanize }}}}{{{{ else }}}}?{{{{ end }}}}"


def _pod_inodes_description(s: Settings) -> str:
    hours = s.ephemeral_growth_horizon_seconds / 3600
    # the node's labels but those the selector already fixes (job)
    node_labels = [label for label in s.node_labels if not re.search(rf"\b{label}\s*[=!]", s.selector)]
    node = [f"{label}=%q" for label in node_labels]
    sources = ('{{ $sources := "writable_layer" }}{{ $what := "containers\' writable layers" }}'
               '{{ if eq $labels.signal "nodefs.inodesFree" }}{{ $sources = "emptydir|logs" }}'
               '{{ $what = "emptyDirs and logs" }}{{ end }}')
    used = _query_value(s, "sum(cri_pod_ephemeral_storage_inodes" + s.sel(*node, "namespace=%q", "pod=%q", "source=~%q")
                        + ")", *node_labels, "namespace", "pod", "sources").replace("$labels.sources", "$sources")
    headroom = _query_value(s, "max(cri_eviction_headroom_inodes" + s.sel(*node, "signal=%q") + ")",
                            *node_labels, "signal")
    return (sources + f"Pod {POD} on {ON} will create {{{{ $value | humanize }}}} more inodes (files, directories, "
            f"links) in the next {hours:g}h at its rate of the last {s.ephemeral_growth_window}: more than the "
            f"{headroom} free inodes the node has left above the kubelet's {{{{ $labels.signal }}}} eviction "
            f"threshold on {{{{ $labels.path }}}}. The pod holds {used} inodes there now (its {{{{ $what }}}}). "
            "Once they are gone the kubelet sets DiskPressure and evicts pods, the largest inode users first, "
            "whatever the free space.")


def pod_alerts(s: Settings) -> list[Alert]:
    w = s.rate_window
    key = s.by("namespace", "pod", "interface")
    hours = s.ephemeral_growth_horizon_seconds / 3600
    return [
        # emptyDirs and logs live on nodefs (the kubelet's --root-dir and
        # podLogsDirectory); writable layers on imagefs (the runtime's
        # root). Where both are one filesystem, both halves compare with it.
        Alert("CriPodEphemeralStorageFillingNode",
              "(\n" + _growth_over_headroom(s, "emptydir|logs", "nodefs.available") + "\n)\nor\n(\n"
              + _growth_over_headroom(s, "writable_layer", "imagefs.available") + "\n)",
              "warning",
              "A pod's ephemeral storage growth will push the node past the kubelet's eviction threshold.",
              f"Pod {POD} on {ON} will write {{{{ $value | humanize1024 }}}}B more ephemeral storage in the next "
              f"{hours:g}h at its rate of the last {s.ephemeral_growth_window}: more than the node has left above "
              "the kubelet's hard disk eviction threshold. The kubelet will then set DiskPressure and evict pods, "
              "the largest users of the filesystem first."),
        # The inode twin: many small files (caches, sessions, unpacked archives in an emptyDir) exhaust
        # nodefs.inodesFree long before a byte threshold notices. Same fit and horizon as the bytes.
        Alert("CriPodEphemeralInodesFillingNode",
              "\nor\n".join("(\n" + _growth_over_headroom(s, sources, signal, "inodes", ("signal", "path")) + "\n)"
                             for signal, sources in INODE_SIGNAL_SOURCES),
              "warning",
              "A pod's inode growth will push the node past the kubelet's inode eviction threshold.",
              _pod_inodes_description(s)),
        Alert("CriPodNetworkErrors",
              f"sum by ({key}) (\n  rate(cri_pod_network_receive_errors_total{s.sel()}[{w}])\n"
              f"  + rate(cri_pod_network_transmit_errors_total{s.sel()}[{w}])\n) > {s.network_errors_per_second:g}",
              "warning",
              "A pod's network interface reports errors.",
              f"Pod {POD} on {ON} has {{{{ $value | humanize }}}} receive and transmit errors per second on "
              f"{{{{ $labels.interface }}}} over the last {w} (threshold {s.network_errors_per_second:g}/s)."),
    ]


def exporter_alerts(s: Settings) -> list[Alert]:
    w = s.rate_window
    failed = s.sel('status="fail"')
    denied = s.sel('reason="permission_denied"')
    return [
        Alert("CriDoctorCheckFailing",
              f"max by ({s.by('check', 'area', 'severity')}) (cri_doctor_check_ok{s.sel()} == 0)\n"
              f"and on ({s.by('check')})\n"
              f"(cri_doctor_check_status{failed} == 1)",
              # The alert takes the check's own severity (the doctor uses the
              # same critical/warning/info scale), set by the series' label.
              "{{ $labels.severity }}",
              "A cri-exporter doctor check fails.",
              "Doctor check {{ $labels.check }} (area {{ $labels.area }}, severity {{ $labels.severity }}) has "
              f"failed on {ON} for {s.for_['CriDoctorCheckFailing']}. Run `cri-exporter doctor` on the node "
              "for what was seen and the fix."),
        Alert("CriCollectorFailing",
              f"1 - avg by ({s.by('collector')}) (avg_over_time(cri_scrape_collector_success{s.sel()}[{w}])) "
              f"> {s.collector_failure_ratio:g}",
              "warning",
              "A cri-exporter collector fails.",
              f"The {{{{ $labels.collector }}}} collector of cri-exporter on {ON} failed in "
              f"{{{{ $value | humanizePercentage }}}} of the scrapes over the last {w}: its series are missing "
              "from those scrapes."),
        Alert("CriCgroupsUnreadable",
              f"max by ({s.by('kind')}) (cri_cgroups_not_read{denied}) > 0",
              "warning",
              "cri-exporter is denied reading some cgroups.",
              f"cri-exporter on {ON} has been denied reading {{{{ $value }}}} {{{{ $labels.kind }}}} cgroup(s) for "
              f"{s.for_['CriCgroupsUnreadable']}: their CPU and memory come from the runtime's slower stats "
              "snapshot and their throttling, pressure, OOM and I/O series are missing."),
        Alert("CriExporterWebConfigReloadFailed",
              f"cri_exporter_web_config_last_reload_successful{s.sel()} == 0",
              "warning",
              "cri-exporter cannot read its changed web config.",
              f"cri-exporter on {ON} has failed to read its changed --web-config-file (or a certificate, key or "
              f"CA file it names) for {s.for_['CriExporterWebConfigReloadFailed']}: it still serves with the last "
              "good one, so a rotated certificate or a changed password is not in force yet."),
        # A file the confined agent may not open until it restarts (replaced after start in a directory
        # its Landlock policy splits, or named by a reloaded web config): the doctor checks reading it
        # skip, so CriDoctorCheckFailing cannot fire on what the edit got wrong (docs/install.md, Confinement).
        Alert("CriExporterRestartNeeded",
              f"max by ({s.by('reason')}) (cri_exporter_restart_needed{s.sel()}) > 0",
              "warning",
              "cri-exporter needs a restart to see files changed since it started.",
              f"cri-exporter on {ON} has for {s.for_['CriExporterRestartNeeded']} been unable to read "
              "{{ $value }} file(s) changed after it started ({{ $labels.reason }}): its confinement holds the "
              "files present at its start. doctor_check: the doctor checks reading them are skipped, so a "
              "misconfiguration in them raises no alert; web_config: the changed web config is not in force. "
              "Restart the agent (kubectl rollout restart daemonset/cri-exporter, or systemctl restart "
              "cri-exporter); its log names the files."),
        Alert("CriExporterScrapeSlow",
              f"avg_over_time(scrape_duration_seconds{s.sel()}[{w}]) > {s.scrape_duration_seconds:g}",
              "warning",
              "Scraping cri-exporter is slow.",
              f"Scrapes of cri-exporter on {ON} took {{{{ $value | humanizeDuration }}}} on average over the "
              f"last {w} (threshold {s.scrape_duration_seconds:g}s): near the scrape timeout, series go missing."),
    ]


#: Each background reader (named as its collector): the Unix time its numbers are from, its
#: configured interval, and what its last complete reading took (docs/metrics.md).
BACKGROUND_READERS: tuple[tuple[str, str, str, str], ...] = (
    ("stats", "cri_stats_snapshot_timestamp_seconds", "cri_stats_refresh_interval_seconds",
     "sum without (method) (cri_stats_refresh_duration_seconds{sel})"),
    ("runtime_processes", "cri_runtime_process_sample_timestamp_seconds",
     "cri_runtime_process_sample_interval_seconds", "cri_runtime_process_sample_duration_seconds{sel}"),
    ("container_logs", "cri_container_log_sample_timestamp_seconds",
     "cri_container_log_sample_interval_seconds", "cri_container_log_sample_duration_seconds{sel}"),
    ("container_fds", "cri_fd_sampler_last_pass_timestamp_seconds",
     "cri_fd_sampler_interval_seconds", "cri_fd_sampler_pass_duration_seconds{sel}"),
    ("ephemeral_storage", "cri_ephemeral_storage_walk_last_completed_timestamp_seconds",
     "cri_ephemeral_storage_walk_interval_seconds", "cri_ephemeral_storage_walk_last_duration_seconds{sel}"),
)


def _stale(s: Settings, collector: str, taken: str, interval: str, took: str) -> str:
    return (f"label_replace(\n"
            f"  time() - {taken}{s.sel()}\n"
            f"  > {s.stale_periods} * ({interval}{s.sel()} + {took.format(sel=s.sel())}) + {s.stale_margin_seconds},\n"
            f'  "collector", "{collector}", "", ""\n)')


def background_alerts(s: Settings) -> list[Alert]:
    """The readers off the scrape path: one stuck freezes its numbers, and the alerts on them go quiet."""
    return [
        Alert("CriBackgroundReadingStale",
              "\nor\n".join(_stale(s, *reader) for reader in BACKGROUND_READERS),
              "warning",
              "A cri-exporter background reader has stopped updating its numbers.",
              f"The {{{{ $labels.collector }}}} reader of cri-exporter on {ON} last finished a reading "
              f"{{{{ $value | humanizeDuration }}}} ago, more than {s.stale_periods} of its periods (interval plus "
              "its last duration): its series are frozen at old values and the alerts and panels built on them "
              "cannot see what happens now."),
    ]


def groups(s: Settings = PRODUCTION) -> list[dict]:
    """The rule groups, as in a Prometheus rule file."""
    return [
        {"name": name, "rules": [a.rule(s) for a in build(s)]}
        for name, build in (
            ("cri-exporter.runtime", runtime_alerts),
            ("cri-exporter.runtime-processes", runtime_process_alerts),
            ("cri-exporter.containers", container_alerts),
            ("cri-exporter.container-logs", container_log_alerts),
            ("cri-exporter.container-fds", container_fd_alerts),
            ("cri-exporter.filesystems", filesystem_alerts),
            ("cri-exporter.pods", pod_alerts),
            ("cri-exporter.eviction", eviction_alerts),
            ("cri-exporter.exporter", exporter_alerts),
            ("cri-exporter.background", background_alerts),
        )
    ]


def alert_names(s: Settings = PRODUCTION) -> list[str]:
    return [r["alert"] for g in groups(s) for r in g["rules"]]
