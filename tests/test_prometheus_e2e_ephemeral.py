"""End to end: CriPodEphemeralStorageFillingNode fires on the real Prometheus
(each release of tests/prometheus_proc.RELEASES) for a pod writing into its
emptyDir faster than the node's headroom allows, and neither for a pod
growing slowly (its 4h projection under the headroom) nor for one whose
emptyDir holds data but does not grow.

The lab runs no kubelet, so, as tests/test_ephemeral_storage_real.py does,
the test lays out under a host root of its own what the kubelet would (a
kubelet.service with --root-dir, its config, the pods' emptyDir directories
bind-mounted into their containers), and runs an exporter of its own with
that host root. The config's evictionHard nodefs.available is set, from
statvfs of that filesystem at test time, to what is available less
HEADROOM: the node is HEADROOM away from the kubelet's eviction, give or
take what other processes write meanwhile (and nodefs.inodesFree at 5%, for
the inode panels, which are checked here to show data with the emptyDir
panels, as the shared lab has neither emptyDirs nor nodefs thresholds). The grower adds ~1 MiB a second,
which over the rule's 4h horizon (~14 GiB) is far more than that; the slow
pod 16 KiB a second (~225 MiB in 4h), well under it; the still pod adds
nothing (deriv 0: a pod that does not grow never fires, whatever the headroom,
even a negative one). CriPodEphemeralInodesFillingNode, its inode twin, is proven the same way
with a pod making many small files against a nodefs.inodesFree threshold set INODE_HEADROOM under
the free inodes, the slow, growing and still pods quiet beside it, and its inode count and
annotation compared with `du --inodes` and `find | wc -l`, under the lean profile. Rules are the production expressions with the `for`
windows shortened (alerts.settings.fast); the growth window stays 1h, over
which deriv fits the few seconds of samples there are.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from alerts.rules import groups
from alerts.settings import fast
from crilab import run_pod
from cri_exporter.ephemeral_storage import EMPTY_DIR
from cri_exporter.metric_profiles import LEAN_ALLOW
from dashboards import DIR as DASHBOARDS, lint
from tests.ephemeral_truth import du, gnu_du, kubelet_unit
from tests.exporter_proc import ExporterProcess, processes, wait_for
from tests.prometheus_proc import RELEASES, PrometheusProcess, release, release_id

# On the newest containerd only, like tests/test_prometheus_e2e.py: what is checked is the rule on Prometheus.
pytestmark = [pytest.mark.containerd, pytest.mark.newest_runtime]

JOB = "cri-exporter"  # alerts.settings.PRODUCTION.selector selects it
ALERT = "CriPodEphemeralStorageFillingNode"
NAMESPACE = "e2e-ephemeral"
ROOT_DIR = "/data/kubelet"
LOGS_DIR = "/data/pod-logs"
HEADROOM = 2 * 1024 ** 3
HORIZON = 4 * 3600  # alerts.settings: ephemeral_growth_horizon_seconds
# 256 KiB every 0.25 s for a minute: ~1 MiB/s, 60 MiB at most; then it holds what it wrote.
GROWER = ("i=0; while [ $i -lt 240 ]; do dd if=/dev/zero of=/cache/f$i bs=64k count=4 2>/dev/null; "
          "i=$((i+1)); sleep 0.25; done; exec sleep 2147483647")
# 16 KiB a second for ten minutes.
SLOW = ("i=0; while [ $i -lt 600 ]; do dd if=/dev/zero of=/cache/f$i bs=16k count=1 2>/dev/null; "
        "i=$((i+1)); sleep 1; done; exec sleep 2147483647")
# 1 MiB once, then nothing: usage, but no growth.
STILL = "dd if=/dev/zero of=/cache/blob bs=64k count=16 2>/dev/null; touch /cache/done; exec sleep 2147483647"


def _emptydir_pod(containerd, host, name: str, command: str):
    pod = run_pod(containerd, name, namespace=NAMESPACE, log_root=host / LOGS_DIR.lstrip("/"))
    cache = host / ROOT_DIR.lstrip("/") / "pods" / pod.uid / "volumes" / EMPTY_DIR / "cache"
    cache.mkdir(parents=True)
    pod.add_container("app", ["sh", "-c", command], mounts={"/cache": str(cache)})
    return pod, cache


@pytest.fixture
def exporter_args() -> tuple[str, ...]:
    """More flags for the node's exporter: a test parametrizes it (the lean profile)."""
    return ()


