"""The background readers' configured intervals (CriBackgroundReadingStale's
yardstick) against the lab's real containerd: each `*_interval_seconds`
family is the flag the exporter was started with, and each reader's clock
moves between scrapes while it runs.

The stats refresher has two intervals: --stats-interval while the snapshot
feeds usage values (no readable cgroups: the cgroups collector disabled
here), --stats-idle-interval while the cgroups give them live (the lab's
runc containers, all collectors on). The family says which is in force.
"""
from __future__ import annotations

import pytest

from alerts.rules import BACKGROUND_READERS
from tests.exporter_proc import ExporterProcess, Samples, processes, wait_for

pytestmark = pytest.mark.containerd

# Distinct, unlike any default, so that a family reading the wrong flag shows.
FLAGS = {
    "--stats-interval": 1.25,
    "--stats-idle-interval": 2.75,
    "--runtime-process-interval": 0.75,
    "--container-log-interval": 1.5,
    "--fd-sample-interval": 1.75,
    "--ephemeral-storage-interval": 2.25,
}
INTERVALS = {
    "cri_runtime_process_sample_interval_seconds": "--runtime-process-interval",
    "cri_container_log_sample_interval_seconds": "--container-log-interval",
    "cri_fd_sampler_interval_seconds": "--fd-sample-interval",
    "cri_ephemeral_storage_walk_interval_seconds": "--ephemeral-storage-interval",
}
ARGS = [a for flag, value in FLAGS.items() for a in (flag, str(value))]


def _clocks(s: Samples) -> dict[str, float]:
    """Each reader's clock (the family the alert reads), by collector."""
    return {collector: s.get1(taken) for collector, taken, _, _ in BACKGROUND_READERS if s.find(taken)}


def test_each_reader_exports_the_interval_it_was_given_and_its_clock_moves(lab):
    containerd, _ = lab
    with processes() as keep:
        exporter = keep(ExporterProcess(containerd.endpoint, "--host-root", "/", *ARGS))
        # every reader has finished a reading (the fd sampler's first pass waits for the scrape's targets)
        first = wait_for(lambda: len(c := _clocks(exporter.scrape())) == len(BACKGROUND_READERS) and c,
                         timeout=60, what="a reading of every background reader")
        s = exporter.scrape()
        for family, flag in INTERVALS.items():
            assert s.get1(family) == FLAGS[flag], family
        # the lab's cgroups give every usage value live: the idle interval is in force
        wait_for(lambda: exporter.scrape().get1("cri_stats_refresh_interval_seconds") == FLAGS["--stats-idle-interval"],
                 timeout=30, what="the stats refresher's idle interval")
        # each clock moves on, reading after reading
        wait_for(lambda: all(now > first[c] for c, now in _clocks(exporter.scrape()).items()),
                 timeout=60, what="every reader's clock to move")


def test_the_stats_interval_is_in_force_while_the_snapshot_feeds_usage(lab):
    containerd, _ = lab
    with processes() as keep:
        exporter = keep(ExporterProcess(containerd.endpoint, "--host-root", "/", "--collectors", "-cgroups", *ARGS))
        wait_for(lambda: exporter.scrape().find("cri_stats_snapshot_timestamp_seconds"), timeout=30,
                 what="a stats snapshot")
        assert exporter.scrape().get1("cri_stats_refresh_interval_seconds") == FLAGS["--stats-interval"]
