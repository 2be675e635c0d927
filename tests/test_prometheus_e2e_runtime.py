"""End to end: the runtime-health alerts (issue 15.4) fire on the real
Prometheus (each release of tests/prometheus_proc.RELEASES) for what they
name, against a containerd the test breaks in three ways:

- CriRuntimeRestarted: the containerd is SIGKILLed and started again (its
  start time, which Prometheus held from before, changes once);
- CriRuntimeShimsLeaked: it comes back without the task bundles of one pod,
  which is then removed over CRI (crilab.scenario.leak_sandbox), so that pod's
  shim serves a sandbox its CRI no longer lists; the pod kept from before and
  a pod started afterwards are known and their shims are not counted;
- CriRuntimeFdsNearLimit: its soft RLIMIT_NOFILE is lowered (prlimit, as a
  unit's LimitNOFILE= would set it) to just above the descriptors it holds,
  so that they are over 80% of it.

Before the breakage none of the three is even pending. Each alert's value is
held to ground truth: one restart; as many leaked shims as were running
the leaked pod's one (still alive, per /proc); the open/limit share that
/proc/<pid>/fd and /proc/<pid>/limits give, limit as set. Rules are the
production expressions with the `for` windows shortened
(alerts.settings.fast).
"""
from __future__ import annotations

import math
import os
import resource
import uuid
from pathlib import Path

import psutil
import pytest

from alerts.rules import groups
from alerts.settings import fast
from crilab import Containerd, run_pod
from crilab.scenario import SLEEP, leak_sandbox
from tests.exporter_proc import ExporterProcess, processes, wait_for
from tests.prometheus_proc import RELEASES, PrometheusProcess, release, release_id

# On the newest containerd only, like the other Prometheus tests: the subject is the rules on Prometheus.
# How each version leaks a shim and reports its processes is in tests/test_runtime_processes_real.py.
pytestmark = [pytest.mark.containerd, pytest.mark.newest_runtime]

JOB = "cri-exporter"  # alerts.settings.PRODUCTION.selector selects it
SHIM = "containerd-shim-runc-v2"
ALERTS = ("CriRuntimeRestarted", "CriRuntimeShimsLeaked", "CriRuntimeFdsNearLimit")
# The descriptors containerd holds are this share of the lowered limit: over the alert's 80%, and
# a few spare so that it still answers the exporter (a fresh 2.1.9 holds about 30).
FD_SHARE = 0.9
# A shim unknown to CRI counts as leaked past this age (production: 120 s, the kubelet's
# runtimeRequestTimeout); the leaked ones are older by the time the new containerd is up.
LEAK_GRACE = 5


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _soft_nofile(pid: int) -> int:
    line = next(line for line in Path(f"/proc/{pid}/limits").read_text().splitlines()
                if line.startswith("Max open files"))
    return int(line.split()[3])