@pytest.fixture(params=list(RELEASES), ids=release_id)
def node(request, containerd, tmp_path, exporter_args):
    """(Prometheus, the nodefs threshold in bytes, the still pod's emptyDir, start_grower,
    set_inodes_free, start_pod(name, command) -> (pod, its emptyDir)) over an exporter whose host root says the node is HEADROOM above the
    kubelet's nodefs.available eviction (and nodefs.inodesFree at 5% until set otherwise)."""
    host = tmp_path / "host"
    root = host / ROOT_DIR.lstrip("/")
    root.mkdir(parents=True)
    st = os.statvfs(root)
    threshold_ki = (st.f_bavail * st.f_frsize - HEADROOM) // 1024

    def set_inodes_free(threshold: str | float) -> tuple[int, int]:
        """The config's nodefs.inodesFree (the exporter reads the config again at each walk); a float
        is that share of the free inodes now, as an absolute threshold. -> (free inodes, threshold)."""
        free = os.statvfs(root).f_ffree
        if isinstance(threshold, float):
            threshold = str(int(free * threshold))
        kubelet_unit(host, ROOT_DIR, LOGS_DIR, eviction=f"evictionHard:\n  nodefs.available: {threshold_ki}Ki\n"
                     f"  nodefs.inodesFree: \"{threshold}\"\n")
        return free, int(threshold) if threshold.isdigit() else -1

    set_inodes_free("5%")
    pods = []
    try:
        # Logs printed if the setup fails; stopped before the pods go.
        with processes() as keep:
            still, still_cache = _emptydir_pod(containerd, host, "still", STILL)
            pods.append(still)
            wait_for(lambda: (still_cache / "done").exists(), timeout=60, what="the still pod to write its 1 MiB")
            exporter = keep(ExporterProcess(containerd.endpoint, "--host-root", str(host),
                                            "--collectors", "ephemeral_storage,stats,containers",
                                            "--stats-interval", "1", "--ephemeral-storage-interval", "1",
                                            *exporter_args))
            prom = keep(PrometheusProcess([f"127.0.0.1:{exporter.port}"], job=JOB, scrape_interval="1s",
                                          rule_groups=groups(fast()), release=release(request.param)))
            prom.wait_targets_up()

            def start_pod(name: str, command: str):
                pod, cache = _emptydir_pod(containerd, host, name, command)
                pods.append(pod)
                return pod, cache

            def start_grower():
                for name, command in (("slow", SLOW), ("grower", GROWER)):
                    start_pod(name, command)

            yield prom, threshold_ki * 1024, still_cache, start_grower, set_inodes_free, start_pod
    finally:
        for pod in pods:
            pod.remove()


def _firing(prom: PrometheusProcess, pod: str, alert: str = ALERT) -> list[dict]:
    return [a for a in prom.alerts() if a["labels"]["alertname"] == alert and a["state"] == "firing"
            and a["labels"].get("namespace") == NAMESPACE and a["labels"].get("pod") == pod]


def _wait_firing(prom: PrometheusProcess, pod: str, alert: str, unit: str) -> dict:
    """The alert firing for `pod`; on a timeout, what Prometheus held of the pods' usage and the headroom."""
    try:
        (firing,) = wait_for(lambda: _firing(prom, pod, alert), timeout=120, interval=0.5,
                             what=f"{alert} to fire for the {pod}")
    except AssertionError:
        print(prom.query(f'cri_pod_ephemeral_storage_{unit}{{job="{JOB}", namespace="{NAMESPACE}"}}'))
        print(prom.query(f'cri_eviction_headroom_{unit}{{job="{JOB}"}}'))
        raise
    return firing


