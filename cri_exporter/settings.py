"""Every setting in one place: its default, its flag, its environment variable.

Flags win over `CRI_EXPORTER_<NAME>` environment variables (click's
auto_envvar_prefix), which win over these defaults. The runtime endpoint also
honours CONTAINER_RUNTIME_ENDPOINT, as crictl does.
"""
from __future__ import annotations

from dataclasses import dataclass

from cri_exporter.collectors.registry import NAMES as ALL_COLLECTORS

DEFAULT_LISTEN_ADDRESS = ":9920"


@dataclass(frozen=True)
class Settings:
    listen_address: str = DEFAULT_LISTEN_ADDRESS
    runtime_endpoint: str | None = None
    host_root: str = "/"
    collectors: tuple[str, ...] = ALL_COLLECTORS
    # A scrape answers within this, whatever the runtime does; Prometheus's
    # default scrape_timeout is 10 s.
    scrape_timeout: float = 8.0
    # Deadline of one cheap CRI call (Version, Status, the lists).
    runtime_timeout: float = 5.0
    # The expensive stats calls run in the background this often while they
    # are the source of some CPU/memory values (VM handlers, no cgroups)...
    stats_interval: float = 15.0
    # ...and this often while cgroups give every usage value live and the
    # snapshot carries only writable layers (stats_refresher.py says why).
    stats_idle_interval: float = 300.0
    # ...each with this deadline.
    stats_timeout: float = 30.0
    # The runtime's processes (runtime_processes.py): one walk of /proc this
    # often, off the scrape path (its cost grows with the node's processes).
    runtime_process_interval: float = 15.0
    # A shim CRI does not list counts as leaked only past this age: RunPodSandbox
    # starts the shim before CRI lists the sandbox, and may take up to the
    # kubelet's runtimeRequestTimeout (2m by default) to get there.
    runtime_shim_leak_grace: float = 120.0
    # Container logs (pod_logs.py): a stat of every container's log files this
    # often, off the scrape path; the kubelet checks them every 10 s.
    container_log_interval: float = 15.0
    # ImageFsInfo and ListImages (kept_answer.py): asked at most this often,
    # not every scrape; containerd refreshes the former every 10 s.
    image_interval: float = 60.0
    # Fds, sockets and TCP states (container_fds.py): a pass this often, of at
    # most this many entries (fd entries, socket lines); the rest comes next pass.
    fd_sample_interval: float = 30.0
    fd_sample_budget: int = 50_000
    # Pods' emptyDirs and logs (ephemeral_storage.py): one walk this often
    # (the kubelet's own --volume-stats-agg-period), paced to this many
    # directory entries a second; a longer walk goes on, never restarts.
    ephemeral_storage_interval: float = 60.0
    ephemeral_storage_files_per_second: float = 10000.0
    max_recv_bytes: int = 16 * 1024 * 1024
    # The doctor's checks read configs and ask the runtime: minutes apart is
    # enough for a misconfiguration alert, and keeps them off the scrape path.
    doctor_interval: float = 300.0
    log_format: str = "auto"
    log_level: str = "info"
    # The exporter toolkit's web config (TLS, basic auth): webconfig.py.
    web_config_file: str | None = None
    doctor_endpoint: bool = True  # serve /doctor (behind the web config's basic auth, if any)
    # The series budget (metric_filter.py): comma-separated regexes over family names, deny wins.
    metrics_allow: str = ""
    metrics_deny: str = ""
    # The cri_pod_* twins of the cgroup collector's cri_container_* families.
    pod_cgroup_metrics: bool = True
    # Landlock at start (confine.py): no writes, no secrets of the host root read.
    confine: bool = True

    def metric_filter(self):
        """The MetricFilter these settings ask for; raises MetricFilterError naming the flag."""
        from cri_exporter.metric_filter import MetricFilter

        twins: tuple[str, ...] = ()
        if not self.pod_cgroup_metrics:
            from cri_exporter.collectors.cgroup_readings import POD_CGROUP_FAMILIES
            twins = POD_CGROUP_FAMILIES
        return MetricFilter(self.metrics_allow, self.metrics_deny, twins)


def parse_collectors(spec: str) -> tuple[str, ...]:
    """`a,b` enables exactly a and b; `-a,-b` disables those from the default set.

    Raises ValueError naming an unknown collector, so a typo is a usage error
    rather than a silently missing source.
    """
    items = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [s.lstrip("-") for s in items if s.lstrip("-") not in ALL_COLLECTORS]
    if unknown:
        raise ValueError(f"unknown collector(s) {', '.join(unknown)}; known: {', '.join(ALL_COLLECTORS)}")
    enabled = [s for s in items if not s.startswith("-")]
    disabled = {s[1:] for s in items if s.startswith("-")}
    if enabled and disabled:
        raise ValueError("either list the collectors to enable or the ones to disable (-name), not both")
    if enabled:
        return tuple(c for c in ALL_COLLECTORS if c in enabled)
    return tuple(c for c in ALL_COLLECTORS if c not in disabled)


def parse_listen_address(addr: str) -> tuple[str, int]:
    """`:9920`, `0.0.0.0:9920`, `127.0.0.1:9920` or `[::1]:9920`."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address {addr!r} is not host:port")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


DEFAULTS = Settings()