@pytest.fixture(params=list(RELEASES), ids=release_id)
def broken(request, runtime_version, lab_dir):
    """(Prometheus, the exporter, the containerd, the leaked shims' pids): a containerd of its own
    (this one is killed and loses a pod's state), an exporter and a Prometheus over it, then the breakage."""
    cd = Containerd(os.path.join(lab_dir, f"e2e-rt-{uuid.uuid4().hex[:6]}"), version=runtime_version).start()
    leaked_pod = None
    lowered: tuple[int, tuple[int, int]] | None = None
    try:
        # The exporter and Prometheus: logs printed if the setup fails, stopped before the containerd goes.
        with processes() as keep:
            kept = run_pod(cd, "kept", "e2e-runtime")
            kept.add_container("app", SLEEP)
            leaky = run_pod(cd, "leaky", "e2e-runtime")
            leaky.add_container("app", SLEEP)
            exporter = keep(ExporterProcess(cd.endpoint, "--host-root", "/", "--collectors", "runtime,runtime_processes",
                                            "--runtime-process-interval", "0.5",
                                            "--runtime-shim-leak-grace", str(LEAK_GRACE)))
            prom = keep(PrometheusProcess([f"127.0.0.1:{exporter.port}"], job=JOB, scrape_interval="1s",
                                          rule_groups=groups(fast()), release=release(request.param)))
            prom.wait_targets_up()
            daemon = f'job="{JOB}", process="containerd"'
            # history from before: changes() needs the first start time, and the fd share sampled unalarmed
            wait_for(lambda: prom.query(f'count_over_time(cri_runtime_process_start_time_seconds{{{daemon}}}[1m]) >= 5 '
                                        f'and on () count_over_time(cri_runtime_shims_leaked{{job="{JOB}"}}[1m]) >= 5'),
                     timeout=60, interval=0.5, what="five samples of containerd's start time and of the leaked shims")
            quiet = [a for a in prom.alerts() if a["labels"]["alertname"] in ALERTS]
            assert not quiet, f"pending or firing before anything broke: {quiet}"

            # SIGKILL, the pod's bundles moved away, started again, the pod removed: a restart and a leaked shim
            leaked_pod = leak_sandbox(cd, leaky)
            assert psutil.pid_exists(leaked_pod.shim_pid)
            after = run_pod(cd, "after-leak", "e2e-runtime")  # a shim the new containerd knows
            after.add_container("app", SLEEP)
            pid = cd.pid
            assert pid is not None
            original = resource.prlimit(pid, resource.RLIMIT_NOFILE)
            soft = math.ceil(_fds(pid) / FD_SHARE)
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, original[1]))
            lowered = (pid, original)
            yield prom, exporter, cd, [leaked_pod.shim_pid], soft
    finally:
        if lowered and cd.pid == lowered[0]:
            resource.prlimit(lowered[0], resource.RLIMIT_NOFILE, lowered[1])  # cleanup starts shims again
        cd.cleanup()  # kills the shims serving its socket, the leaked ones too
        if leaked_pod:
            leaked_pod.forget()


def _firing(prom: PrometheusProcess, name: str) -> list[dict]:
    return [a for a in prom.alerts() if a["labels"]["alertname"] == name and a["state"] == "firing"]


def test_runtime_alerts_fire_for_a_restart_leaked_shims_and_fds_near_the_limit(broken):
    prom, exporter, cd, leaked, soft = broken
    found = {}

    def all_firing():
        for name in ALERTS:
            if name not in found and (hits := _firing(prom, name)):
                found[name] = hits
        return len(found) == len(ALERTS)

    try:
        wait_for(all_firing, timeout=120, interval=0.5, what=f"{', '.join(ALERTS)} to fire")
    except AssertionError:
        print(prom.query(f'{{job="{JOB}", __name__=~"cri_runtime_(process_start_time_seconds|shims_leaked|'
                         f'process_open_fds|process_max_fds)"}}'))
        raise
    for name, hits in found.items():
        for alert in hits:
            assert alert["labels"]["severity"] == "warning", alert
            assert alert["annotations"]["runbook_url"].endswith(f"/alerts/runbooks/{name}.md"), alert

    # one restart of the daemon: the shims' series are no daemon's and never restart
    (restarted,) = found["CriRuntimeRestarted"]
    assert restarted["labels"]["process"] == "containerd"
    assert float(restarted["value"]) == 1

    # the leaky pod's shim, still alive; those of the pod kept and of the pod started after are known
    (shims,) = found["CriRuntimeShimsLeaked"]
    assert shims["labels"]["process"] == SHIM
    alive = [pid for pid in leaked if psutil.pid_exists(pid)]
    assert float(shims["value"]) == len(alive) == len(leaked)
    assert len(cd.shim_pids()) == len(leaked) + 2

    # the daemon's open/limit share, against /proc: read before and after the alert, until they agree
    (fds,) = found["CriRuntimeFdsNearLimit"]
    assert fds["labels"]["process"] == "containerd"
    pid = cd.pid
    assert pid is not None and _soft_nofile(pid) == soft
    (limit,) = prom.query(f'cri_runtime_process_max_fds{{job="{JOB}", process="containerd"}}')
    assert float(limit["value"][1]) == soft
    assert float(fds["value"]) > 0.8

    def agreed():
        first = _fds(pid)
        (alert,) = _firing(prom, "CriRuntimeFdsNearLimit") or [None]
        return alert is not None and _fds(pid) == first and float(alert["value"]) == first / soft

    wait_for(agreed, timeout=30, interval=0.5, what="the alert's fd share to be what /proc says, /proc holding still")
