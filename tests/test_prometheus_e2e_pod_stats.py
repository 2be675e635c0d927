"""End to end: a pod whose stats containerd 1.6.20 refuses (a container OOM-killed, and one whose
exit containerd could not record: crilab.scenario.unrecorded_exit) fires CriPodStatsUnavailable
on the real Prometheus (each release of tests/prometheus_proc.RELEASES), with the number of such
sandboxes as its value, while CriCollectorFailing stays quiet: before, ListPodSandboxStats and
that pod's PodSandboxStats failing NOT_FOUND on every refresh failed the stats collector, a
false page for the exporter. Rules are the production expressions with the `for` windows
shortened (alerts.settings.fast).

On containerd 1.6.20, where the list fails whole (1.7.24 leaves the pod out and is held by
tests/test_sandbox_stats_real.py; 2.1.9 answers the pod's stats and fires nothing).
"""
from __future__ import annotations

import os
import uuid

import pytest

from alerts.rules import groups
from alerts.settings import fast
from crilab import Containerd, run_pod
from crilab.scenario import SLEEP, start_oom_pod, unrecorded_exit
from tests.exporter_proc import ExporterProcess, processes, wait_for
from tests.prometheus_proc import RELEASES, PrometheusProcess, release, release_id

pytestmark = pytest.mark.containerd

JOB = "cri-exporter"


@pytest.mark.parametrize("runtime_version", ["1.6"], ids=lambda v: f"containerd-{v}", indirect=True)
@pytest.mark.parametrize("prometheus", list(RELEASES), ids=release_id)
def test_an_unrecorded_exit_fires_pod_stats_unavailable_not_collector_failing(runtime_version, prometheus, lab_dir):
    cd = Containerd(os.path.join(lab_dir, f"e2e-ps-{uuid.uuid4().hex[:6]}"), version=runtime_version).start()
    try:
        with processes() as keep:
            healthy = run_pod(cd, "healthy", "e2e-stats")
            healthy.add_container("app", SLEEP)
            stuck = run_pod(cd, "stuck", "e2e-stats")
            cid = stuck.add_container("app", SLEEP)
            exporter = keep(ExporterProcess(cd.endpoint, "--host-root", "/", "--collectors", "runtime,containers,stats",
                                            "--stats-interval", "1", "--stats-idle-interval", "1"))
            prom = keep(PrometheusProcess([f"127.0.0.1:{exporter.port}"], job=JOB, scrape_interval="1s",
                                          rule_groups=groups(fast()), release=release(prometheus)))
            prom.wait_targets_up()
            wait_for(lambda: prom.query(f'count_over_time(cri_stats_pod_sandboxes_unavailable{{job="{JOB}"}}[1m]) >= 5'),
                     timeout=60, interval=0.5, what="five samples of the unavailable sandboxes")
            watched = ("CriPodStatsUnavailable", "CriCollectorFailing")
            assert not [a for a in prom.alerts() if a["labels"]["alertname"] in watched]

            start_oom_pod(cd, namespace="e2e-stats")  # an OOM kill beside it, as in the render that showed it
            exit_ = unrecorded_exit(cd, cid)
            try:
                firing = wait_for(lambda: [a for a in prom.alerts() if a["labels"]["alertname"] == "CriPodStatsUnavailable"
                                           and a["state"] == "firing"],
                                  timeout=90, interval=0.5, what="CriPodStatsUnavailable to fire")
                (alert,) = firing
                assert float(alert["value"]) == 1  # the one sandbox whose task is gone, as CRI says
                assert alert["labels"]["severity"] == "warning"
                assert alert["annotations"]["runbook_url"].endswith("/alerts/runbooks/CriPodStatsUnavailable.md")
                # all along, the stats collector succeeded and CriCollectorFailing was never even pending
                (success,) = prom.query(f'min_over_time(cri_scrape_collector_success{{job="{JOB}", collector="stats"}}[1m])')
                assert float(success["value"][1]) == 1
                assert not [a for a in prom.alerts() if a["labels"]["alertname"] == "CriCollectorFailing"]
                (failures,) = prom.query(f'max_over_time(cri_stats_pod_sandbox_failures{{job="{JOB}"}}[1m])')
                assert float(failures["value"][1]) == 0
            finally:
                exit_.release()
    finally:
        cd.cleanup()
