"""Container logs (issue 15.3) against the lab's real containerd, on every
version of the matrix: the log path the runtime reports, a container that
writes its log, rotated files beside it, a log directory gone.

Ground truth is os.stat of the real files, read before and after the
exporter's round and required to agree (the log is no longer written by
then: the writer has printed its last line and sleeps).
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from crilab import run_pod
from crilab.scenario import SLEEP
from cri_exporter.collectors.base import ScrapeContext
from cri_exporter.collectors.container_logs import ContainerLogsCollector
from cri_exporter.cri import CriClient
from cri_exporter.hostfs import HostFS
from cri_exporter.inventory import ContainerIdentity
from cri_exporter.pod_logs import ContainerLogSampler, read_limits
from tests.exporter_proc import parse, wait_for

pytestmark = pytest.mark.containerd

LINES = 3000
WRITER = ["sh", "-c", f"i=0; while [ $i -lt {LINES} ]; do echo \"line $i of the writer\"; i=$((i+1)); done; "
          f"exec {' '.join(SLEEP)}"]


def _written(path: Path) -> bool:
    try:
        return f"line {LINES - 1} of the writer".encode() in path.read_bytes()[-200:]
    except FileNotFoundError:
        return False


def _truth(log: Path) -> tuple[int, int]:
    """(live file's size, bytes of the live file and every <log>.* file)."""
    total = log.stat().st_size
    for p in log.parent.iterdir():
        if p.name.startswith(log.name + "."):
            total += p.lstat().st_size
    return log.stat().st_size, total


def _sample(cd) -> tuple[ContainerLogSampler, CriClient]:
    client = CriClient(cd.endpoint, timeout=10)
    return ContainerLogSampler(HostFS("/"), client, interval=3600.0, timeout=10.0), client


def _collect(sampler: ContainerLogSampler, client: CriClient):
    from tests.test_runtime_processes_real import _lines
    ctx = ScrapeContext(client, HostFS("/"), time.monotonic() + 20)
    return parse(_lines(ContainerLogsCollector(sampler).collect(ctx)))


def test_log_of_a_writing_container_and_its_rotated_files(lab, exporter):
    cd, _ = lab
    pod = run_pod(cd, "logger", "logs")
    client = None
    try:
        cid = pod.add_container("writer", WRITER)
        log = Path(pod.config.log_directory) / "writer" / "0.log"
        # The runtime reports the sandbox's log_directory joined with the container's log_path (1.6, 1.7, 2.1).
        assert pod.container_status(cid).log_path == str(log)
        wait_for(lambda: _written(log), timeout=60, what="the writer's last line in its log")

        # Rotated files as the kubelet leaves them: an older compressed one, the newest
        # uncompressed one, and the .tmp of a compression cut short (bytes, not a rotated file).
        (log.parent / "0.log.20261201-101010.gz").write_bytes(os.urandom(1500))
        (log.parent / "0.log.20261202-101010").write_bytes(b"x" * 7000)
        (log.parent / "0.log.20261202-101010.tmp").write_bytes(b"y" * 300)
        sampler, client = _sample(cd)

        def agreed():
            before = _truth(log)
            sampler.sample()
            return before if _truth(log) == before else None

        size, total = wait_for(agreed, timeout=30, what="the log to hold still for one round")
        assert sampler.last_error is None
        got = sampler.latest.logs[ContainerIdentity("logs", "logger", "writer")]
        assert (got.current_bytes, got.rotated_files, got.total_bytes) == (size, 2, total)
        assert size > LINES * len("line 0 of the writer")  # CRI's log lines carry a timestamp and stream too

        served = _collect(sampler, client)
        labels = {"namespace": "logs", "pod": "logger", "container": "writer"}
        assert served.get1("cri_container_log_file_bytes", **labels) == size
        assert served.get1("cri_container_log_rotated_files", **labels) == 2
        assert served.get1("cri_container_log_bytes", **labels) == total
        limits = read_limits(HostFS("/"))
        assert served.get1("cri_container_log_max_size_bytes") == limits.max_size_bytes
        assert served.get1("cri_container_log_max_files") == limits.max_files

        # The exporter the suite runs serves it too, within its --container-log-interval.
        wait_for(lambda: list(exporter.scrape().find("cri_container_log_rotated_files", **labels).values()) == [2.0],
                 timeout=60, what="the served rotated files")
    finally:
        if client is not None:
            client.close()
        pod.remove()


def test_every_lab_container_matches_its_files(lab):
    """The standard pods' logs (exited attempts' containers included, where
    current): each series is the file's own size."""
    cd, _ = lab
    sampler, client = _sample(cd)
    try:
        sampler.sample()
        assert sampler.last_error is None
        logs = sampler.latest.logs
        for ident in (ContainerIdentity("shop", "web", "app"), ContainerIdentity("default", "flaky", "worker"),
                      ContainerIdentity("default", "batch", "job")):
            assert ident in logs, ident
        for ident, files in logs.items():
            pod_dirs = [p for p in (cd.base / "logs").iterdir() if p.name.startswith(f"{ident.namespace}_{ident.pod}_")]
            paths = [d / ident.container for d in pod_dirs]
            sizes = {p.stat().st_size for d in paths for p in d.glob("*.log")}
            assert files.current_bytes in sizes
        # flaky/worker's current instance is attempt 1: its own 1.log, not attempt 0's.
        flaky = logs[ContainerIdentity("default", "flaky", "worker")]
        worker_dir = next(p for p in (cd.base / "logs").iterdir() if p.name.startswith("default_flaky_")) / "worker"
        assert flaky.current_bytes == (worker_dir / "1.log").stat().st_size
        assert flaky.total_bytes == flaky.current_bytes
    finally:
        client.close()


def test_missing_log_directory_gives_no_series_and_no_error(lab):
    cd, _ = lab
    pod = run_pod(cd, "nologs", "logs")
    sampler, client = _sample(cd)
    try:
        pod.add_container("quiet", SLEEP)
        shutil.rmtree(Path(pod.config.log_directory))
        sampler.sample()
        assert sampler.last_error is None
        assert ContainerIdentity("logs", "nologs", "quiet") not in sampler.latest.logs
        assert ContainerIdentity("shop", "web", "app") in sampler.latest.logs
        served = _collect(sampler, client)  # raises if the collector failed
        assert served.find("cri_container_log_file_bytes", namespace="logs", pod="nologs") == {}
        assert served.find("cri_container_log_file_bytes", namespace="shop", pod="web") != {}
    finally:
        client.close()
        pod.remove()
