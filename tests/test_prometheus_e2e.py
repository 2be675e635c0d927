"""End to end: each Prometheus release the project supports (Debian 12's
2.42 and sid's 3.5, tests/prometheus_proc.RELEASES) scrapes `cri-exporter
serve` over the real containerd with the standard pods, loads the alert rules
(production expressions and thresholds, windows shortened through
alerts.settings.fast), and serves every dashboard query. For each release:

- the scrape is healthy and whole: Prometheus stored exactly the series the
  exporter served (Prometheus 3 fails a scrape whose Content-Type it does not
  know, and normalizes histogram `le` values to floats);
- every rule loads and evaluates without error;
- every dashboard query parses and returns data, or is in NO_DATA_HERE with
  the reason it legitimately cannot on this machine;
- the CPU-throttling alert fires for the burner, and the OOM-kill alert for
  a container whose child was OOM-killed and for one that was itself; the
  repeated-OOM alert for the pod whose container was OOM-killed twice, and the
  crash-loop alert for a container that ended three times, and the log alert
  for a container whose log is over 1.5 times containerLogMaxSize (no kubelet
  rotates it here), and the fd alert for a process holding 61 of the 64 fds its
  own soft RLIMIT_NOFILE allows (not for one holding 41);
- that release's promtool accepts the Prometheus config and the exporter's
  text (`check config`, `check metrics`).

One Prometheus per release per session, one release after the other, each
with OOM pods of its own started after it scrapes. And, once: what the
exporter answers to the Accept header each release sends.
"""
from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from alerts.rules import groups
from alerts.settings import fast
from crilab import run_pod
from cri_exporter.cri import api_pb2 as api
from cri_exporter.terminations import exit_code_label
from crilab.scenario import HOG, OOM_LIMIT, oom_exit, start_oom_pod_counted
from dashboards import BOARDS, DIR as DASHBOARDS, lint
from cri_exporter.hostfs import HostFS
from cri_exporter.pod_logs import read_limits
from tests.exporter_proc import parse, wait_for
from tests.runtime_pids import init_pid
from tests.prometheus_proc import RELEASES, PrometheusProcess, PromQLError, release, release_id

# On the newest containerd only: what these tests check (scrapes, rules, alerts, dashboards, each Prometheus
# release) does not depend on the runtime's version, which the rest of the suite covers version by version.
pytestmark = [pytest.mark.containerd, pytest.mark.newest_runtime]

SCRAPE_INTERVAL = "1s"
RATE_INTERVAL = "5s"  # what Grafana's $__rate_interval would be here: >= 4 scrape intervals
JOB = "cri-exporter"  # alerts.settings.PRODUCTION.selector selects it

FAST_RULES = groups(fast())
# Each release's Prometheus sees OOM kills of its own, in namespaces named after it (_oom_namespaces):
# pod "hogger", whose container "hog" lives on after a child of it is OOM-killed, and start_oom_pod's
# pod "oom", whose container "hog" exits OOMKilled.
LIVE_OOM = ("hogger", "hog")
# ...and in the exit namespace a pod whose container ended three times.
CRASHY = ("crashy", "worker")
# The hog is killed until the runtime has reported two of its kills as OOMKilled, at most this many times
# (crilab.scenario.oom_exit: containerd may lose the OOM event of a kill for good and report Error/137).
HOG_KILLS = 4
# ...and a pod whose container writes ~22 MB of log at once: over 1.5 times the kubelet's default
# containerLogMaxSize (10Mi), and no kubelet rotates it here (CriContainerLogNotRotated).
CHATTY = ("chatty", "writer")
CHATTY_COMMAND = ["sh", "-c", "yes " + "a" * 90 + " | head -c 16000000; exec sleep 2147483647"]
# ...and two pods whose process lowers its own soft RLIMIT_NOFILE to 64 and holds fds 0..N open (the shell's
# redirections, inherited by sleep): 61 of 64 (95%) is over CriContainerFdsNearLimit's 90%, 41 of 64 (64%) not.
FD_LIMIT = 64
FDS_NEAR = ("fds-near", "holder", 60)
FDS_CALM = ("fds-calm", "holder", 40)


