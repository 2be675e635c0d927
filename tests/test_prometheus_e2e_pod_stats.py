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

import pytest

from crilab.scenario import start_oom_pod, unrecorded_exit
from tests.exporter_proc import wait_for
from tests.prometheus_proc import RELEASES, release_id
from tests.unrecorded_exit_e2e import JOB, stuck_lab

pytestmark = pytest.mark.containerd


@pytest.mark.parametrize("runtime_version", ["1.6"], ids=lambda v: f"containerd-{v}", indirect=True)
@pytest.mark.parametrize("prometheus", list(RELEASES), ids=release_id)
def test_an_unrecorded_exit_fires_pod_stats_unavailable_not_collector_failing(runtime_version, prometheus, lab_dir):
    with stuck_lab(lab_dir, runtime_version, prometheus, "e2e-stats", "runtime,containers,stats",
                   f'count_over_time(cri_stats_pod_sandboxes_unavailable{{job="{JOB}"}}[1m]) >= 5',
                   "five samples of the unavailable sandboxes") as e2e:
        assert not e2e.alerts("CriPodStatsUnavailable", "CriCollectorFailing")
        start_oom_pod(e2e.cd, namespace="e2e-stats")  # an OOM kill beside it, as in the render that showed it
        exit_ = unrecorded_exit(e2e.cd, e2e.stuck_id)
        try:
            firing = wait_for(lambda: e2e.alerts("CriPodStatsUnavailable", state="firing"),
                              timeout=90, interval=0.5, what="CriPodStatsUnavailable to fire")
            (alert,) = firing
            assert float(alert["value"]) == 1  # the one sandbox whose task is gone, as CRI says
            assert alert["labels"]["severity"] == "warning"
            assert alert["annotations"]["runbook_url"].endswith("/alerts/runbooks/CriPodStatsUnavailable.md")
            # all along, the stats collector succeeded and CriCollectorFailing was never even pending
            (success,) = e2e.prom.query(f'min_over_time(cri_scrape_collector_success{{job="{JOB}", collector="stats"}}[1m])')
            assert float(success["value"][1]) == 1
            assert not e2e.alerts("CriCollectorFailing")
            (failures,) = e2e.prom.query(f'max_over_time(cri_stats_pod_sandbox_failures{{job="{JOB}"}}[1m])')
            assert float(failures["value"][1]) == 0
        finally:
            exit_.release()