def test_ephemeral_storage_alert_fires_for_a_growing_pod_only(node):
    prom, threshold, still_cache, start_grower, _, _ = node
    pod_sel = f'job="{JOB}", namespace="{NAMESPACE}"'
    # Prometheus holds the kubelet's threshold as the exporter read it from the config...
    wait_for(lambda: prom.query(f'cri_eviction_threshold_bytes{{job="{JOB}", signal="nodefs.available", '
                                f'path="{ROOT_DIR}"}} == {threshold}'),
             timeout=60, what="Prometheus to hold the nodefs.available threshold set in the kubelet config")
    # ...and the still pod's emptyDir, as du counts it, for a few walks before the grower starts.
    still_bytes = du(still_cache)[0]
    still = f'cri_pod_ephemeral_storage_bytes{{{pod_sel}, pod="still", source="emptydir"}}'
    wait_for(lambda: prom.query(f'count_over_time({still}[1h]) >= 5 and {still} == {still_bytes}'),
             timeout=60, interval=0.5, what=f"five samples of the still pod's emptyDir at {still_bytes} bytes")
    start_grower()
    alert = _wait_firing(prom, "grower", ALERT, "bytes")
    assert alert["labels"]["severity"] == "warning"
    assert alert["annotations"]["runbook_url"].endswith(f"/alerts/runbooks/{ALERT}.md")
    # Its value is the growth projected over 4h: more than the headroom Prometheus holds now, which is
    # about HEADROOM (other processes on the disk move it; the grower's own 60 MiB at most shrinks it).
    (headroom,) = prom.query(f'cri_eviction_headroom_bytes{{job="{JOB}", signal="nodefs.available"}}')
    assert float(alert["value"]) > float(headroom["value"][1])
    assert float(alert["value"]) > HEADROOM
    # The grower's emptyDir grew in Prometheus; the still pod's did not, and it does not fire.
    assert prom.query(f'deriv(cri_pod_ephemeral_storage_bytes{{{pod_sel}, pod="grower", source="emptydir"}}[1h]) > 0')
    assert prom.query(f'deriv({still}[1h]) == 0')
    # The slow pod grew over ten walks, and its projection stays under the headroom: the alert
    # compares with it (not merely growth > 0), and neither it nor the still pod is even pending.
    slow = f'cri_pod_ephemeral_storage_bytes{{{pod_sel}, pod="slow", source="emptydir"}}'
    wait_for(lambda: prom.query(f'changes({slow}[1h]) >= 10'), timeout=120, interval=0.5,
             what="ten walks of the slow pod's growth")
    (projected,) = prom.query(f'deriv({slow}[1h]) * {HORIZON}')
    assert 0 < float(projected["value"][1]) < HEADROOM / 2
    (headroom,) = prom.query(f'cri_eviction_headroom_bytes{{job="{JOB}", signal="nodefs.available"}}')
    assert float(projected["value"][1]) < float(headroom["value"][1])
    named = [a["labels"]["pod"] for a in prom.alerts() if a["labels"]["alertname"] == ALERT]
    assert "slow" not in named and "still" not in named, prom.alerts()


# The dashboard panels on what this test's kubelet layout has and the shared lab's lacks (emptyDirs,
# the kubelet's nodefs thresholds: tests/test_prometheus_e2e.py's NO_DATA_HERE), those of the
# lean profile and those marked "(default profile)" alike.
EPHEMERAL_FAMILIES = {"cri_pod_ephemeral_storage_bytes", "cri_pod_ephemeral_storage_inodes", "cri_pod_emptydir_bytes",
                      "cri_pod_emptydir_inodes", "cri_eviction_headroom_bytes", "cri_eviction_headroom_inodes"}


