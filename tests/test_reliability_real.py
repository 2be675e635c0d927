"""On a real containerd (its own, never the shared one): pods and containers
created and deleted while scraping, and names with quotes, backslashes and
newlines, which containerd 1.6.20 accepts over CRI and returns verbatim."""
from __future__ import annotations

import os
import threading

import pytest

from crilab import Containerd, run_pod
from tests.exporter_proc import ExporterProcess, wait_for

pytestmark = pytest.mark.containerd

SLEEP = ["sleep", "2147483647"]
HOSTILE_POD = 'we"ird\\pod\nname'
HOSTILE_CONTAINER = 'c"\\\n1'


@pytest.fixture
def own(lab_dir, runtime_version):
    cd = Containerd(os.path.join(lab_dir, f"churn-{runtime_version}"), version=runtime_version).start()
    try:
        yield cd
    finally:
        cd.cleanup()


@pytest.mark.slow
def test_churn_and_hostile_names_while_scraping(own):
    weird = run_pod(own, HOSTILE_POD, 'ns"\\x')
    weird.add_container(HOSTILE_CONTAINER, SLEEP)
    with ExporterProcess(own.endpoint, "--stats-interval", "1", "--stats-idle-interval", "1", "--host-root", "/") as exp:
        s = wait_for(lambda: (x := exp.scrape()).find("cri_container_info", pod=HOSTILE_POD) and x, what="the pod")
        assert s.get1("cri_container_state", namespace='ns"\\x', pod=HOSTILE_POD, container=HOSTILE_CONTAINER,
                      state="running") == 1

        stop = threading.Event()
        made = []

        def churn():
            k = 0
            while not stop.is_set() and k < 8:
                pod = run_pod(own, f"churn-{k}", "churn")
                pod.add_container("a", SLEEP)
                made.append(k)
                if k % 2:
                    pod.remove()  # stop + remove while the exporter reads its cgroups
                k += 1

        t = threading.Thread(target=churn)
        t.start()
        scrapes = 0
        try:
            while t.is_alive() or scrapes < 5:
                s = exp.scrape()  # parses, fails on a duplicate series
                assert s.get1("cri_scrape_collector_success", collector="containers") == 1
                assert s.get1("cri_container_state", namespace='ns"\\x', pod=HOSTILE_POD,
                              container=HOSTILE_CONTAINER, state="running") == 1
                scrapes += 1
        finally:
            stop.set()
            t.join()
        assert made and scrapes >= 5
        s = wait_for(lambda: (x := exp.scrape()) and len(x.find("cri_pod_info", namespace="churn")) == 4 and x,
                     what="the surviving pods")
        assert s.get1("cri_scrape_collector_success", collector="cgroups") == 1
        assert exp.proc.poll() is None
