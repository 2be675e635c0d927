"""End to end: a container whose exit containerd could not record (crilab.scenario.unrecorded_exit)
fires CriContainerRunningWithoutCgroup on the real Prometheus (each release of
tests/prometheus_proc.RELEASES), naming that container, on containerd 2.1.9: the version whose pod
stats answer normally, so CriPodStatsUnavailable stays quiet and this alert is the only sign.
Rules are the production expressions with the `for` windows shortened (alerts.settings.fast); the
exporter's own persistence rule (two readings GRACE_SECONDS apart) is not shortened.
"""
from __future__ import annotations

import json
import os
import uuid

import pytest

from alerts.rules import groups
from alerts.settings import fast
from crilab import Containerd, run_pod
from crilab.scenario import SLEEP, unrecorded_exit
from dashboards import DIR as DASHBOARDS, lint
from cri_exporter.running_without_cgroup import GRACE_SECONDS
from tests.exporter_proc import ExporterProcess, processes, wait_for
from tests.prometheus_proc import RELEASES, PrometheusProcess, release, release_id

pytestmark = pytest.mark.containerd

JOB = "cri-exporter"
ALERT = "CriContainerRunningWithoutCgroup"
PANEL = "Containers running without a cgroup"


@pytest.mark.parametrize("runtime_version", ["2.1"], ids=lambda v: f"containerd-{v}", indirect=True)
@pytest.mark.parametrize("prometheus", list(RELEASES), ids=release_id)
def test_an_unrecorded_exit_fires_running_without_cgroup_on_containerd_2(runtime_version, prometheus, lab_dir):
    cd = Containerd(os.path.join(lab_dir, f"e2e-rw-{uuid.uuid4().hex[:6]}"), version=runtime_version).start()
    try:
        with processes() as keep:
            healthy = run_pod(cd, "healthy", "e2e-dead")
            healthy.add_container("app", SLEEP)
            stuck = run_pod(cd, "stuck", "e2e-dead")
            cid = stuck.add_container("app", SLEEP)
            exporter = keep(ExporterProcess(cd.endpoint, "--host-root", "/",
                                            "--collectors", "runtime,containers,stats,cgroups",
                                            "--stats-interval", "1", "--stats-idle-interval", "1"))
            prom = keep(PrometheusProcess([f"127.0.0.1:{exporter.port}"], job=JOB, scrape_interval="1s",
                                          rule_groups=groups(fast()), release=release(prometheus)))
            prom.wait_targets_up()
            wait_for(lambda: prom.query(f'count_over_time(cri_container_cpu_usage_seconds_total{{job="{JOB}", '
                                        f'pod="stuck"}}[1m]) >= 5'),
                     timeout=60, interval=0.5, what="five live readings of the container")
            assert not [a for a in prom.alerts() if a["labels"]["alertname"] == ALERT]

            exit_ = unrecorded_exit(cd, cid)
            try:
                firing = wait_for(lambda: [a for a in prom.alerts() if a["labels"]["alertname"] == ALERT
                                           and a["state"] == "firing"],
                                  timeout=GRACE_SECONDS + 90, interval=0.5, what=f"{ALERT} to fire")
                (alert,) = firing
                assert {k: alert["labels"][k] for k in ("namespace", "pod", "container", "severity")} == \
                    {"namespace": "e2e-dead", "pod": "stuck", "container": "app", "severity": "warning"}
                assert alert["annotations"]["runbook_url"].endswith(f"/alerts/runbooks/{ALERT}.md")
                # the runtime-health board's panel shows it (on the healthy shared lab it has no data:
                # test_prometheus_e2e.NO_DATA_HERE)
                (expr,) = [t["expr"] for p in lint.panels(json.loads((DASHBOARDS / "runtime-health.json").read_text()))
                           if p["title"] == PANEL for t in p["targets"]]
                shown = prom.query(lint.substitute(expr, {"job": JOB, "instance": f"127.0.0.1:{exporter.port}"}))
                assert [(s["metric"]["pod"], s["metric"]["container"]) for s in shown] == [("stuck", "app")]
                assert float(shown[0]["value"][1]) >= GRACE_SECONDS
                # 2.1.9 answers the pod's stats: the other signal of this fault stays at 0
                (unavailable,) = prom.query(f'max_over_time(cri_stats_pod_sandboxes_unavailable{{job="{JOB}", '
                                            f'reason="task_gone"}}[1m])')
                assert float(unavailable["value"][1]) == 0
                assert not [a for a in prom.alerts() if a["labels"]["alertname"] == "CriPodStatsUnavailable"]
            finally:
                exit_.release()
    finally:
        cd.cleanup()
