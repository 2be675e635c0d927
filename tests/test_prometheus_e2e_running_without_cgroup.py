"""End to end: a container whose exit containerd could not record (crilab.scenario.unrecorded_exit)
fires CriContainerRunningWithoutCgroup on the real Prometheus (each release of
tests/prometheus_proc.RELEASES), naming that container, on containerd 2.1.9: the version whose pod
stats answer normally, so CriPodStatsUnavailable stays quiet and this alert is the only sign.
Rules are the production expressions with the `for` windows shortened (alerts.settings.fast); the
exporter's own persistence rule (two readings GRACE_SECONDS apart) is not shortened.
"""
from __future__ import annotations

import json

import pytest

from cri_exporter.running_without_cgroup import GRACE_SECONDS
from crilab.scenario import unrecorded_exit
from dashboards import DIR as DASHBOARDS, lint
from tests.exporter_proc import wait_for
from tests.prometheus_proc import RELEASES, release_id
from tests.unrecorded_exit_e2e import JOB, stuck_lab

pytestmark = pytest.mark.containerd

ALERT = "CriContainerRunningWithoutCgroup"
PANEL = "Containers running without a cgroup"


@pytest.mark.parametrize("runtime_version", ["2.1"], ids=lambda v: f"containerd-{v}", indirect=True)
@pytest.mark.parametrize("prometheus", list(RELEASES), ids=release_id)
def test_an_unrecorded_exit_fires_running_without_cgroup_on_containerd_2(runtime_version, prometheus, lab_dir):
    with stuck_lab(lab_dir, runtime_version, prometheus, "e2e-dead", "runtime,containers,stats,cgroups",
                   f'count_over_time(cri_container_cpu_usage_seconds_total{{job="{JOB}", pod="stuck"}}[1m]) >= 5',
                   "five live readings of the container") as e2e:
        assert not e2e.alerts(ALERT)
        exit_ = unrecorded_exit(e2e.cd, e2e.stuck_id)
        try:
            firing = wait_for(lambda: e2e.alerts(ALERT, state="firing"),
                              timeout=GRACE_SECONDS + 90, interval=0.5, what=f"{ALERT} to fire")
            (alert,) = firing
            assert {k: alert["labels"][k] for k in ("namespace", "pod", "container", "severity")} == \
                {"namespace": "e2e-dead", "pod": "stuck", "container": "app", "severity": "warning"}
            assert alert["annotations"]["runbook_url"].endswith(f"/alerts/runbooks/{ALERT}.md")
            # the runtime-health board's panel shows it (on the healthy shared lab it has no data:
            # test_prometheus_e2e.NO_DATA_HERE)
            (expr,) = [t["expr"] for p in lint.panels(json.loads((DASHBOARDS / "runtime-health.json").read_text()))
                       if p["title"] == PANEL for t in p["targets"]]
            shown = e2e.prom.query(lint.substitute(expr, {"job": JOB, "instance": f"127.0.0.1:{e2e.exporter.port}"}))
            assert [(s["metric"]["pod"], s["metric"]["container"]) for s in shown] == [("stuck", "app")]
            assert float(shown[0]["value"][1]) >= GRACE_SECONDS
            # 2.1.9 answers the pod's stats: the other signal of this fault stays at 0
            (unavailable,) = e2e.prom.query(f'max_over_time(cri_stats_pod_sandboxes_unavailable{{job="{JOB}", '
                                            f'reason="task_gone"}}[1m])')
            assert float(unavailable["value"][1]) == 0
            assert not e2e.alerts("CriPodStatsUnavailable")
        finally:
            exit_.release()