def _ephemeral_queries() -> list[tuple[str, str, str, str]]:
    out = []
    for name in ("pod-detail.json", "node-overview.json"):
        for panel in lint.panels(json.loads((DASHBOARDS / name).read_text())):
            if lint.panel_metrics(panel) & EPHEMERAL_FAMILIES:
                out += [(name, panel["title"], t["refId"], t["expr"]) for t in panel["targets"]]
    return out


def test_ephemeral_panels_show_the_pods_emptydir_and_the_nodefs_headroom(node):
    prom, _, still_cache, _, _, _ = node
    queries = _ephemeral_queries()
    assert {title for _, title, _, _ in queries} >= {
        "Ephemeral storage", "emptyDir volumes", "Ephemeral storage inodes",
        "Inodes by emptyDir and writable layer (default profile)", "Headroom to disk eviction",
        "Inode headroom to disk eviction", "Pods by ephemeral inodes (top 10)", "Pods by ephemeral storage (top 10)"}
    instance = prom.query(f'up{{job="{JOB}"}}')[0]["metric"]["instance"]
    values = {"job": JOB, "instance": instance, "namespace": NAMESPACE, "pod": "still", "container": ".*",
              "__rate_interval": "5s"}
    # The still pod's emptyDir as du counts it, bytes and inodes, in Prometheus.
    still_bytes, still_inodes = du(still_cache)
    sel = f'job="{JOB}", namespace="{NAMESPACE}", pod="still", volume="cache"'
    wait_for(lambda: prom.query(f'cri_pod_emptydir_bytes{{{sel}}} == {still_bytes} '
                                f'and on () cri_pod_emptydir_inodes{{{sel}}} == {still_inodes}'),
             timeout=60, interval=0.5, what=f"the still pod's emptyDir at {still_bytes} bytes, {still_inodes} inodes")
    wait_for(lambda: prom.query(f'cri_eviction_headroom_inodes{{job="{JOB}", signal="nodefs.inodesFree"}} > 0'),
             timeout=60, what="the nodefs inode headroom")
    # The imagefs signals are not here: the runtime's image filesystem is not under this host root
    # (test_prometheus_e2e.py, over the lab's own, holds those queries to data).
    empty = [(name, title, ref) for name, title, ref, expr in queries
             if "imagefs" not in expr and not prom.query(lint.substitute(expr, values))]
    assert not empty, f"ephemeral panels' queries without data: {empty}"


def test_nodefs_inodes_alert_fires_once_free_inodes_fall_under_twice_the_threshold(node):
    """CriNodefsInodesNearEviction: not at the default 5% on this disk (far more inodes free),
    and firing once the kubelet's threshold is set to 60% of the free inodes (the headroom is
    then about 40% of them, less than the threshold)."""
    prom, _, _, _, set_inodes_free, _ = node
    alert, sel = "CriNodefsInodesNearEviction", f'job="{JOB}", signal="nodefs.inodesFree", path="{ROOT_DIR}"'
    # first the default threshold, under half the free inodes here, for several evaluations
    wait_for(lambda: prom.query(f'count_over_time(cri_eviction_threshold_inodes{{{sel}}}[1h]) >= 5 '
                                f'and cri_eviction_headroom_inodes{{{sel}}} > cri_eviction_threshold_inodes{{{sel}}}'),
             timeout=60, interval=0.5, what="five samples of the nodefs inode threshold, well under the headroom")
    assert not [a for a in prom.alerts() if a["labels"]["alertname"] == alert], prom.alerts()
    free, threshold = set_inodes_free(0.6)
    try:
        (firing,) = wait_for(lambda: [a for a in prom.alerts() if a["labels"]["alertname"] == alert
                                      and a["state"] == "firing"], timeout=90, interval=0.5, what=f"{alert} to fire")
    except AssertionError:
        print(prom.query(f'cri_eviction_headroom_inodes{{job="{JOB}"}}'), prom.query(f'cri_eviction_threshold_inodes{{job="{JOB}"}}'))
        raise
    assert firing["labels"]["path"] == ROOT_DIR and firing["labels"]["severity"] == "warning"
    assert firing["annotations"]["runbook_url"].endswith(f"/alerts/runbooks/{alert}.md")
    (held,) = prom.query(f'cri_eviction_threshold_inodes{{{sel}}}')
    assert float(held["value"][1]) == threshold
    # Its value is the headroom: the free inodes less the threshold, as statvfs says (other processes
    # on this disk move it by some thousands at most; the threshold is millions here).
    headroom = float(firing["value"])
    assert 0 < headroom < threshold
    assert abs(headroom - (free - threshold)) < 0.05 * free


