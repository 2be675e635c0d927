"""Node overview: is the runtime healthy, what does it hold, what does it use,
and is the exporter itself keeping up. One exporter instance = one node."""
from __future__ import annotations

from dashboards.common import (NODE, PASS_FAIL, TCP_GAP, TRUE_FALSE, UP_DOWN, Board, bars, graph, query,
                               single)

UID = "cri-node-overview"


def build() -> dict:
    b = Board(UID, "CRI / Node overview",
              "One node as its container runtime sees it: runtime health, containers and pods, "
              "CPU and memory by namespace, image and container filesystems, ephemeral storage and the "
              "kubelet's eviction headroom, the pods' TCP connections, doctor findings and "
              "the exporter's own scrapes. Data: cri-exporter.")
    b.row(
        "Runtime",
        single("Runtime up", "cri_up: 1 when the container runtime answered CRI (Version, or Status once its version is known) in the exporter's last scrape.",
               "none", query(f"cri_up{{{NODE}}}", instant=True), w=4, mapping=UP_DOWN),
        single("Runtime version", "The runtime's name and version from CRI Version (cri_runtime_info).", "none",
               query(f"cri_runtime_info{{{NODE}}}", "{{runtime_name}} {{runtime_version}} (CRI {{runtime_api_version}})",
                     instant=True), w=8, text_mode="name"),
        single("Runtime conditions", "Each condition CRI Status reports (RuntimeReady, NetworkReady): green when true. "
               "A false condition means the kubelet will not start pods here (see the reason label).",
               "none", query(f"cri_runtime_condition{{{NODE}}}", "{{condition}}", instant=True), w=6,
               mapping=TRUE_FALSE, text_mode="value_and_name"),
        single("Cgroups", "The node's cgroup version and the cgroup driver in use (cri_node_cgroup_info).", "none",
               query(f"cri_node_cgroup_info{{{NODE}}}", "cgroup {{version}} / {{driver}}", instant=True), w=6,
               text_mode="name"),
    )
    b.row(
        "Containers and pods",
        graph("Containers by state", "Container instances the runtime holds, by state (old attempts included). "
              "A growing 'exited' count is garbage the kubelet has not collected yet.", "short",
              query(f"sum by (state) (cri_containers{{{NODE}}})", "{{state}}"), w=8, stack=True),
        graph("Pods by state", "Pod sandboxes the runtime holds, by state (ready / notready).", "short",
              query(f"sum by (state) (cri_pods{{{NODE}}})", "{{state}}"), w=8, stack=True),
        bars("Container restarts (top 10)", "Restarts of each container (the attempt number of its current "
             "instance); the ten highest.", "short",
             query(f"topk(10, cri_container_restarts{{{NODE}}} > 0)", "{{namespace}}/{{pod}}/{{container}}",
                   instant=True), w=8),
    )
    b.row(
        "CPU and memory by namespace",
        graph("CPU by namespace", "CPU cores used by the pods of each namespace (rate of cri_pod_cpu_usage_seconds_total).",
              "short", query(f"sum by (namespace) (rate(cri_pod_cpu_usage_seconds_total{{{NODE}}}[$__rate_interval]))",
                             "{{namespace}}"), w=8, stack=True, min_=0),
        graph("Memory working set by namespace", "Memory working set of the pods of each namespace: what the "
              "kubelet evicts on (the kernel's OOM killer ranks by RSS, swap and page tables plus oom_score_adj).", "bytes",
              query(f"sum by (namespace) (cri_pod_memory_working_set_bytes{{{NODE}}})", "{{namespace}}"),
              w=8, stack=True, min_=0),
        graph("CPU throttling by namespace", "Share of CFS periods in which containers of the namespace were throttled "
              "by their CPU limit. High values mean latency: raise the limit or remove it.", "percentunit",
              query(f"sum by (namespace) (rate(cri_container_cpu_cfs_throttled_periods_total{{{NODE}}}[$__rate_interval]))"
                    f" / sum by (namespace) (rate(cri_container_cpu_cfs_periods_total{{{NODE}}}[$__rate_interval]))",
                    "{{namespace}}"), w=8, min_=0, max_=1),
    )
    b.row(
        "Image and container filesystems",
        graph("Filesystem space", "Each runtime filesystem (fs=image, and fs=container where the runtime splits them): "
              "bytes the runtime uses on it (ImageFsInfo), the filesystem's size, and its space used by everyone.",
              "bytes",
              query(f"cri_imagefs_used_bytes{{{NODE}}}", "{{fs}}: used by the runtime"),
              query(f"cri_imagefs_capacity_bytes{{{NODE}}} - cri_imagefs_available_bytes{{{NODE}}}",
                    "{{fs}}: used on the filesystem"),
              query(f"cri_imagefs_capacity_bytes{{{NODE}}}", "{{fs}}: capacity"), w=8, min_=0),
        bars("Filesystem full", "Share of each runtime filesystem that is used (1 - available / capacity) and of its "
             "inodes. The kubelet garbage-collects images from 85% and evicts pods near 90%.", "percentunit",
             query(f"1 - cri_imagefs_available_bytes{{{NODE}}} / cri_imagefs_capacity_bytes{{{NODE}}}",
                   "{{fs}} space", instant=True),
             query(f"1 - cri_imagefs_inodes_free{{{NODE}}} / (cri_imagefs_inodes{{{NODE}}} > 0)",
                   "{{fs}} inodes", instant=True), w=8, min_=0, max_=1),
        graph("Filesystem inodes", "Inodes the runtime uses (ImageFsInfo), inodes used on the filesystem, and its total.",
              "short",
              query(f"cri_imagefs_inodes_used{{{NODE}}}", "{{fs}}: used by the runtime"),
              query(f"cri_imagefs_inodes{{{NODE}}} - cri_imagefs_inodes_free{{{NODE}}}", "{{fs}}: used on the filesystem"),
              query(f"cri_imagefs_inodes{{{NODE}}}", "{{fs}}: total"), w=8, min_=0),
        graph("Images", "Images in the runtime's store and their total size as ListImages reports them.", "bytes",
              query(f"cri_images_size_bytes{{{NODE}}}", "images size"), w=8, min_=0),
        single("Image count", "Images in the store, and how many are pinned (never garbage-collected).", "short",
               query(f"cri_images{{{NODE}}}", "images", instant=True),
               query(f"cri_images_pinned{{{NODE}}}", "pinned", instant=True), w=4, h=8, text_mode="value_and_name"),
        bars("Container writable layers (top 10)", "Bytes in each container's writable layer (its share of the "
             "container filesystem); a container writing logs or caches into its layer grows here.", "bytes",
             query(f"topk(10, cri_container_writable_layer_bytes{{{NODE}}})", "{{namespace}}/{{pod}}/{{container}}",
                   instant=True), w=12, h=8),
    )
    b.row(
        "Ephemeral storage and eviction",
        graph("Headroom to disk eviction", "Available space and inodes above the kubelet's hard eviction thresholds "
              "(its effective evictionHard, defaults merged) on nodefs (--root-dir: emptyDirs, logs) and imagefs "
              "(the runtime's: images, writable layers). At 0 the kubelet sets DiskPressure and evicts pods.",
              "bytes", query(f"cri_eviction_headroom_bytes{{{NODE}}}", "{{signal}} ({{path}})"), w=12, min_=0),
        bars("Pods by ephemeral storage (top 10)", "What the kubelet counts against each pod: writable layers, "
             "disk-backed emptyDirs and logs; the first it evicts under disk pressure.", "bytes",
             query(f"topk(10, sum by (namespace, pod) (cri_pod_ephemeral_storage_bytes{{{NODE}}}))",
                   "{{namespace}}/{{pod}}", instant=True), w=12, h=8),
        graph("Inode headroom to disk eviction", "Free inodes above the kubelet's hard eviction thresholds "
              "(nodefs.inodesFree, imagefs.inodesFree; 5% by default). At 0 the kubelet sets DiskPressure and evicts "
              "pods, whatever the free space: many small files (caches, sessions, mail queues) run out of inodes "
              "first (CriNodefsInodesNearEviction: nodefs headroom under its threshold).", "short",
              query(f"cri_eviction_headroom_inodes{{{NODE}}}", "{{signal}} ({{path}})"),
              query(f"cri_eviction_threshold_inodes{{{NODE}}}", "{{signal}} threshold"), w=12, min_=0),
        bars("Pods by ephemeral inodes (top 10)", "Inodes of each pod's writable layers, disk-backed emptyDirs and "
             "logs: the pods the kubelet evicts first when it is short of inodes.", "short",
             query(f"topk(10, sum by (namespace, pod) (cri_pod_ephemeral_storage_inodes{{{NODE}}}))",
                   "{{namespace}}/{{pod}}", instant=True), w=12, h=8),
    )
    b.row(
        "Pod TCP connections",
        graph("TCP connections by state", "TCP sockets in the pods' network namespaces on this node, summed by "
              "state (hostNetwork pods' are the node's and not counted). A rising CLOSE_WAIT is connections an "
              "application does not close; SYN_RECV, backlogs not drained.", "short",
              query(f"sum by (state) (cri_pod_tcp_connections{{{NODE}}})", "{{state}}"), w=12, min_=0, gap=TCP_GAP),
        bars("Pods by TCP connections (top 10)", "TCP sockets of each pod other than its listening ones; the pod "
             "detail board shows them by state.", "short",
             query(f"topk(10, sum by (namespace, pod) (cri_pod_tcp_connections{{{NODE}, state!=\"LISTEN\"}}))",
                   "{{namespace}}/{{pod}}", instant=True), w=12, h=8, gap=TCP_GAP),
    )
    b.row(
        "Doctor",
        single("Doctor findings by severity", "Doctor checks that warn or fail, by the check's severity "
               "(0 everywhere is a healthy node). Run `cri-exporter doctor` on the node for the details.", "short",
               query(f"sum by (severity) (1 - cri_doctor_check_ok{{{NODE}}})", "{{severity}}", instant=True), w=8,
               text_mode="value_and_name", thresholds=[(None, "green"), (1, "orange")]),
        single("Failing doctor checks", "Each check that warns or fails now, with its area and severity.", "none",
               query(f"cri_doctor_check_ok{{{NODE}}} == 0", "{{severity}}: {{check}} ({{area}})", instant=True),
               w=10, mapping=PASS_FAIL, text_mode="name"),
        single("Last doctor run", "Time since the serve-mode doctor last ran (runs every --doctor-interval).", "s",
               query(f"time() - cri_doctor_last_run_timestamp_seconds{{{NODE}}}", "ago", instant=True), w=6),
    )
    b.row(
        "Exporter",
        graph("Collector success", "1 when the collector's source answered in the scrape; 0 blanks that "
              "collector's series (the others still report).", "none",
              query(f"cri_scrape_collector_success{{{NODE}}}", "{{collector}}"), w=8, min_=0, max_=1),
        graph("Scrape duration", "Time each collector took in the scrape, and the whole scrape as Prometheus timed it.",
              "s",
              query(f"cri_scrape_collector_duration_seconds{{{NODE}}}", "{{collector}}"),
              query(f"scrape_duration_seconds{{{NODE}}}", "scrape (Prometheus)"), w=8, min_=0),
        graph("Exporter up", "Prometheus's `up` for the exporter target: 0 means the scrape itself failed (exporter down or unreachable).", "none",
              query(f"up{{{NODE}}}", "up"), w=8, min_=0, max_=1),
    )
    return b.build()
