"""The lean profile: the families the shipped dashboards and alerts need, as a
`--metrics-allow` value for large fleets (docs/metrics.md, "Series budget").

tests/test_metric_budget.py holds it to that: every metric a dashboard query
or an alert expression names matches it, and an exporter given it serves
exactly the families it matches. A new panel or alert on a family outside it
fails that test until the family is added here.
"""
from __future__ import annotations

LEAN_PATTERNS: tuple[str, ...] = (
    "cri_runtime_.*",
    "cri_containers",
    "cri_pods",
    "cri_container_(info|state|restarts|last_terminated_.*)",
    "cri_container_running_without_cgroup_since_time_seconds",  # CriContainerRunningWithoutCgroup
    "cri_container_cpu_(usage_seconds_total|user_seconds_total|system_seconds_total|cfs_.*)",
    "cri_container_memory_(working_set|usage|rss|swap|cache|mapped_file|max_usage)_bytes",
    "cri_container_memory_(page_faults|major_page_faults|failcnt|oom_kills)_total",
    "cri_container_spec_(cpu_quota_seconds|cpu_period_seconds|memory_limit_bytes)",
    "cri_container_(pids|pressure_.*|blkio_.*|writable_layer_bytes|terminations_total)",
    "cri_container_log_(file_bytes|bytes|rotated_files|max_size_bytes|max_files)",
    "cri_container_(file_descriptors|file_descriptors_limit_ratio|sockets)",
    "cri_pod_(info|cpu_usage_seconds_total|memory_working_set_bytes|memory_oom_kills_total|network_.*)",
    # Ephemeral storage: the pod's total by source and its emptyDirs (dashboards, the growth alert)
    # and the node's headroom, and its inode headroom and threshold (CriNodefsInodesNearEviction, a
    # few series a node); the pods' inodes by source (up to 3 series a pod) for their growth alert,
    # CriPodEphemeralInodesFillingNode. Per volume and per container inodes and the walk's own cost stay out.
    "cri_pod_(ephemeral_storage|emptydir)_bytes",
    "cri_pod_ephemeral_storage_inodes",
    "cri_eviction_headroom_(bytes|inodes)",
    "cri_eviction_threshold_inodes",
    "cri_stats_(refresh_duration_seconds|refresh_failures_total|snapshot_age_seconds|pod_sandboxes_unavailable)",
    # The background readers' clocks: CriBackgroundReadingStale (the runtime processes' are cri_runtime_.*).
    "cri_stats_(snapshot_timestamp|refresh_interval)_seconds",
    "cri_container_log_sample_(timestamp|duration|interval)_seconds",
    "cri_fd_sampler_(last_pass_timestamp|pass_duration|interval)_seconds",
    "cri_ephemeral_storage_walk_(last_completed_timestamp|last_duration|interval)_seconds",
    "cri_imagefs_.*",
    "cri_images.*",
    "cri_node_cgroup_info",
    "cri_cgroups_not_read",
    "cri_doctor_.*",
    "cri_request_.*",
    "cri_exporter_web_config_last_reload_successful",
    "cri_exporter_restart_needed",  # CriExporterRestartNeeded: a few series a node
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
)

# What to pass: --metrics-allow "$LEAN_ALLOW" (or the chart's metrics.allow).
LEAN_ALLOW = ",".join(LEAN_PATTERNS)