INODE_ALERT = "CriPodEphemeralInodesFillingNode"
INODE_HEADROOM = 200_000
# Many small files, as a cache or a spool makes them: 60 directories of 200 empty files, one directory every
# half second (~400 inodes a second: millions in the rule's 4h), 12,061 inodes with the emptyDir and the
# marker; then it holds them. The slow pod and the grower make 1 and 4 files a second (14,400 and 57,600 in
# 4h), the still pod none: all under INODE_HEADROOM.
FILER = ("i=0; while [ $i -lt 60 ]; do mkdir /cache/d$i; j=0; while [ $j -lt 200 ]; do : > /cache/d$i/f$j; "
         "j=$((j+1)); done; i=$((i+1)); sleep 0.5; done; touch /cache/done; exec sleep 2147483647")


def _humanized(description: str, pattern: str) -> float:
    """A number the annotation's `humanize` wrote (Go's %.4g with k/M/G suffixes), at `pattern`'s group."""
    match = re.search(pattern, description)
    assert match, (pattern, description)
    number, suffix = re.fullmatch(r"([0-9.]+)([kMG]?)", match.group(1)).groups()  # type: ignore[union-attr]
    return float(number) * {"": 1, "k": 1e3, "M": 1e6, "G": 1e9}[suffix]


def _find_count(path: Path) -> int:
    """`find PATH -xdev | wc -l`: every entry, the top included (no hard links here, so du --inodes's count)."""
    found = subprocess.run(f"find {path} -xdev | wc -l", shell=True, capture_output=True, text=True, check=True)
    return int(found.stdout)