def fd_holder(last_fd: int) -> list[str]:
    return ["sh", "-c", f"ulimit -n {FD_LIMIT} && for i in $(seq 3 {last_fd}); do eval \"exec $i</dev/null\"; done; "
            "exec sleep 2147483647"]

# Pods the pod-detail board is evaluated for ($container = All), and the
# release's live OOM pod: a query passes when it returns data for one of them.
POD_VARIABLES = [("default", "burner"), ("default", "flaky"), ("shop", "web")]

# Series Prometheus makes itself, for every target and from the alert rules; the rest came from the exporter.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
                     "scrape_series_added", "ALERTS", "ALERTS_FOR_STATE"}

# The Accept header each release sends with the default scrape_protocols (seen with a server that
# logged it): both ask for OpenMetrics first, and take the text format 0.0.4 and anything (*/*).
ACCEPT = {
    "2.42.0": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
              "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "3.5.3": "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
             "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
             "text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
}

# (alertname, labels it must have, why it may fire on this machine)
ALSO_FIRING_HERE = [
    ("CriDoctorCheckFailing", {}, "the lab is not a configured Kubernetes node: doctor checks such as cni.config "
     "and containerd.oom_score_adj fail here"),
    # The disk holding the lab is ~30% free (below the 40% guard) and other processes write to it:
    # predict_linear over the few seconds of history the test has can point below zero within 24h.
    # In production the 6h window and the 1h `for` smooth this out; here `for` is 3s.
    ("CriImageFsPredictedFull", {}, "seconds of history on a shared, 70%-used disk"),
]
# CriCollectorFailing is held to the exporter's own word instead (_failed_collectors): it may fire for a
# collector whose cri_scrape_collector_success Prometheus stored as 0. One failed scrape in the 10 s
# window is over the 10% threshold (in a 5m window it is not). Seen: with containerd 1.6.20 the stats
# collector, while the OOM pod's container exits (ListPodSandboxStats fails whole with NOT_FOUND, "task
# ... not found"); with 2.1.9 the containers collector, under three CPU hogs and other tests beside.

NO_DATA_HERE = {
    ("pod-detail.json", "Block I/O throughput", "A"): "no block I/O is accounted on this VM (kernel 6.18, "
    "cgroup v1): every blkio.throttle.io_service_bytes, the root cgroup's included, reads `Total 0`, so the "
    "exporter has no blkio series to emit",
    ("pod-detail.json", "Block I/O throughput", "B"): "as A: no blkio series on this VM",
    ("pod-detail.json", "Block I/O operations", "A"): "as throughput: no blkio series on this VM",
    ("pod-detail.json", "Block I/O operations", "B"): "as throughput: no blkio series on this VM",
    ("pod-detail.json", "Open files and sockets", "B"): "cri_container_sockets is absent from a confined agent "
    "(Landlock denies the fd links of processes outside it, as the deployments' lack of CAP_SYS_PTRACE does; "
    "docs/install.md, Confinement)",
    ("runtime-health.json", "CRI request errors", "A"): "no CRI call fails against the healthy lab runtime, and "
    "cri_request_errors_total has no series until one does",
    ("pod-detail.json", "Terminations by reason", "B"): "cgroup v1 here: a v1 pod cgroup's oom_kill count is "
    "not hierarchical, so the exporter has no cri_pod_memory_oom_kills_total (cgroup v2 only)",
    ("node-overview.json", "Failing doctor checks", "A"): "empty whenever every doctor check passes (or before "
    "serve's first doctor run)",
    ("pod-detail.json", "Ephemeral storage", "B"): "the lab runs no kubelet: no /var/lib/kubelet, so no nodefs "
    "headroom (test_ephemeral_storage_real.py lays the kubelet's directories out under a host root of its own)",
    ("pod-detail.json", "emptyDir volumes", "A"): "the lab runs no kubelet: its pods have no emptyDir directories",
    ("pod-detail.json", "Ephemeral storage inodes", "B"): "as Ephemeral storage B: no kubelet, no nodefs inode "
    "headroom (test_prometheus_e2e_ephemeral.py holds it to data under a kubelet layout)",
    ("pod-detail.json", "Inodes by emptyDir and writable layer (default profile)", "A"): "as emptyDir volumes: no "
    "kubelet, no emptyDirs (test_prometheus_e2e_ephemeral.py holds it to data under a kubelet layout)",
    ("runtime-health.json", "Containers running without a cgroup", "A"): "no container of the healthy lab runs "
    "without its cgroup, and the family has series only for those that do "
    "(test_prometheus_e2e_running_without_cgroup.py holds it to data with an unrecorded exit)",
}


