"""Pod / container detail: one pod's containers against their limits, from
the CRI stats and the cgroup files."""
from __future__ import annotations

from dashboards.common import LAYER_INODE_GAP, NODE, TCP_GAP, Board, graph, query, single

UID = "cri-pod-detail"

POD = NODE + ', namespace="$namespace", pod="$pod"'
CONTAINER = POD + ', container=~"$container"'
BY = "sum by (container)"



def rate(metric: str, sel: str = CONTAINER) -> str:
    return f"rate({metric}{{{sel}}}[$__rate_interval])"


def build() -> dict:
    b = Board(UID, "CRI / Pod and container detail",
              "One pod's containers: CPU against the quota and throttling, memory against the limit, "
              "open files and sockets against the fd limit, TCP connection states, "
              "OOM kills, pressure stalls, network, block I/O, writable layer, logs and restarts. Data: cri-exporter.",
              extra_variables=[
                  ("namespace", "Namespace", f'label_values(cri_pod_info{{{NODE}}}, namespace)'),
                  ("pod", "Pod", f'label_values(cri_pod_info{{{NODE}, namespace="$namespace"}}, pod)'),
                  ("container", "Container", f'label_values(cri_container_info{{{POD}}}, container)', True),
              ])
    b.row(
        "State",
        single("Container state", "The current state of each container.", "none",
               query(f"cri_container_state{{{CONTAINER}}} == 1", "{{container}}: {{state}}", instant=True),
               w=8, text_mode="name"),
        single("Restarts", "Restarts of each container: the attempt number of its current instance.", "short",
               query(f"cri_container_restarts{{{CONTAINER}}}", "{{container}}", instant=True), w=8,
               text_mode="value_and_name", thresholds=[(None, "green"), (1, "orange"), (5, "red")]),
        single("Last termination", "Why each container's latest exited instance ended (OOMKilled, Error, Completed), "
               "with its exit code.", "none",
               query(f"cri_container_last_terminated_exit_code{{{CONTAINER}}} * on (namespace, pod, container) "
                     f"group_left (reason) cri_container_last_terminated_reason{{{CONTAINER}}}",
                     "{{container}}: {{reason}}", instant=True), w=8, text_mode="value_and_name"),
    )
    b.row(
        "Terminations",
        graph("Terminations by reason", "Container instances that ended in each interval, by the runtime's reason "
              "and exit code: every one counted once, even several between two scrapes (OOMKilled, Error, Completed, "
              "ContainerCannotRun...; Unknown: removed before its status could be read). A rising count is a crash "
              "loop. containerd 2.1.9 may report an OOM kill as Error/137: compare the pod's OOM kills.", "short",
              query(f"sum by (container, reason, exit_code) "
                    f"(increase(cri_container_terminations_total{{{CONTAINER}}}[$__rate_interval]))",
                    "{{container}}: {{reason}} ({{exit_code}})"),
              query(f"sum (increase(cri_pod_memory_oom_kills_total{{{POD}}}[$__rate_interval]))",
                    "pod OOM kills (cgroup v2)"), w=24, min_=0, bars=True),
    )
    b.row(
        "CPU",
        graph("CPU usage and limit", "CPU cores each container uses, and its limit (CFS quota / period) where set.",
              "short",
              query(f"{BY} ({rate('cri_container_cpu_usage_seconds_total')})", "{{container}} usage"),
              query(f"{BY} (cri_container_spec_cpu_quota_seconds{{{CONTAINER}}} / "
                    f"cri_container_spec_cpu_period_seconds{{{CONTAINER}}})", "{{container}} limit"), w=6, min_=0),
        graph("CPU user and system", "CPU cores each container spends in user mode and in the kernel on its behalf "
              "(cpu.stat on cgroup v2, cpuacct.stat in 10 ms ticks on v1): a high system share is syscalls, page "
              "faults or network work.", "short",
              query(f"{BY} ({rate('cri_container_cpu_user_seconds_total')})", "{{container}} user"),
              query(f"{BY} ({rate('cri_container_cpu_system_seconds_total')})", "{{container}} system"), w=6, min_=0),
        graph("CPU throttling ratio", "Share of CFS periods in which the container was throttled by its quota. "
              "Above 25% the workload waits for CPU it is not allowed to use.", "percentunit",
              query(f"{BY} ({rate('cri_container_cpu_cfs_throttled_periods_total')}) / "
                    f"{BY} ({rate('cri_container_cpu_cfs_periods_total')})", "{{container}}"), w=6, min_=0, max_=1),
        graph("Throttled time", "Seconds per second the container's tasks spent throttled.", "percentunit",
              query(f"{BY} ({rate('cri_container_cpu_cfs_throttled_seconds_total')})", "{{container}}"), w=6, min_=0),
    )
    b.row(
        "Memory",
        graph("Working set and limit", "Memory working set (usage minus inactive file cache: what the kubelet evicts "
              "on; the kernel's OOM killer ranks by RSS, swap and page tables plus oom_score_adj), total usage, "
              "its peak since the container started and the memory limit where set.", "bytes",
              query(f"{BY} (cri_container_memory_working_set_bytes{{{CONTAINER}}})", "{{container}} working set"),
              query(f"{BY} (cri_container_memory_usage_bytes{{{CONTAINER}}})", "{{container}} usage"),
              query(f"{BY} (cri_container_memory_max_usage_bytes{{{CONTAINER}}})", "{{container}} peak"),
              query(f"{BY} (cri_container_spec_memory_limit_bytes{{{CONTAINER}}})", "{{container}} limit"), w=8, min_=0),
        graph("RSS, cache and swap", "Anonymous memory (RSS), page cache, mapped files and swap of each container.",
              "bytes",
              query(f"{BY} (cri_container_memory_rss_bytes{{{CONTAINER}}})", "{{container}} rss"),
              query(f"{BY} (cri_container_memory_cache_bytes{{{CONTAINER}}})", "{{container}} cache"),
              query(f"{BY} (cri_container_memory_mapped_file_bytes{{{CONTAINER}}})", "{{container}} mapped file"),
              query(f"{BY} (cri_container_memory_swap_bytes{{{CONTAINER}}})", "{{container}} swap"), w=8, min_=0),
        graph("Page faults", "Page faults per second; major faults went to disk.", "ops",
              query(f"{BY} ({rate('cri_container_memory_page_faults_total')})", "{{container}} faults"),
              query(f"{BY} ({rate('cri_container_memory_major_page_faults_total')})", "{{container}} major"),
              w=8, min_=0),
        graph("OOM kills", "Processes the OOM killer killed in the container's cgroup, per interval (the container may "
              "live on when a child is killed), and cgroup v1 limit hits (failcnt).", "short",
              query(f"{BY} (increase(cri_container_memory_oom_kills_total{{{CONTAINER}}}[$__rate_interval]))",
                    "{{container}} OOM kills"),
              query(f"{BY} (increase(cri_container_memory_failcnt_total{{{CONTAINER}}}[$__rate_interval]))",
                    "{{container}} limit hits"), w=12, min_=0, bars=True),
        graph("Processes", "Tasks (processes and threads) in each container's cgroup.", "short",
              query(f"{BY} (cri_container_pids{{{CONTAINER}}})", "{{container}}"), w=12, min_=0),
    )
    b.row(
        "Pressure stall (PSI)",
        graph("Pressure: some", "Share of time at least one task of the container was stalled waiting for CPU, memory "
              "or I/O (PSI 'some'; cgroup v2, or the unified tree of a hybrid v1 node).", "percentunit",
              query(f"{BY} ({rate('cri_container_pressure_cpu_some_seconds_total')})", "{{container}} cpu"),
              query(f"{BY} ({rate('cri_container_pressure_memory_some_seconds_total')})", "{{container}} memory"),
              query(f"{BY} ({rate('cri_container_pressure_io_some_seconds_total')})", "{{container}} io"),
              w=12, min_=0),
        graph("Pressure: full", "Share of time all non-idle tasks of the container were stalled (PSI 'full'): "
              "lost wall-clock time.", "percentunit",
              query(f"{BY} ({rate('cri_container_pressure_cpu_full_seconds_total')})", "{{container}} cpu"),
              query(f"{BY} ({rate('cri_container_pressure_memory_full_seconds_total')})", "{{container}} memory"),
              query(f"{BY} ({rate('cri_container_pressure_io_full_seconds_total')})", "{{container}} io"),
              w=12, min_=0),
    )
    b.row(
        "Files, sockets and TCP",
        graph("Open files and sockets", "File descriptors each container's processes hold open, summed, and of "
              "them sockets (read every --fd-sample-interval off the scrape path, so up to a few intervals old).",
              "short",
              query(f"{BY} (cri_container_file_descriptors{{{CONTAINER}}})", "{{container}} fds"),
              query(f"{BY} (cri_container_sockets{{{CONTAINER}}})", "{{container}} sockets"), w=8, min_=0),
        graph("Open file limit used", "The highest share of its soft open-file limit (RLIMIT_NOFILE) one process "
              "of each container holds: at 100% its open(), socket() and accept() fail with EMFILE.", "percentunit",
              query(f"max by (container) (cri_container_file_descriptors_limit_ratio{{{CONTAINER}}})", "{{container}}"),
              w=8, min_=0, max_=1),
        graph("TCP connections by state", "TCP sockets in the pod's network namespace (all its containers), IPv4 "
              "and IPv6, by state (/proc/<pid>/net/tcp and tcp6, read every --fd-sample-interval). A CLOSE_WAIT "
              "count that only grows is connections the application never closes (it ends at the fd limit); many "
              "SYN_RECV, a listen backlog not drained or a SYN flood; TIME_WAIT follows connections this side "
              "closed. hostNetwork pods have none (their namespace is the node's), nor pods past 4 MiB of tcp "
              "file (some 23,000 sockets).", "short",
              query(f"sum by (state) (cri_pod_tcp_connections{{{POD}}})", "{{state}}"), w=8, min_=0, gap=TCP_GAP),
    )
    b.row(
        "Network (pod)",
        graph("Network traffic", "Bytes per second the pod received and transmitted, per interface.", "Bps",
              query(f"sum by (interface) ({rate('cri_pod_network_receive_bytes_total', POD)})", "{{interface}} receive"),
              query(f"sum by (interface) ({rate('cri_pod_network_transmit_bytes_total', POD)})",
                    "{{interface}} transmit"), w=8),
        graph("Network packets", "Packets per second the pod received and transmitted, per interface (read live "
              "from the pod's network namespace; CRI's stats have none).", "pps",
              query(f"sum by (interface) ({rate('cri_pod_network_receive_packets_total', POD)})", "{{interface}} receive"),
              query(f"sum by (interface) ({rate('cri_pod_network_transmit_packets_total', POD)})",
                    "{{interface}} transmit"), w=8, min_=0),
        graph("Network errors and drops", "Receive and transmit errors and dropped packets per second on the pod's "
              "interfaces.", "short",
              query(f"sum by (interface) ({rate('cri_pod_network_receive_errors_total', POD)})", "{{interface}} receive errors"),
              query(f"sum by (interface) ({rate('cri_pod_network_transmit_errors_total', POD)})",
                    "{{interface}} transmit errors"),
              query(f"sum by (interface) ({rate('cri_pod_network_receive_packets_dropped_total', POD)})",
                    "{{interface}} receive drops"),
              query(f"sum by (interface) ({rate('cri_pod_network_transmit_packets_dropped_total', POD)})",
                    "{{interface}} transmit drops"), w=8, min_=0),
    )
    b.row(
        "Block I/O and writable layer",
        graph("Block I/O throughput", "Bytes per second each container read from and wrote to block devices "
              "(page-cache hits and writes not yet flushed do not count).", "Bps",
              query(f"{BY} ({rate('cri_container_blkio_read_bytes_total')})", "{{container}} read"),
              query(f"{BY} ({rate('cri_container_blkio_write_bytes_total')})", "{{container}} write"), w=8, min_=0),
        graph("Block I/O operations", "Read and write operations per second issued to block devices.", "iops",
              query(f"{BY} ({rate('cri_container_blkio_read_operations_total')})", "{{container}} read"),
              query(f"{BY} ({rate('cri_container_blkio_write_operations_total')})", "{{container}} write"),
              w=8, min_=0),
        graph("Writable layer", "Bytes in each container's writable layer (files it wrote outside volumes).", "bytes",
              query(f"{BY} (cri_container_writable_layer_bytes{{{CONTAINER}}})", "{{container}}"), w=8, min_=0),
    )
    b.row(
        "Logs",
        graph("Log file and containerLogMaxSize", "Size of the log file each container writes now, against the "
              "kubelet's containerLogMaxSize: the kubelet rotates a log once it reaches the limit (checking every "
              "10 s), so a line well above it is a log the rotation does not keep up with "
              "(CriContainerLogNotRotated). Stat'ed every --container-log-interval.", "bytes",
              query(f"{BY} (cri_container_log_file_bytes{{{CONTAINER}}})", "{{container}} live log"),
              query(f"max (cri_container_log_max_size_bytes{{{NODE}}})", "containerLogMaxSize"), w=8, min_=0),
        graph("Log on disk", "Bytes of each container's log with its rotated and compressed files.", "bytes",
              query(f"{BY} (cri_container_log_bytes{{{CONTAINER}}})", "{{container}}"), w=8, min_=0),
        graph("Rotated log files", "Rotated files the kubelet keeps beside each container's log, against its "
              "limit (containerLogMaxFiles - 1).", "short",
              query(f"{BY} (cri_container_log_rotated_files{{{CONTAINER}}})", "{{container}}"),
              query(f"max (cri_container_log_max_files{{{NODE}}}) - 1", "limit"), w=8, min_=0),
    )
    b.row(
        "Ephemeral storage (pod)",
        graph("Ephemeral storage", "What the kubelet counts against the pod's ephemeral-storage limit and in its "
              "disk-pressure evictions: writable layers, disk-backed emptyDirs and logs (allocated blocks, as du "
              "counts them; emptyDirs and logs walked every --ephemeral-storage-interval), against the node's "
              "headroom to the kubelet's eviction threshold on the filesystem each lives on.", "bytes",
              query(f"sum by (source) (cri_pod_ephemeral_storage_bytes{{{POD}}})", "{{source}}"),
              query(f"max(cri_eviction_headroom_bytes{{{NODE}, signal=\"nodefs.available\"}})",
                    "node headroom: nodefs (emptyDirs, logs)"),
              query(f"max(cri_eviction_headroom_bytes{{{NODE}, signal=\"imagefs.available\"}})",
                    "node headroom: imagefs (writable layers)"), w=12, min_=0),
        graph("emptyDir volumes", "Bytes of each disk-backed emptyDir of the pod (memory-backed ones are memory).",
              "bytes", query(f"sum by (volume) (cri_pod_emptydir_bytes{{{POD}}})", "{{volume}}"), w=12, min_=0),
        graph("Ephemeral storage inodes", "Inodes of the same sources (one per file, directory or link; a hard-linked "
              "file once): the kubelet evicts on inodes as on bytes (nodefs.inodesFree, imagefs.inodesFree), ranking "
              "pods by their inodes then. Against the node's free inodes above those thresholds on the filesystem "
              "each lives on: a pod whose growth would take them within 4h fires CriPodEphemeralInodesFillingNode.",
              "short",
              query(f"sum by (source) (cri_pod_ephemeral_storage_inodes{{{POD}}})", "{{source}}"),
              query(f"max(cri_eviction_headroom_inodes{{{NODE}, signal=\"nodefs.inodesFree\"}})",
                    "node headroom: nodefs (emptyDirs, logs)"),
              query(f"max(cri_eviction_headroom_inodes{{{NODE}, signal=\"imagefs.inodesFree\"}})",
                    "node headroom: imagefs (writable layers)"), w=12, min_=0),
        graph("Inodes by emptyDir and writable layer", "Inodes of each disk-backed emptyDir of the pod and of each "
              "container's writable layer: which one makes the pod's files.", "short",
              query(f"sum by (volume) (cri_pod_emptydir_inodes{{{POD}}})", "emptyDir {{volume}}"),
              query(f"{BY} (cri_container_writable_layer_inodes{{{CONTAINER}}})", "{{container}} writable layer"),
              w=12, min_=0, gap=LAYER_INODE_GAP),
    )
    return b.build()
