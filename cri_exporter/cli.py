"""The `cri-exporter` command: wires options to the pieces, nothing more."""
from __future__ import annotations

import signal
import sys

from cri_exporter import prometheus_on_demand, ssl_on_demand

# Before grpc (asyncio) and prometheus_client import ssl: `serve` without a web config never maps OpenSSL,
# and `serve` imports prometheus_client's submodules without the package's exposition and HTTP servers,
# and grpc without its asyncio API (grpc.aio, which grpc's `__init__` imports).
ssl_on_demand.install()
prometheus_on_demand.install()

import click  # noqa: E402
import grpc  # noqa: E402
import structlog  # noqa: E402

from cri_exporter import __version__  # noqa: E402
from cri_exporter.doctor.cli import doctor  # noqa: E402
from cri_exporter.settings import ALL_COLLECTORS, DEFAULTS, Settings, parse_collectors, parse_listen_address  # noqa: E402
from cri_exporter.top.command import top  # noqa: E402

ENV_PREFIX = "CRI_EXPORTER"


def _collectors(ctx, param, value):
    try:
        return parse_collectors(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


def _listen(ctx, param, value):
    try:
        return parse_listen_address(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


def _web_config(ctx, param, value):
    """Read at start: a file that cannot be served is a usage error (exit 2), before anything starts."""
    if value is None:
        return None
    from cri_exporter.webconfig import WebConfigError, WebConfigFile

    try:
        return WebConfigFile(value)
    except WebConfigError as err:
        raise click.BadParameter(str(err)) from None


def _metric_patterns(ctx, param, value):
    """Compiled at start: a pattern that is not a regex is a usage error naming the flag (exit 2)."""
    from cri_exporter.metric_filter import MetricFilter, MetricFilterError

    try:
        if param.name == "metrics_allow":
            MetricFilter(allow=value)
        else:
            MetricFilter(deny=value)
    except MetricFilterError as err:  # the message starts with the flag's name, which click says already
        raise click.BadParameter(str(err).split(": ", 1)[-1]) from None
    return value or ""


def env(option: str) -> str:
    """CRI_EXPORTER_<OPTION>: the same name for every subcommand (click's
    auto_envvar_prefix would put the subcommand's name in it)."""
    return f"{ENV_PREFIX}_{option.upper().replace('-', '_')}"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", message="cri-exporter %(version)s")
def main() -> None:
    """Prometheus metrics and diagnosis for a node's CRI container runtime."""


@main.command()
@click.option("--listen-address", envvar=env("listen-address"), show_envvar=True, default=DEFAULTS.listen_address, show_default=True, callback=_listen,
              help="host:port to serve /metrics on.")
@click.option("--runtime-endpoint", envvar=[env("runtime-endpoint"), "CONTAINER_RUNTIME_ENDPOINT"], show_envvar=True,
              help="CRI endpoint (unix:///path). Default: the first socket that answers of k3s/RKE2's, "
                   "microk8s's, containerd's, CRI-O's and cri-dockerd's, under --host-root.")
@click.option("--host-root", envvar=env("host-root"), show_envvar=True, default=DEFAULTS.host_root, show_default=True, type=click.Path(file_okay=False),
              help="Where the host's filesystem is mounted (/host in the DaemonSet).")
@click.option("--collectors", "collectors", envvar=env("collectors"), show_envvar=True, default=",".join(ALL_COLLECTORS), show_default=True, callback=_collectors,
              help="Collectors to run, comma-separated; or '-name,...' to disable some of the default set.")
@click.option("--scrape-timeout", envvar=env("scrape-timeout"), show_envvar=True, type=float, default=DEFAULTS.scrape_timeout, show_default=True,
              help="Seconds a scrape may take; past it, what is ready is served.")
@click.option("--runtime-timeout", envvar=env("runtime-timeout"), show_envvar=True, type=float, default=DEFAULTS.runtime_timeout, show_default=True,
              help="Deadline in seconds of one CRI call on the scrape path.")
@click.option("--stats-interval", envvar=env("stats-interval"), show_envvar=True, type=float, default=DEFAULTS.stats_interval, show_default=True,
              help="Seconds between background CRI stats refreshes while they are the source of some "
                   "CPU/memory values (VM-based handlers, cgroups unreadable or disabled).")
@click.option("--stats-idle-interval", envvar=env("stats-idle-interval"), show_envvar=True, type=float,
              default=DEFAULTS.stats_idle_interval, show_default=True,
              help="Seconds between them while cgroups give every usage value live (the snapshot then "
                   "only carries writable-layer sizes).")
@click.option("--stats-timeout", envvar=env("stats-timeout"), show_envvar=True, type=float, default=DEFAULTS.stats_timeout, show_default=True,
              help="Deadline in seconds of one background CRI stats call.")
@click.option("--runtime-process-interval", envvar=env("runtime-process-interval"), show_envvar=True,
              type=click.FloatRange(min=0.1), default=DEFAULTS.runtime_process_interval, show_default=True,
              help="Seconds between walks of /proc for the runtime's own processes (runtime_processes collector).")
@click.option("--runtime-shim-leak-grace", envvar=env("runtime-shim-leak-grace"), show_envvar=True,
              type=click.FloatRange(min=0), default=DEFAULTS.runtime_shim_leak_grace, show_default=True,
              help="Seconds a shim CRI does not list may live before it counts as leaked; at least the kubelet's "
                   "runtimeRequestTimeout (2m by default), which bounds a slow RunPodSandbox.")
@click.option("--container-log-interval", envvar=env("container-log-interval"), show_envvar=True,
              type=click.FloatRange(min=0.1), default=DEFAULTS.container_log_interval, show_default=True,
              help="Seconds between stats of every container's log files (container_logs collector).")
@click.option("--image-interval", envvar=env("image-interval"), show_envvar=True,
              type=click.FloatRange(min=0), default=DEFAULTS.image_interval, show_default=True,
              help="Seconds an ImageFsInfo or ListImages answer is reused (imagefs collector); never served older.")
@click.option("--fd-sample-interval", envvar=env("fd-sample-interval"), show_envvar=True,
              type=click.FloatRange(min=0.1), default=DEFAULTS.fd_sample_interval, show_default=True,
              help="Seconds between passes reading containers' fds and sockets and pods' TCP states (container_fds collector).")
@click.option("--fd-sample-budget", envvar=env("fd-sample-budget"), show_envvar=True,
              type=click.IntRange(min=1), default=DEFAULTS.fd_sample_budget, show_default=True,
              help="Most entries (fd entries, TCP socket lines) one pass reads; the rest is read first in the next pass.")
@click.option("--ephemeral-storage-interval", envvar=env("ephemeral-storage-interval"), show_envvar=True,
              type=click.FloatRange(min=0.1), default=DEFAULTS.ephemeral_storage_interval, show_default=True,
              help="Seconds between walks of pods' emptyDirs and log directories (ephemeral_storage collector); "
                   "a walk that takes longer goes on and the next starts when it ends.")
@click.option("--ephemeral-storage-files-per-second", envvar=env("ephemeral-storage-files-per-second"),
              show_envvar=True, type=click.FloatRange(min=0), default=DEFAULTS.ephemeral_storage_files_per_second,
              show_default=True, help="Directory entries the ephemeral-storage walk visits a second at most (0: unpaced).")
@click.option("--grpc-max-recv-bytes", envvar=env("grpc-max-recv-bytes"), show_envvar=True, type=click.IntRange(min=4096),
              default=DEFAULTS.max_recv_bytes, show_default=True,
              help="Largest CRI answer accepted (ListContainers grows ~1 KiB a container; 16 MiB, the kubelet's limit, holds ~16,000).")
@click.option("--doctor-interval", envvar=env("doctor-interval"), show_envvar=True, type=float,
              default=DEFAULTS.doctor_interval, show_default=True,
              help="Seconds between doctor runs exported as cri_doctor_* metrics and served on /doctor.")
@click.option("--web-config-file", "--web.config.file", "web_config", envvar=env("web-config-file"), show_envvar=True,
              callback=_web_config, metavar="FILE",
              help="TLS, basic auth and headers from the web config file every Prometheus exporter reads "
                   "(node_exporter's --web.config.file); re-read when it or a file it names changes.")
@click.option("--doctor-endpoint/--no-doctor-endpoint", envvar=env("doctor-endpoint"), show_envvar=True,
              default=DEFAULTS.doctor_endpoint, show_default=True,
              help="Serve the latest doctor report on /doctor (behind the web config's basic auth, if it has users).")
@click.option("--metrics-allow", "metrics_allow", envvar=env("metrics-allow"), show_envvar=True, default="",
              callback=_metric_patterns, metavar="REGEX[,REGEX...]",
              help="Serve only the metric families whose whole name (as on its # TYPE line, counters with _total) "
                   "matches one of these regular expressions, like kube-state-metrics' --metric-allowlist. "
                   "Denied families cost no work. docs/metrics.md has a lean set for large fleets.")
@click.option("--metrics-deny", "metrics_deny", envvar=env("metrics-deny"), show_envvar=True, default="",
              callback=_metric_patterns, metavar="REGEX[,REGEX...]",
              help="Never serve the families matching one of these; with --metrics-allow too, deny wins. "
                   "cri_up and cri_scrape_* are always served.")
@click.option("--pod-cgroup-metrics/--no-pod-cgroup-metrics", envvar=env("pod-cgroup-metrics"), show_envvar=True,
              default=DEFAULTS.pod_cgroup_metrics, show_default=True,
              help="Serve the cri_pod_* twins of the cgroup families (throttling, limits, memory composition, "
                   "events, pids, pressure, block I/O of each pod's cgroup); off, pod cgroups are read only "
                   "for the pods' CPU and memory usage.")
@click.option("--confine/--no-confine", envvar=env("confine"), show_envvar=True, default=DEFAULTS.confine, show_default=True,
              help="Restrict the agent with Landlock at start (kernel 5.13+): nothing written, no file read outside "
                   "its own and the host root, and none of the host root's secrets (pods' volumes, kubelet and "
                   "control-plane keys, kubeconfigs, /etc/shadow...) read; where the kernel cannot, a warning and "
                   "cri_exporter_confinement_info{state=\"unavailable\"}.")
@click.option("--log-format", envvar=env("log-format"), show_envvar=True, type=click.Choice(["auto", "json", "console"]), default=DEFAULTS.log_format,
              show_default=True, help="auto: console on a terminal, JSON lines otherwise.")
@click.option("--log-level", envvar=env("log-level"), show_envvar=True, type=click.Choice(["debug", "info", "warning", "error"]), default=DEFAULTS.log_level,
              show_default=True)
def serve(listen_address, runtime_endpoint, host_root, collectors, scrape_timeout, runtime_timeout,
          stats_interval, stats_idle_interval, stats_timeout, runtime_process_interval, runtime_shim_leak_grace, container_log_interval,
          image_interval,
          fd_sample_interval, fd_sample_budget, ephemeral_storage_interval, ephemeral_storage_files_per_second,
          grpc_max_recv_bytes, doctor_interval, web_config, doctor_endpoint,
          metrics_allow, metrics_deny, pod_cgroup_metrics, confine, log_format, log_level) -> None:
    """Serve Prometheus metrics on /metrics."""
    from cri_exporter import confine as confinement
    from cri_exporter import memory_tuning
    from cri_exporter.exporter import Exporter
    from cri_exporter.logsetup import configure
    from cri_exporter.server import Server

    memory_tuning.tune_malloc()  # before any thread starts
    configure(log_format, log_level)
    log = structlog.get_logger("cri_exporter")
    # Handled from the start, not once serving: Python's own SIGINT handler raises
    # KeyboardInterrupt wherever start-up happens to be, and an exit from there
    # waits forever on the threads already started (grpc's, the exporter's). A
    # signal during start-up stops the agent as soon as its server exists.
    stopping: list[int] = []  # the signal that stops the agent, once one came
    servers: list = []

    def _stop(signum, frame):
        # As little as a handler may do: it runs between two bytecodes of the main thread,
        # which may hold the log's or threading's own locks then (no log line, no thread
        # started here). Server.shutdown only sets flags and wakes the loop.
        if not stopping:
            stopping.append(signum)
            for s in servers:
                s.shutdown()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    settings = Settings(
        listen_address=f"{listen_address[0]}:{listen_address[1]}", runtime_endpoint=runtime_endpoint,
        host_root=host_root, collectors=collectors, scrape_timeout=scrape_timeout, runtime_timeout=runtime_timeout,
        stats_interval=stats_interval, stats_idle_interval=stats_idle_interval, stats_timeout=stats_timeout, max_recv_bytes=grpc_max_recv_bytes,
        doctor_interval=doctor_interval, runtime_process_interval=runtime_process_interval,
        runtime_shim_leak_grace=runtime_shim_leak_grace,
        container_log_interval=container_log_interval, image_interval=image_interval,
        fd_sample_interval=fd_sample_interval, fd_sample_budget=fd_sample_budget,
        ephemeral_storage_interval=ephemeral_storage_interval,
        ephemeral_storage_files_per_second=ephemeral_storage_files_per_second,
        log_format=log_format, log_level=log_level,
        web_config_file=web_config.path if web_config is not None else None, doctor_endpoint=doctor_endpoint,
        metrics_allow=metrics_allow, metrics_deny=metrics_deny, pod_cgroup_metrics=pod_cgroup_metrics,
        confine=confine,
    )
    # Before any thread (grpc's come with the client): Landlock restricts the
    # calling thread and what it starts afterwards, never threads already running.
    if confine:
        confined = confinement.apply(confinement.build_policy(
            host_root, read_files=web_config.config.files if web_config is not None else (),
            listen_port=listen_address[1]))
    else:
        confined = confinement.disabled()
    confinement.log_result(confined)
    exporter = Exporter(settings)
    exporter.registry.register(confinement.ConfinementCollector(confined))
    from cri_exporter.restart_needed import NEEDED  # what the confinement keeps unseen until a restart
    exporter.registry.register(NEEDED)
    try:
        server = Server(listen_address, exporter, web=web_config, doctor_endpoint=settings.doctor_endpoint)
    except OSError as err:
        log.error("cannot listen", address=settings.listen_address, error=str(err))
        exporter.stop()
        sys.exit(1)
    exporter.start()
    memory_tuning.freeze_startup_objects()
    host, port = server.server_address[:2]
    shown = "localhost" if host in ("0.0.0.0", "::") else host
    log.info("serving", url=f"{server.scheme}://{shown}:{port}/metrics", endpoint=exporter.client.endpoint,
             collectors=",".join(collectors), version=__version__)

    servers.append(server)
    if stopping:  # a signal came during start-up: serve_forever returns at once
        server.shutdown()
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        if stopping:
            log.info("shutting down", signal=signal.Signals(stopping[0]).name)
        server.server_close()
        exporter.stop()


@main.command()
def version() -> None:
    """Print the version of cri-exporter and of what it runs with."""
    import platform

    click.echo(f"cri-exporter {__version__}")
    click.echo(f"python {platform.python_version()}, grpcio {grpc.__version__}")


main.add_command(doctor)
main.add_command(top)
