"""Runtime health: how the CRI runtime answers the exporter, which collectors
fail, and the doctor's checks over time."""
from __future__ import annotations

from dashboards.common import NODE, PASS_FAIL, SAMPLER_GAP, Board, graph, query, states

# Each background reader: legend, its clock, its interval, its last duration (as CriBackgroundReadingStale).
READERS = (
    ("stats refresh", "cri_stats_snapshot_timestamp_seconds", "cri_stats_refresh_interval_seconds",
     f"sum without (method) (cri_stats_refresh_duration_seconds{{{NODE}}})"),
    ("runtime process walk", "cri_runtime_process_sample_timestamp_seconds",
     "cri_runtime_process_sample_interval_seconds", f"cri_runtime_process_sample_duration_seconds{{{NODE}}}"),
    ("container logs", "cri_container_log_sample_timestamp_seconds", "cri_container_log_sample_interval_seconds",
     f"cri_container_log_sample_duration_seconds{{{NODE}}}"),
    ("open files and TCP", "cri_fd_sampler_last_pass_timestamp_seconds", "cri_fd_sampler_interval_seconds",
     f"cri_fd_sampler_pass_duration_seconds{{{NODE}}}"),
    ("ephemeral storage walk", "cri_ephemeral_storage_walk_last_completed_timestamp_seconds",
     "cri_ephemeral_storage_walk_interval_seconds", f"cri_ephemeral_storage_walk_last_duration_seconds{{{NODE}}}"),
)

UID = "cri-runtime-health"


