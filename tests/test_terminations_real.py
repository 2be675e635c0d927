"""Every termination counted once, against each containerd of the lab: 1.6.20
and 1.7.24 (polling only: 1.7 hands each event to one subscriber, so the exporter
must never subscribe there) and 2.1.9 (GetContainerEvents, which 2.x broadcasts).

Ground truth is what the runtime says: ContainerStatus of each instance still
listed, and the number of instances the test made end. Instances the test
removes before a scrape (as the kubelet removes a crash-looping container's
older instances) are known to the poll only by their attempt number, so on
1.x they count as reason "Unknown"; on 2.1.9 the event stream names them.
"""
from __future__ import annotations

import os
import signal
import uuid
from collections import Counter
from pathlib import Path

import pytest

from cri_exporter.cri import api_pb2 as api
from cri_exporter.terminations import exit_code_label
from crilab import Containerd
from crilab.pods import Pod, run_pod
from crilab.scenario import OOM_LIMIT, SLEEP
from tests.exporter_proc import ExporterProcess, wait_for
from tests.runtime_pids import init_pid

pytestmark = pytest.mark.containerd

HOG = ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]
METRIC = "cri_container_terminations_total"


@pytest.fixture(scope="module")
def runtime(runtime_version, lab_dir):
    """A private containerd of the version (the shared one is not killed mid-stream)."""
    cd = Containerd(os.path.join(lab_dir, f"term-{runtime_version}"), version=runtime_version).start()
    try:
        yield runtime_version, cd
    finally:
        cd.cleanup()


def _exporter(cd: Containerd, lab_dir: str, name: str) -> ExporterProcess:
    return ExporterProcess(cd.endpoint, "--collectors", "runtime,terminations", "--host-root", "/", "--log-level", "debug",
                           log_path=Path(lab_dir) / f"exporter-{name}-{uuid.uuid4().hex[:6]}.log")


def _counts(exporter: ExporterProcess, pod: Pod, container: str) -> Counter:
    found = exporter.scrape().find(METRIC, namespace=pod.namespace, pod=pod.name, container=container)
    return Counter({(dict(k[1])["reason"], dict(k[1])["exit_code"]): int(v) for k, v in found.items()})


def _wait_counts(exporter: ExporterProcess, pod: Pod, container: str, want: Counter, what: str) -> None:
    """Wait for the counts to be `want` (the machine is shared and slow: a generous deadline), saying what was last seen."""
    last = []

    def reached():
        last[:] = [_counts(exporter, pod, container)]
        return last[0] == want

    try:
        wait_for(reached, timeout=60, interval=0.5, what=what)
    except AssertionError as err:
        said = [line for line in exporter.log().splitlines() if "termination" in line or "error" in line.lower()]
        raise AssertionError(f"{err}; last counts {last}\n" + "\n".join(said[-20:])) from None


def _truth(pod: Pod, ids: list[str]) -> Counter:
    """(reason, exit code label) of each instance, as ContainerStatus says now."""
    out = Counter()
    for cid in ids:
        s = pod.container_status(cid)
        assert s.state == api.CONTAINER_EXITED
        out[(s.reason, exit_code_label(s.exit_code))] += 1
    return out


def _subscribed(exporter: ExporterProcess) -> float:
    return exporter.scrape().get1("cri_container_events_subscribed")  # served even while the runtime is down


def _events(exporter: ExporterProcess) -> float:
    return exporter.scrape().get1("cri_container_events_received_total")


def _expect_subscription(version: str, exporter: ExporterProcess, cd: Containerd) -> None:
    """On 2.x, the exporter follows the events: a pod started now reaches it."""
    if version.startswith("2."):
        wait_for(lambda: _subscribed(exporter) == 1, timeout=60, what="the event subscription (containerd 2.x broadcasts)")
        before = _events(exporter)
        probe = run_pod(cd, f"probe-{uuid.uuid4().hex[:6]}", "term-probe")
        wait_for(lambda: _events(exporter) > before, timeout=60, what="the probe pod's events")
        probe.remove()
    else:
        # 1.x hands each event to one subscriber only: never subscribe there.
        assert _subscribed(exporter) == 0
        assert _events(exporter) == 0


def _crash(pod: Pod, name: str, attempt: int, command: list[str]) -> str:
    cid = pod.add_container(name, command, attempt=attempt)
    pod.wait_exited(cid, timeout=30)
    return cid