@pytest.mark.parametrize("exporter_args", [("--metrics-allow", LEAN_ALLOW)], ids=["lean"])
def test_pod_inodes_alert_fires_for_a_pod_making_many_files_only(node):
    """Under the lean profile (cri_exporter/metric_profiles.py), the one a large fleet serves: the alert
    must fire there too, on the families it keeps."""
    prom, _, still_cache, start_grower, set_inodes_free, start_pod = node
    pod_sel = f'job="{JOB}", namespace="{NAMESPACE}"'
    node_sel = f'job="{JOB}", signal="nodefs.inodesFree", path="{ROOT_DIR}"'
    instance = prom.query(f'up{{job="{JOB}"}}')[0]["metric"]["instance"]
    # The kubelet's nodefs.inodesFree threshold INODE_HEADROOM under the free inodes now (other processes
    # on this disk move them by thousands at most), held by Prometheus as the exporter read it.
    threshold = os.statvfs(still_cache).f_ffree - INODE_HEADROOM
    set_inodes_free(str(threshold))
    wait_for(lambda: prom.query(f'cri_eviction_threshold_inodes{{{node_sel}}} == {threshold}'), timeout=60,
             interval=0.5, what="Prometheus to hold the nodefs.inodesFree threshold set in the kubelet config")
    # The slow pod and the grower make files too, for ten walks before the filer starts.
    start_grower()
    slow = f'sum(cri_pod_ephemeral_storage_inodes{{{pod_sel}, pod="slow", source=~"emptydir|logs"}})'
    wait_for(lambda: prom.query(f'deriv({slow}[1h:1s]) > 0 and changes({slow}[1h:1s]) >= 10'),
             timeout=120, interval=0.5, what="ten walks of the slow pod's growing inodes")
    filer, cache = start_pod("filer", FILER)
    alert = _wait_firing(prom, "filer", INODE_ALERT, "inodes")
    assert alert["labels"]["severity"] == "warning"
    assert (alert["labels"]["signal"], alert["labels"]["path"]) == ("nodefs.inodesFree", ROOT_DIR)
    assert alert["annotations"]["runbook_url"].endswith(f"/alerts/runbooks/{INODE_ALERT}.md")
    # Its value is the inodes the filer would add in 4h: more than the headroom Prometheus holds.
    (headroom,) = prom.query(f'cri_eviction_headroom_inodes{{{node_sel}}}')
    assert float(alert["value"]) > float(headroom["value"][1]) > 0
    description = alert["annotations"]["description"]
    assert description.startswith(f"Pod {NAMESPACE}/filer on {instance} will create "), description
    assert f"above the kubelet's nodefs.inodesFree eviction threshold on {ROOT_DIR}." in description
    assert "(its emptyDirs and logs)" in description
    assert abs(_humanized(description, r"will create (\S+) more inodes") - float(alert["value"])) \
        <= 1e-3 * float(alert["value"])
    # The headroom it names is one Prometheus held over the last seconds (the node's other processes move
    # free inodes by thousands a second at times: 400,000 were freed during one run here), and what
    # Prometheus holds is what statvfs gives, as in the test below.
    named_headroom = _humanized(description, r"more than the (\S+) free inodes")
    (low,) = prom.query(f'min_over_time(cri_eviction_headroom_inodes{{{node_sel}}}[20s])')
    (high,) = prom.query(f'max_over_time(cri_eviction_headroom_inodes{{{node_sel}}}[20s])')
    assert float(low["value"][1]) * 0.999 <= named_headroom <= float(high["value"][1]) * 1.001, (description, low, high)
    free = os.statvfs(still_cache).f_ffree
    assert abs(float(headroom["value"][1]) - (free - threshold)) < 0.05 * free
    # Ground truth, once the filer is done: the inodes the alert sums (its emptyDir and its log directory)
    # are what du --inodes and find | wc -l count on the disk...
    wait_for(lambda: (cache / "done").exists(), timeout=120, what="the filer to make its files")
    logs = Path(filer.config.log_directory)
    truth = gnu_du(cache)[1] + gnu_du(logs)[1]
    assert truth == _find_count(cache) + _find_count(logs) >= 12_061
    used = f'sum(cri_pod_ephemeral_storage_inodes{{{pod_sel}, pod="filer", source=~"emptydir|logs"}})'
    try:
        wait_for(lambda: prom.query(f"{used} == {truth}"), timeout=60, interval=0.5,
                 what=f"Prometheus to hold the filer's {truth} inodes")
    except AssertionError:
        print(prom.query(f'cri_pod_ephemeral_storage_inodes{{{pod_sel}, pod="filer"}}'))
        raise
    # ...and the alert, still firing (the growth of the last hour still projects past the headroom), says so.
    try:
        wait_for(lambda: [a for a in _firing(prom, "filer", INODE_ALERT) if abs(_humanized(
                     a["annotations"]["description"], r"The pod holds (\S+) inodes there now") - truth) <= 5e-4 * truth],
                 timeout=60, interval=0.5, what=f"the alert's description to say the filer holds {truth} inodes")
    except AssertionError:
        print(_firing(prom, "filer", INODE_ALERT))
        raise
    # The lean profile was in force: the volumes' inodes, outside it, were never served.
    assert not prom.query(f'count_over_time(cri_pod_emptydir_inodes{{job="{JOB}"}}[1h])')
    assert prom.query(f'cri_pod_emptydir_bytes{{{pod_sel}, pod="filer", volume="cache"}}')
    # The slow pod, the grower and the still pod grew less (or not at all): never even pending.
    named = [a["labels"]["pod"] for a in prom.alerts() if a["labels"]["alertname"] == INODE_ALERT]
    assert named == ["filer"], prom.alerts()
    (projected,) = prom.query(f'deriv({slow}[1h:1s]) * 4 * 3600')
    assert 0 < float(projected["value"][1]) < INODE_HEADROOM