def build() -> dict:
    b = Board(UID, "CRI / Runtime health",
              "How the container runtime answers: CRI request latency, rate and errors, its own processes "
              "(memory, CPU, open files, restarts, shims), the background stats refresh and samplers, the "
              "termination event stream, collector failures, and the doctor's checks over time. Data: cri-exporter.")
    b.row(
        "CRI requests",
        graph("CRI request latency p99", "99th percentile latency of the CRI calls the exporter made, by method. "
              "Slow ListContainerStats or ImageFsInfo usually means a busy or stuck runtime or disk.", "s",
              query("histogram_quantile(0.99, sum by (method, le) "
                    f"(rate(cri_request_duration_seconds_bucket{{{NODE}}}[$__rate_interval])))", "{{method}}"),
              w=8, min_=0),
        graph("CRI request latency p50", "Median latency of the CRI calls the exporter made, by method.", "s",
              query("histogram_quantile(0.5, sum by (method, le) "
                    f"(rate(cri_request_duration_seconds_bucket{{{NODE}}}[$__rate_interval])))", "{{method}}"),
              w=8, min_=0),
        graph("CRI requests", "CRI calls per second the exporter made, by method.", "reqps",
              query(f"sum by (method) (rate(cri_request_duration_seconds_count{{{NODE}}}[$__rate_interval]))",
                    "{{method}}"), w=8, min_=0),
        graph("CRI request errors", "Failed CRI calls per second, by method and gRPC code "
              "(DeadlineExceeded: the runtime is slow; Unavailable: it is down).", "reqps",
              query(f"sum by (method, code) (rate(cri_request_errors_total{{{NODE}}}[$__rate_interval]))",
                    "{{method}} {{code}}"), w=12, min_=0),
        graph("Runtime up", "cri_up: whether the runtime answered CRI (Version, or Status once its version is known) in each scrape.", "none",
              query(f"cri_up{{{NODE}}}", "runtime up"), w=12, min_=0, max_=1),
    )
    b.row(
        "Runtime processes",
        graph("Runtime memory", "Resident memory of the runtime daemon and of each shim binary's processes together "
              "(cri_runtime_process_resident_memory_bytes).", "bytes",
              query(f"cri_runtime_process_resident_memory_bytes{{{NODE}}}", "{{process}}"), w=8, min_=0),
        graph("Runtime CPU", "CPU cores used by the runtime daemon and by each shim binary's processes together.",
              "short",
              query(f"rate(cri_runtime_process_cpu_seconds_total{{{NODE}}}[$__rate_interval])", "{{process}}"),
              w=8, min_=0),
        graph("Runtime open files", "The daemon's open file descriptors against its soft limit "
              "(CriRuntimeFdsNearLimit fires above 80%).", "percentunit",
              query(f"cri_runtime_process_open_fds{{{NODE}}} / (cri_runtime_process_max_fds{{{NODE}}} > 0)",
                    "{{process}}"), w=8, min_=0, max_=1),
        graph("Runtime restarts", "Restarts of the runtime daemon: changes of its start time (CriRuntimeRestarted).",
              "short",
              query(f"changes(cri_runtime_process_start_time_seconds{{{NODE}}}[$__rate_interval])", "{{process}}"),
              w=8, min_=0),
        graph("Shims, leaked shims and zombies", "Shim processes by binary, those serving a pod or container the "
              "runtime no longer knows (CriRuntimeShimsLeaked), and zombie processes under the shims.", "short",
              query(f"cri_runtime_shims{{{NODE}}}", "{{process}} shims"),
              query(f"cri_runtime_shims_leaked{{{NODE}}}", "{{process}} leaked"),
              query(f"cri_runtime_zombie_processes{{{NODE}}}", "{{process}} zombies"), w=8, min_=0),
        graph("Runtime threads", "Threads of the runtime daemon and of each shim binary's processes together.",
              "short", query(f"cri_runtime_process_threads{{{NODE}}}", "{{process}}"), w=8, min_=0),
        graph("Runtime process walk", "Age of the numbers above (the /proc walk runs every "
              "--runtime-process-interval, off the scrape path) and what the last walk took; it grows with the "
              "processes it reads (cri_runtime_process_sample_processes). An age that keeps growing is a walk "
              "that no longer runs: the panels above and the runtime alerts see old data.", "s",
              query(f"time() - cri_runtime_process_sample_timestamp_seconds{{{NODE}}}", "age"),
              query(f"cri_runtime_process_sample_duration_seconds{{{NODE}}}", "last walk took"), w=24, h=6, min_=0),
    )
    b.row(
        "Collectors and stats refresh",
        states("Collector success", "Each collector's success per scrape: red stretches are scrapes where that source "
               "failed and its series were missing.", "none",
               query(f"cri_scrape_collector_success{{{NODE}}}", "{{collector}}"), w=12,
               mapping={"1": ("ok", "green"), "0": ("failed", "red")}),
        graph("Collector failure ratio", "Share of the scrapes in each interval in which the collector failed "
              "(what the CriCollectorFailing alert watches).", "percentunit",
              query(f"1 - avg_over_time(cri_scrape_collector_success{{{NODE}}}[$__rate_interval])", "{{collector}}"),
              w=12, min_=0, max_=1),
        graph("Stats refresh failures", "Failed CRI stats calls per second in the background refresh, by method. "
              "ListPodSandboxStats failing falls back to one PodSandboxStats call per pod.", "reqps",
              query(f"sum by (method) (rate(cri_stats_refresh_failures_total{{{NODE}}}[$__rate_interval]))",
                    "{{method}}"), w=8, min_=0),
        graph("Stats refresh duration", "Time each stats call took in the latest background refresh.", "s",
              query(f"cri_stats_refresh_duration_seconds{{{NODE}}}", "{{method}}"), w=8, min_=0),
        graph("Stats snapshot age", "Age of the CRI stats snapshot container and pod stats come from; it should stay "
              "near --stats-interval.", "s",
              query(f"cri_stats_snapshot_age_seconds{{{NODE}}}", "age"), w=8, min_=0),
    )
    b.row(
        "Runtime state against the node",
        graph("Containers running without a cgroup", "Containers the runtime lists running whose cgroup, and so "
              "every process, is gone: an exit the runtime could not record (its state directory not writable: a "
              "full or read-only disk). The kubelet believes the runtime and does not restart them. Each line is "
              "how long one has been so (seen in two readings at least 30 s apart); CriContainerRunningWithoutCgroup "
              "fires after 5 minutes. Seen on every containerd version, where the pod stats below show it on "
              "1.6 and 1.7 only.", "s",
              query(f"time() - cri_container_running_without_cgroup_since_time_seconds{{{NODE}}}",
                    "{{namespace}}/{{pod}}/{{container}}"), w=12, min_=0),
        graph("Pod sandboxes without stats", "Ready pod sandboxes whose stats the runtime could not give in the "
              "latest background refresh, by reason (cri_stats_pod_sandboxes_unavailable): task_gone, a container "
              "of the pod exited and its task is gone while the runtime still lists it running (under a second "
              "after an exit on containerd 1.6/1.7; lasting, it is the unrecorded exit on the left: "
              "CriPodStatsUnavailable); sandbox_gone, stopped or removed since it was listed.", "short",
              query(f"sum by (reason) (cri_stats_pod_sandboxes_unavailable{{{NODE}}})", "{{reason}}"),
              w=12, min_=0),
    )
    b.row(
        "Background samplers",
        graph("Background readings, in periods", "How far behind each reader off the scrape path is, in its "
              "periods: the age of its numbers over its configured interval (the *_interval_seconds families, "
              "from its flag) plus what its last reading took. A reader that runs stays under 1 to 2; one that "
              "keeps climbing has stopped (a hung filesystem under a walk, a failing source) and its numbers are "
              "frozen: CriBackgroundReadingStale fires past 3 periods plus 2 minutes, and the panels and alerts on "
              "it (CriPodEphemeralStorageFillingNode, CriContainerFdsNearLimit, CriContainerLogNotRotated, the "
              "runtime alerts) see old data.", "short",
              *[query(f"(time() - {taken}{{{NODE}}}) / ({interval}{{{NODE}}} + {took})", reader)
                for reader, taken, interval, took in READERS], w=8, min_=0),
        graph("Background sampler cost", "CPU cores the fd/TCP sampler and the ephemeral storage walker spend "
              "(thread CPU time), the entries they read per second: what the budgets bound, and how many "
              "--fd-sample-interval old the oldest fd reading served is (the budget spreads a node's reads over "
              "several passes).", "short",
              query(f"rate(cri_fd_sampler_cpu_seconds_total{{{NODE}}}[$__rate_interval])", "fd sampler CPU"),
              query(f"rate(cri_ephemeral_storage_walk_cpu_seconds_total{{{NODE}}}[$__rate_interval])", "walk CPU"),
              query(f"rate(cri_ephemeral_storage_walk_files_total{{{NODE}}}[$__rate_interval])", "walk entries/s"),
              query(f"cri_fd_sampler_pass_entries{{{NODE}}}", "fd sampler entries, last pass"),
              query(f"(time() - cri_fd_sampler_oldest_reading_timestamp_seconds{{{NODE}}}) / "
                    f"cri_fd_sampler_interval_seconds{{{NODE}}}", "oldest fd reading, in intervals"),
              w=8, min_=0, gap=SAMPLER_GAP),
        graph("Termination events and walk errors", "Whether the exporter follows the runtime's event stream "
              "(1: containerd 2.x, CRI-O 1.33+; 0: it polls, as on containerd 1.7, where subscribing would take "
              "events from the kubelet), events received and stream breaks per second (a break is a runtime "
              "restart: terminations are then found by polling, none lost), and entries the ephemeral storage "
              "walk could not measure, by reason (permission: a directory it may not list).", "short",
              query(f"cri_container_events_subscribed{{{NODE}}}", "events subscribed"),
              query(f"rate(cri_container_events_received_total{{{NODE}}}[$__rate_interval])", "events/s"),
              query(f"rate(cri_container_events_stream_breaks_total{{{NODE}}}[$__rate_interval])", "stream breaks/s"),
              query(f"sum by (reason) (rate(cri_ephemeral_storage_walk_errors_total{{{NODE}}}[$__rate_interval]))",
                    "walk errors/s: {{reason}}"), w=8, min_=0, gap=SAMPLER_GAP),
    )
    b.row(
        "Doctor",
        states("Doctor checks", "Each doctor check over time: green passes, red warns or fails (skipped checks are not "
               "shown). `cri-exporter doctor` on the node explains each finding.", "none",
               query(f"cri_doctor_check_ok{{{NODE}}}", "{{check}}"), w=24, h=10, mapping=PASS_FAIL),
        graph("Doctor checks by status", "How many checks are in each status.", "short",
              query(f"sum by (status) (cri_doctor_check_status{{{NODE}}})", "{{status}}"), w=12, stack=True, min_=0),
        graph("Doctor run duration", "How long the serve-mode doctor's last run took.", "s",
              query(f"cri_doctor_last_run_duration_seconds{{{NODE}}}", "duration"), w=12, min_=0),
    )
    b.row(
        "Exporter process",
        graph("Exporter CPU", "CPU cores the exporter process uses.", "short",
              query(f"rate(process_cpu_seconds_total{{{NODE}}}[$__rate_interval])", "cpu"), w=12, min_=0),
        graph("Exporter memory", "Resident memory of the exporter process.", "bytes",
              query(f"process_resident_memory_bytes{{{NODE}}}", "rss"), w=12, min_=0),
    )
    return b.build()