@pytest.fixture(scope="session", params=list(RELEASES), ids=release_id)
def prom(request, exporter, containerd, pods):
    """A Prometheus of one release over the shared exporter, then the two OOM
    scenarios, so that its counters have samples from before the kill
    (increase() needs them). The OOM pods go with it."""
    p = PrometheusProcess([f"127.0.0.1:{exporter.port}"], job=JOB, scrape_interval=SCRAPE_INTERVAL,
                          rule_groups=FAST_RULES, release=release(request.param))
    live_namespace, exit_namespace = _oom_namespaces(p)
    oom_pods = []
    try:
        p.wait_targets_up()
        pod_name, container = LIVE_OOM
        pod = run_pod(containerd, pod_name, live_namespace)
        oom_pods.append(pod)
        # Its child is OOM-killed once Prometheus holds the container's oom_kill count at 0 (increase()
        # needs a sample from before the kill): the test says when, through a file it makes with ExecSync.
        hog = pod.add_container(container, ["sh", "-c", "until [ -e /tmp/oom-now ]; do sleep 0.1; done; "
                                            "dd if=/dev/zero of=/dev/null bs=64M count=1; exec sleep 2147483647"],
                                memory_limit=OOM_LIMIT)
        wait_for(lambda: p.query(f'cri_container_memory_oom_kills_total{{namespace="{live_namespace}", '
                                 f'pod="{pod_name}", container="{container}"}} == 0'),
                 timeout=60, interval=0.5, what="Prometheus to hold the hog's oom_kill count at 0")
        done = containerd.runtime_stub().ExecSync(api.ExecSyncRequest(container_id=hog, cmd=["touch", "/tmp/oom-now"],
                                                                      timeout=30))
        assert done.exit_code == 0, done.stderr
        started = start_oom_pod_counted(containerd, namespace=exit_namespace)
        oom = started.pod
        oom_pods.append(oom)
        # Every termination counted (issue 15.1): the hog OOM-killed a second time, two in one pod
        # (CriPodOOMKillsRepeated, from the OOMKilled terminations on this cgroup v1 machine), and a
        # container that ended three times (CriContainerCrashLooping). What the runtime reported of
        # each kill is the truth the alerts are held to (test_throttling_and_oom_alerts_fire).
        exits = [*started.lost_oom_events, oom.container_status(oom.containers["hog"][0])]
        while sum(s.reason == "OOMKilled" for s in exits) < 2 and len(exits) < HOG_KILLS:
            exits.append(oom_exit(oom, oom.add_container("hog", HOG, attempt=len(oom.containers["hog"]),
                                                         memory_limit=OOM_LIMIT)))
        p.oom_exits = exits
        print(f"the hog's exits per CRI: {[(s.reason, s.exit_code) for s in exits]}")
        crashy = run_pod(containerd, CRASHY[0], exit_namespace)
        oom_pods.append(crashy)
        for attempt in range(3):
            crashy.wait_exited(crashy.add_container(CRASHY[1], ["sh", "-c", "exit 1"], attempt=attempt), timeout=30)
        chatty = run_pod(containerd, CHATTY[0], exit_namespace)
        oom_pods.append(chatty)
        chatty.add_container(CHATTY[1], CHATTY_COMMAND)
        p.fd_holders = {}
        for pod_name, container, last_fd in (FDS_NEAR, FDS_CALM):
            holder = run_pod(containerd, pod_name, exit_namespace)
            oom_pods.append(holder)
            p.fd_holders[pod_name] = holder.add_container(container, fd_holder(last_fd))
        yield p
    except BaseException:
        print(p.log()[-3000:])
        raise
    finally:
        p.stop()
        for pod in oom_pods:
            pod.remove()


def _oom_namespaces(prom: PrometheusProcess) -> tuple[str, str]:
    """(live, exit): the namespaces of the OOM pods of this Prometheus."""
    slug = prom.release.name.replace(".", "-")
    return f"e2e-oom-live-{slug}", f"e2e-oom-exit-{slug}"


