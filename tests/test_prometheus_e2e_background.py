"""End to end: CriBackgroundReadingStale fires on the real Prometheus (each
release of tests/prometheus_proc.RELEASES) for a background reader that is
really stuck, and for no other while they keep reading.

The stuck reader is the ephemeral storage walk, under a filesystem that
never answers (tests/hung_mount.py: a FUSE mount whose requests nobody
reads, in the exporter's own mount namespace, as a hung NFS or FUSE server
leaves a node). The exporter's host root is laid out as a kubelet's (as in
tests/test_prometheus_e2e_ephemeral.py); the mount sits in a pod directory
kept outside `<root-dir>/pods` until the walks have run a while, then moved
in (a rename of its parent: the mount goes with it), so the next walk opens
it and blocks. Ground truth: a thread of the exporter in D state waiting in
FUSE, the walk's timestamp frozen in what the exporter serves, and the
alert's value the age of that timestamp; the stats refresh and the container
log round go on (their clocks move past the break in Prometheus), and
neither is even pending. Rules are the production expressions with the
`for` windows shortened (alerts.settings.fast) and the margin shortened to
MARGIN seconds (production: 120 s, sized for scrape intervals of a minute).
"""
from __future__ import annotations

import os
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from alerts.rules import groups
from alerts.settings import fast
from cri_exporter.ephemeral_storage import EMPTY_DIR
from tests.ephemeral_truth import kubelet_unit
from tests.exporter_proc import ExporterProcess, processes, wait_for
from tests.prometheus_proc import RELEASES, PrometheusProcess, release, release_id

# The subject is the rule on Prometheus and a hung mount: the newest containerd only, like the other e2e tests.
pytestmark = [pytest.mark.containerd, pytest.mark.newest_runtime]

JOB = "cri-exporter"  # alerts.settings.PRODUCTION.selector selects it
ALERT = "CriBackgroundReadingStale"
ROOT_DIR = "/data/kubelet"
LOGS_DIR = "/data/pod-logs"
MARGIN = 10
CLOCKS = {"stats": "cri_stats_snapshot_timestamp_seconds",
          "container_logs": "cri_container_log_sample_timestamp_seconds",
          "ephemeral_storage": "cri_ephemeral_storage_walk_last_completed_timestamp_seconds"}


def _fuse_waiters(pid: int) -> list[str]:
    """Threads of `pid` in uninterruptible sleep waiting in FUSE: `tid wchan`."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            wchan = Path(f"/proc/{pid}/task/{tid}/wchan").read_text()
            state = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        if state == "D" and wchan.startswith("fuse"):
            out.append(f"{tid} {wchan}")
    return out


@pytest.fixture(params=list(RELEASES), ids=release_id)
def node(request, containerd, tmp_path):
    """(Prometheus, the exporter, break_walk): an exporter over a kubelet-like host root with a hung
    mount waiting outside its pods directory; break_walk() moves it in and returns when."""
    if not os.path.exists("/dev/fuse"):
        pytest.fail("this test needs /dev/fuse (and root) for the hung filesystem")
    host = tmp_path / "host"
    pods = host / ROOT_DIR.lstrip("/") / "pods"
    pods.mkdir(parents=True)
    kubelet_unit(host, ROOT_DIR, LOGS_DIR)
    uid = str(uuid.uuid4())
    held = host / "held" / uid
    mountpoint = held / "volumes" / EMPTY_DIR / "stuck"
    mountpoint.mkdir(parents=True)
    with processes() as keep:
        exporter = keep(ExporterProcess(
            containerd.endpoint, "--host-root", str(host),
            "--collectors", "stats,containers,container_logs,ephemeral_storage",
            "--stats-interval", "1", "--stats-idle-interval", "1", "--container-log-interval", "1",
            "--ephemeral-storage-interval", "1",
            wrap=[sys.executable, "-m", "tests.hung_mount", str(mountpoint), "--"]))
        prom = keep(PrometheusProcess([f"127.0.0.1:{exporter.port}"], job=JOB, scrape_interval="1s",
                                      rule_groups=groups(replace(fast(), stale_margin_seconds=MARGIN)),
                                      release=release(request.param)))
        prom.wait_targets_up()

        def break_walk() -> float:
            at = time.time()
            os.rename(held, pods / uid)
            return at

        yield prom, exporter, break_walk


def _ours(prom: PrometheusProcess) -> list[dict]:
    return [a for a in prom.alerts() if a["labels"]["alertname"] == ALERT]


def test_stale_alert_fires_for_a_walk_stuck_on_a_hung_mount_only(node):
    prom, exporter, break_walk = node
    clocks = " and on () ".join(f'count_over_time({m}{{job="{JOB}"}}[1m]) >= 5' for m in CLOCKS.values())
    wait_for(lambda: prom.query(clocks), timeout=60, interval=0.5, what="five samples of every reader's clock")
    assert _ours(prom) == [], "pending or firing before anything was stuck"

    broken_at = break_walk()
    try:
        (alert,) = wait_for(lambda: [a for a in _ours(prom) if a["state"] == "firing"], timeout=120,
                            interval=0.5, what=f"{ALERT} to fire")
    except AssertionError:
        print(prom.query(f'{{job="{JOB}", __name__=~"cri_(stats_snapshot|container_log_sample|ephemeral_storage_walk)_.*"}}'))
        raise
    assert alert["labels"]["collector"] == "ephemeral_storage"
    assert alert["labels"]["severity"] == "warning"
    assert alert["annotations"]["runbook_url"].endswith(f"/alerts/runbooks/{ALERT}.md")

    # Really stuck: a thread of the exporter blocked in the hung filesystem, not failing and retrying.
    pid = exporter.proc.pid
    assert _fuse_waiters(pid), f"no thread of the exporter waits in FUSE: {exporter.log()[-2000:]}"
    # The walk's clock is frozen where the exporter serves it: before the mount came in (a walk already
    # past the pods directory may have ended just after), and the alert's value is its age.
    served = exporter.scrape().get1(CLOCKS["ephemeral_storage"])
    assert served < broken_at + 1
    evaluated = time.time()
    assert broken_at - served < float(alert["value"]) <= evaluated - served
    # The others keep reading: their clocks moved past the break, and neither is pending.
    for collector in ("stats", "container_logs"):
        assert prom.query(f'{CLOCKS[collector]}{{job="{JOB}"}} > {broken_at + 3}'), collector
    assert [a["labels"]["collector"] for a in _ours(prom)] == ["ephemeral_storage"]
    assert exporter.scrape().get1(CLOCKS["ephemeral_storage"]) == served