def test_oom_twice_and_crash_loop_between_two_scrapes(runtime, lab_dir):
    version, cd = runtime
    old = run_pod(cd, "old", "term")
    old_job = _crash(old, "job", 0, ["sh", "-c", "exit 3"])  # exited before the exporter: baseline
    with _exporter(cd, lab_dir, "oom") as exporter:
        _expect_subscription(version, exporter, cd)
        assert _counts(exporter, old, "job") == Counter()  # first scrape: the baseline

        oom = run_pod(cd, "oom", "term")
        hogs = [oom.add_container("hog", HOG, attempt=a, memory_limit=OOM_LIMIT) for a in (0, 1)]
        for cid in hogs:
            pod_status = oom.wait_exited(cid, timeout=30)
            assert pod_status.exit_code == 137
        loop = run_pod(cd, "loop", "term")
        # attempts 0..2 crash; the kubelet keeps only the newest exited one
        ids = []
        for attempt in range(3):
            ids.append(_crash(loop, "worker", attempt, ["sh", "-c", "exit 1"]))
            if attempt:
                loop.remove_container(ids[attempt - 1])
        loop.add_container("worker", SLEEP, attempt=3)

        # every termination shows, once the runtime's reports have settled
        wait_for(lambda: sum(_counts(exporter, oom, "hog").values()) == 2
                 and sum(_counts(exporter, loop, "worker").values()) == 3,
                 timeout=60, interval=0.5, what="5 terminations")
        hog_counts = _counts(exporter, oom, "hog")
        assert hog_counts == _truth(oom, hogs), "the hog's counts are what ContainerStatus says"
        assert set(hog_counts) <= {("OOMKilled", "137"), ("Error", "137")}
        worker = _counts(exporter, loop, "worker")
        if version.startswith("2."):
            assert worker == Counter({("Error", "1"): 3}), "the events name even the removed instances"
        else:
            # the poll reads the listed one; the two removed before it are known by attempt only
            assert worker == Counter({("Error", "1"): 1, ("Unknown", "unknown"): 2})
        assert _counts(exporter, old, "job") == Counter()
        # more scrapes count nothing again
        for _ in range(3):
            assert _counts(exporter, oom, "hog") == hog_counts
            assert _counts(exporter, loop, "worker") == worker
        assert old_job  # (kept: its exited instance is what must not be counted)


def test_a_restarted_exporter_counts_old_exits_as_baseline(runtime, lab_dir):
    version, cd = runtime
    pod = run_pod(cd, "restarted", "term")
    first = _crash(pod, "job", 0, ["sh", "-c", "exit 2"])
    with _exporter(cd, lab_dir, "before") as exporter:
        _expect_subscription(version, exporter, cd)
        assert _counts(exporter, pod, "job") == Counter()
        second = _crash(pod, "job", 1, ["sh", "-c", "exit 5"])
        _wait_counts(exporter, pod, "job", Counter({("Error", "other"): 1}), "exit 5 counted as Error/other")
    with _exporter(cd, lab_dir, "after") as exporter:
        _expect_subscription(version, exporter, cd)
        # both exits happened before this exporter: baseline, not counted again
        for _ in range(3):
            assert _counts(exporter, pod, "job") == Counter()
        third = _crash(pod, "job", 2, ["sh", "-c", "exit 0"])
        _wait_counts(exporter, pod, "job", Counter({("Completed", "0"): 1}), "exit 0 counted as Completed")
        assert _truth(pod, [third]) == Counter({("Completed", "0"): 1})
    assert first and second


def test_runtime_killed_mid_stream_loses_and_double_counts_nothing(runtime, lab_dir):
    version, cd = runtime
    pod = run_pod(cd, "killed", "term")
    with _exporter(cd, lab_dir, "kill") as exporter:
        _expect_subscription(version, exporter, cd)
        before = _crash(pod, "a", 0, ["sh", "-c", "exit 7"])
        _wait_counts(exporter, pod, "a", _truth(pod, [before]), "the first exit counted")
        # b ends with 4 when told (SIGTERM), so that it ends while containerd is down however slow the machine
        late = pod.add_container("b", ["sh", "-c", "trap 'exit 4' TERM; while :; do sleep 0.1; done"])
        pid = init_pid(pod.cd, late)
        assert pid > 0
        cd.kill()  # mid-stream: SIGKILL, the stream breaks, the shims live on
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=30, what="b exits while containerd is down")
        cd.start()
        _expect_subscription(version, exporter, cd)
        after = _crash(pod, "c", 0, ["sh", "-c", "exit 1"])
        pod.wait_exited(late, timeout=30)
        wait_for(lambda: sum(_counts(exporter, pod, "b").values()) == 1
                 and sum(_counts(exporter, pod, "c").values()) == 1,
                 timeout=60, interval=0.5, what="the exits across the runtime's restart")
        for _ in range(3):
            assert _counts(exporter, pod, "a") == _truth(pod, [before])
            assert _counts(exporter, pod, "b") == _truth(pod, [late])
            assert _counts(exporter, pod, "c") == _truth(pod, [after])
        if version.startswith("2."):
            assert exporter.scrape().get1("cri_container_events_stream_breaks_total") >= 1