def _exporter_series(text: str) -> set[tuple]:
    """(name, frozenset of labels) of every sample of one /metrics answer, as
    Prometheus stores it: a label with an empty value is no label."""
    return {(name, frozenset((k, v) for k, v in labels if v)) for name, labels in parse(text)}


def _stored_series(prom: PrometheusProcess, instance: str, at: float) -> set[tuple]:
    """The series of `instance` Prometheus holds at `at`, as _exporter_series gives them: without the
    labels Prometheus adds (job, instance) and the series it makes itself."""
    out = set()
    for r in prom.query(f'{{job="{JOB}", instance="{instance}"}}', time_=at):
        labels = dict(r["metric"])
        name = labels.pop("__name__")
        if name not in PROMETHEUS_SERIES:
            del labels["job"], labels["instance"]
            out.add((name, frozenset(labels.items())))
    return out


def _last_scrape(prom: PrometheusProcess, instance: str) -> float:
    """When Prometheus last scraped `instance`: the timestamp of its `up` sample."""
    result = prom.query(f'timestamp(up{{job="{JOB}", instance="{instance}"}})')
    return float(result[0]["value"][1]) if result else 0.0


def test_scrape_is_healthy_and_stores_every_series_served(prom, exporter):
    """`up` is 1 and Prometheus stored, from one scrape, exactly the series the
    exporter served: nothing rejected or renamed on the way in. Under
    Prometheus 3 an unknown or missing Content-Type fails the scrape (no
    fallback_scrape_protocol is set), and a bucket bound written `le="1"`
    would be stored as `le="1.0"` and differ here."""
    instance = f"127.0.0.1:{exporter.port}"
    sel = f'job="{JOB}", instance="{instance}"'
    for _ in range(20):
        served = _exporter_series(exporter.text())
        start = time.time()
        at = wait_for(lambda start=start: (t := _last_scrape(prom, instance)) > start and t, timeout=10,
                      what="a scrape after ours")
        # Compare only a scrape between two equal answers (no pod came or went meanwhile) that Prometheus
        # took whole: with its 1 s scrape timeout a collector may miss its 0.5 s deadline on a busy machine.
        stable = _exporter_series(exporter.text()) == served
        if stable and prom.query(f"up{{{sel}}} == 1 unless on () (cri_scrape_collector_success{{{sel}}} == 0)",
                                 time_=at):
            stored = _stored_series(prom, instance, at)
            assert stored == served, (f"served, not stored: {sorted(served - stored)[:10]}; "
                                      f"stored, not served: {sorted(stored - served)[:10]}")
            (scraped,) = prom.query(f"scrape_samples_scraped{{{sel}}}", time_=at)
            assert int(scraped["value"][1]) == len(served)
            return
    pytest.fail(f"no whole scrape between two equal answers; targets: {prom.api('targets')['activeTargets']}")


def test_histogram_bounds_are_stored_as_served(prom, exporter):
    """Prometheus 3 normalizes `le` to a float (`le="1"` is stored as `1.0`):
    the exporter writes its bounds that way already, so 2.x and 3.x store the
    same series and a query for `le="1.0"` works on both."""
    served = {labels["le"] for labels in parse(exporter.text()).labelsets("cri_request_duration_seconds_bucket")}
    assert {"1.0", "+Inf"} <= served
    result = prom.query(f'group by (le) (cri_request_duration_seconds_bucket{{job="{JOB}"}})')
    assert {r["metric"]["le"] for r in result} == served


def test_rules_load_and_evaluate(prom):
    """Every alert rule is loaded and evaluates without error: a PromQL
    function this release lacks fails the load, a vector matching that
    breaks on the real series shows as health "err"."""
    want = sorted(r["alert"] for g in FAST_RULES for r in g["rules"])

    def evaluated():
        rules = [r for g in prom.rules() for r in g["rules"]]
        # lastEvaluation is Go's zero time, 0001-01-01T00:00:00Z, until the first evaluation
        done = sorted(r["name"] for r in rules) == want and not any(r["lastEvaluation"].startswith("0001-")
                                                                    for r in rules)
        return rules if done else None

    rules = wait_for(evaluated, timeout=20, what="every rule to be evaluated")
    assert [(r["name"], r["lastError"]) for r in rules if r["health"] != "ok"] == []


