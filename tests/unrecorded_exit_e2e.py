"""The setup the unrecorded-exit end-to-end tests share (tests/test_prometheus_e2e_pod_stats.py,
tests/test_prometheus_e2e_running_without_cgroup.py): a containerd of the test's own (the fault
breaks it), a healthy and a `stuck` pod of one sleeping container each, an exporter over it and a
real Prometheus scraping it every second with the production rules, `for` windows shortened."""
from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from alerts.rules import groups
from alerts.settings import fast
from crilab import Containerd, run_pod
from crilab.scenario import SLEEP
from tests.exporter_proc import ExporterProcess, processes, wait_for
from tests.prometheus_proc import PrometheusProcess, release

JOB = "cri-exporter"


@dataclass
class StuckLab:
    cd: Containerd
    stuck_id: str  # the container of pod `stuck`, the one whose exit the test leaves unrecorded
    exporter: ExporterProcess
    prom: PrometheusProcess

    def alerts(self, *names: str, state: str | None = None) -> list[dict]:
        """Prometheus's alerts of these names (pending or firing; only `state` if given)."""
        return [a for a in self.prom.alerts()
                if a["labels"]["alertname"] in names and state in (None, a["state"])]


@contextlib.contextmanager
def stuck_lab(lab_dir: str, runtime_version: str, prometheus: str, namespace: str, collectors: str,
              ready: str, what: str) -> Iterator[StuckLab]:
    """The lab, yielded once the PromQL `ready` answers (within 60 s); torn down after the block,
    the servers' logs printed if it raised."""
    cd = Containerd(os.path.join(lab_dir, f"{namespace}-{uuid.uuid4().hex[:6]}"), version=runtime_version).start()
    try:
        with processes() as keep:
            run_pod(cd, "healthy", namespace).add_container("app", SLEEP)
            stuck_id = run_pod(cd, "stuck", namespace).add_container("app", SLEEP)
            exporter = keep(ExporterProcess(cd.endpoint, "--host-root", "/", "--collectors", collectors,
                                            "--stats-interval", "1", "--stats-idle-interval", "1"))
            prom = keep(PrometheusProcess([f"127.0.0.1:{exporter.port}"], job=JOB, scrape_interval="1s",
                                          rule_groups=groups(fast()), release=release(prometheus)))
            prom.wait_targets_up()
            wait_for(lambda: prom.query(ready), timeout=60, interval=0.5, what=what)
            yield StuckLab(cd, stuck_id, exporter, prom)
    finally:
        cd.cleanup()