def test_promtool_checks_config_and_metrics(prom, exporter):
    """This release's promtool accepts the test's Prometheus config with the
    rule file it loads, and lints the exporter's text clean (`check metrics`:
    names, units, HELP)."""
    result = subprocess.run([prom.release.promtool, "check", "config", str(prom.config_path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in FAST_RULES)} rules found" in result.stdout
    result = subprocess.run([prom.release.promtool, "check", "metrics"], input=exporter.text(),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_exporter_answers_the_text_format_to_every_accept(exporter):
    """The text format 0.0.4 with its Content-Type, whatever the Accept header,
    OpenMetrics asked first included (why: docs/install.md, "Prometheus 2 and 3")."""
    for accept in (*ACCEPT.values(), "application/openmetrics-text; version=1.0.0", "text/plain", None):
        status, headers, body = exporter.get("/metrics", {"Accept": accept} if accept else {})
        assert status == 200, (accept, status)
        assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8", (accept, headers)
        assert b"# EOF" not in body and b"\n# TYPE cri_up gauge\ncri_up " in body, (accept, body[-200:])


def _firing(prom: PrometheusProcess, name: str, **labels) -> list[dict]:
    return [a for a in prom.alerts() if a["labels"]["alertname"] == name and a["state"] == "firing"
            and all(a["labels"].get(k) == v for k, v in labels.items())]


def test_throttling_and_oom_alerts_fire(prom, exporter, containerd):
    """The alerts that must fire given what the runtime reported of the OOM pod's
    kills (prom.oom_exits, its ContainerStatus answers): on this cgroup v1 machine
    an instance killed whole is an OOM kill for the alerts only where CRI said
    OOMKilled. The kernel's evidence is gone with the container's cgroup, and the
    pod cgroup's oom_kill counts only its own tasks. So a kill the runtime reported
    as Error/137 (its OOM event lost, crilab.scenario.oom_exit) is an Error here
    as in the runtime; the fixture kills the hog again until two are reported."""
    live_namespace, exit_namespace = _oom_namespaces(prom)
    exits = prom.oom_exits
    oom_kills = sum(s.reason == "OOMKilled" for s in exits)
    hog = {"namespace": exit_namespace, "pod": "oom", "container": "hog"}
    # Every termination of the hog is counted once, with the reason ContainerStatus gave, lost OOM events included.
    truth = Counter((s.reason, exit_code_label(s.exit_code)) for s in exits)
    wait_for(lambda: _terminations(exporter, hog) == truth, timeout=60, interval=0.5,
             what=f"the hog's terminations to be what CRI said: {dict(truth)}")

    expected = {
        "throttled burner": ("CriContainerCPUThrottlingHigh", {"namespace": "default", "pod": "burner", "container": "burn"}),
        "child OOM-killed": ("CriContainerOOMKilled", {"namespace": live_namespace, "pod": LIVE_OOM[0],
                                                       "container": LIVE_OOM[1]}),
        "crash loop": ("CriContainerCrashLooping",
                       {"namespace": exit_namespace, "pod": CRASHY[0], "container": CRASHY[1]}),
        "log not rotated": ("CriContainerLogNotRotated",
                            {"namespace": exit_namespace, "pod": CHATTY[0], "container": CHATTY[1]}),
        "fds near limit": ("CriContainerFdsNearLimit",
                           {"namespace": exit_namespace, "pod": FDS_NEAR[0], "container": FDS_NEAR[1]}),
    }
    # Held to what the runtime reported: the last exit named OOMKilled, two kills named OOMKilled, and
    # three terminations of the hog (its lost OOM events' pods, each its Error/137, and the kills after them).
    expect_oom = {
        "container OOM-killed": (exits[-1].reason == "OOMKilled",
                                 ("CriContainerOOMKilled", {**hog})),
        "OOM-killed twice": (oom_kills >= 2, ("CriPodOOMKillsRepeated", {"namespace": exit_namespace, "pod": "oom"})),
        "hog ended 3 times": (len(exits) >= 3, ("CriContainerCrashLooping", {**hog})),
    }
    expected.update({what: alert for what, (fires, alert) in expect_oom.items() if fires})
    found = {}
    deadline = time.monotonic() + 120  # returns as soon as all fire; a loaded machine needs more rule evaluations
    while len(found) < len(expected) and time.monotonic() < deadline:
        for what, (name, labels) in expected.items():
            if what not in found and (hits := _firing(prom, name, **labels)):
                found[what] = hits[0]
        time.sleep(0.5)  # poll interval of the deadline-bound wait above
    missing = set(expected) - set(found)
    assert not missing, (f"not firing: {missing}; the hog's exits per CRI: {[(s.reason, s.exit_code) for s in exits]}; "
                         f"alerts: {json.dumps(prom.alerts(), indent=1)[:3000]}")
    # ...and what the runtime's reports do not support does not fire
    wrong = [what for what, (fires, (name, labels)) in expect_oom.items() if not fires and _firing(prom, name, **labels)]
    assert not wrong, f"firing without the runtime's report: {wrong}; the hog's exits: {[(s.reason, s.exit_code) for s in exits]}"

    throttled = found["throttled burner"]
    assert throttled["labels"]["severity"] == "info" and throttled["labels"]["job"] == JOB
    assert "default/burner/burn" in throttled["annotations"]["description"]
    assert throttled["annotations"]["runbook_url"].endswith("/alerts/runbooks/CriContainerCPUThrottlingHigh.md")
    # The alert's value is the throttled share of CFS periods, above the 25% threshold. Not more is
    # asserted: on a loaded machine (load 15 on 2 cores, seen) the loop gets less than its 10% quota
    # in some periods and was throttled in 36% of them.
    assert 0.25 < float(throttled["value"]) <= 1
    for what in {"child OOM-killed", "container OOM-killed"} & set(found):
        assert found[what]["labels"]["severity"] == "warning"
        assert found[what]["annotations"]["runbook_url"].endswith("/alerts/runbooks/CriContainerOOMKilled.md")

    # A healthy lab fires nothing else, except what this machine legitimately shows.
    for what, name in (("OOM-killed twice", "CriPodOOMKillsRepeated"), ("crash loop", "CriContainerCrashLooping"),
                       ("hog ended 3 times", "CriContainerCrashLooping")):
        if what in found:
            assert found[what]["labels"]["severity"] == "warning"
            assert found[what]["annotations"]["runbook_url"].endswith(f"/alerts/runbooks/{name}.md")
    assert float(found["crash loop"]["value"]) == 3
    # The alert's value is the live log's size: over 1.5 times containerLogMaxSize, as the exporter read it.
    logs = found["log not rotated"]
    assert logs["labels"]["severity"] == "warning"
    assert logs["annotations"]["runbook_url"].endswith("/alerts/runbooks/CriContainerLogNotRotated.md")
    limit = read_limits(HostFS("/")).max_size_bytes
    assert limit is not None and float(logs["value"]) > 1.5 * limit

    # The alert's value is the highest open/limit share of the container's processes: sleep's 61 of 64
    # (fds 0..60; the shell's redirections it inherited), compared with what /proc says of it.
    fds = found["fds near limit"]
    assert fds["labels"]["severity"] == "warning"
    assert fds["annotations"]["runbook_url"].endswith("/alerts/runbooks/CriContainerFdsNearLimit.md")
    assert float(fds["value"]) == _fd_ratio(containerd, prom.fd_holders[FDS_NEAR[0]]) == (FDS_NEAR[2] + 1) / FD_LIMIT
    # ...and the holder of 41 of 64 does not fire (the "others" check below): at 64%, it is under the 90%.
    assert _fd_ratio(containerd, prom.fd_holders[FDS_CALM[0]]) == (FDS_CALM[2] + 1) / FD_LIMIT
    calm = {"namespace": exit_namespace, "pod": FDS_CALM[0], "container": FDS_CALM[1]}
    assert exporter.scrape().get1("cri_container_file_descriptors_limit_ratio", **calm) == (FDS_CALM[2] + 1) / FD_LIMIT

    if "OOM-killed twice" in found:
        assert float(found["OOM-killed twice"]["value"]) == oom_kills
    if "hog ended 3 times" in found:
        assert float(found["hog ended 3 times"]["value"]) == len(exits)

    allowed = [("CriContainerCPUThrottlingHigh", {}), ("CriContainerOOMKilled", {}),
               ("CriPodOOMKillsRepeated", {"pod": "oom"}), ("CriContainerCrashLooping", {"pod": CRASHY[0]}),
               ("CriContainerLogNotRotated", {"pod": CHATTY[0]}),
               ("CriContainerFdsNearLimit", {"pod": FDS_NEAR[0]})] + \
        [alert for what, alert in expected.items() if what in expect_oom] + \
        [(name, labels) for name, labels, _ in ALSO_FIRING_HERE] + \
        [("CriCollectorFailing", {"collector": c}) for c in _failed_collectors(prom)]
    others = [a["labels"] for a in prom.alerts() if a["state"] == "firing" and not any(
        a["labels"]["alertname"] == name and labels.items() <= a["labels"].items() for name, labels in allowed)]
    assert not others, f"unexpected alerts firing: {others}"


def _failed_collectors(prom: PrometheusProcess) -> set[str]:
    """Collectors the exporter said failed in a scrape Prometheus stored (success 0) in the last 10 minutes."""
    failed = prom.query(f'min_over_time(cri_scrape_collector_success{{job="{JOB}"}}[10m]) == 0')
    return {r["metric"]["collector"] for r in failed}


def _fd_ratio(containerd, container_id: str) -> float:
    """Ground truth from /proc: open fds / soft RLIMIT_NOFILE of the holder's process (its init, as CRI names it)."""
    proc = Path("/proc") / str(init_pid(containerd, container_id))
    limit = next(int(line.split()[3]) for line in (proc / "limits").read_text().splitlines()
                 if line.startswith("Max open files"))
    return len(list((proc / "fd").iterdir())) / limit


def _terminations(exporter, labels: dict) -> Counter:
    """cri_container_terminations_total of one container: {(reason, exit_code): count}."""
    found = exporter.scrape().find("cri_container_terminations_total", **labels)
    return Counter({(dict(k[1])["reason"], dict(k[1])["exit_code"]): int(v) for k, v in found.items()})


def _queries():
    for name in sorted(BOARDS):
        board = json.loads((DASHBOARDS / name).read_text())
        for panel in lint.panels(board):
            for target in panel["targets"]:
                yield (name, panel["title"], target["refId"]), target["expr"]


def test_every_dashboard_query_returns_data(prom, exporter):
    # enough history for the rate windows: 2 x $__rate_interval of samples
    wait_for(lambda: prom.query(f'count_over_time(cri_up{{job="{JOB}"}}[10s]) >= 8'), timeout=20,
             what="ten seconds of scrapes")
    node = {"job": JOB, "instance": f"127.0.0.1:{exporter.port}", "__rate_interval": RATE_INTERVAL,
            "container": ".*"}
    with_data, without, parse_errors = [], [], []
    now = time.time()
    # the exited OOM pod: its termination is the one the terminations panel shows (the standard pods'
    # exits came before the exporter started: its baseline, not counted)
    pod_variables = [*POD_VARIABLES, (_oom_namespaces(prom)[0], LIVE_OOM[0]), (_oom_namespaces(prom)[1], "oom")]
    for key, expr in _queries():
        variants = [dict(node, namespace=ns, pod=pod) for ns, pod in pod_variables] if key[0] == "pod-detail.json" \
            else [node]
        got = False
        for values in variants:
            try:
                if prom.query(lint.substitute(expr, values), time_=now):
                    got = True
                    break
            except PromQLError as err:
                parse_errors.append(f"{key}: {err}")
                break
        (with_data if got else without).append(key)
    assert not parse_errors, "\n".join(parse_errors)
    unexplained = [k for k in without if k not in NO_DATA_HERE]
    assert not unexplained, f"queries without data and without a reason: {unexplained}"
    print(f"\n{len(with_data)} dashboard queries returned data; {len(without)} legitimately did not:")
    for key in without:
        print(f"  {' / '.join(key)}: {NO_DATA_HERE[key]}")
    if now_with_data := [k for k in NO_DATA_HERE if k in with_data]:
        print(f"  (allow-listed but returned data here: {now_with_data})")
