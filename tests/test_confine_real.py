"""serve confined by Landlock against the lab's real containerd: enforced by
default (every other test's serve runs confined too, so the whole suite
checks nothing it reads was taken away), and where it cannot be applied
(--no-confine; a seccomp profile answering ENOSYS) serve serves anyway and
says so."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from tests import cgroup_truth
from tests.exporter_proc import ExporterProcess, wait_for
from tests.test_confine import kernel_abi

REPO = Path(__file__).resolve().parent.parent


def _ident(pod, container: str) -> dict:
    return {"namespace": pod.namespace, "pod": pod.name, "container": container}


def _serves_the_burner(exp: ExporterProcess, pods) -> None:
    """CRI answered and the burner's CPU lies between cgroup readings taken around the scrape."""
    burn = pods.burner.containers["burn"][0]
    before = cgroup_truth.cpu_usage_seconds(pods.burner.uid, burn)
    s = wait_for(lambda: (s := exp.scrape()).get1("cri_up") == 1 and s, what="cri_up 1")
    after = cgroup_truth.cpu_usage_seconds(pods.burner.uid, burn)
    assert before - 1e-6 <= s.get1("cri_container_cpu_usage_seconds_total", **_ident(pods.burner, "burn")) <= after + 1e-6


def test_serve_is_confined_by_default_and_serves_the_node(exporter, pods):
    abi = kernel_abi()
    assert abi >= 1, "no Landlock on this kernel: serve cannot be confined here"
    s = exporter.scrape()
    assert s.find("cri_exporter_confinement_info") == {
        ("cri_exporter_confinement_info", frozenset({("state", "enforced" if abi >= 3 else "partial"),
                                                     ("abi", str(abi))})): 1.0}
    _serves_the_burner(exporter, pods)
    # the doctor child ran under the same domain and produced its report
    status, _, body = wait_for(lambda: (r := exporter.get("/doctor"))[0] == 200 and r, what="a doctor run")
    report = json.loads(body)
    assert {c["id"]: c["status"] for c in report["checks"]}["cri.runtime_ready"] == "pass"
    # the child stacked its own policy on the one it inherited, and says so on /doctor
    assert report["confinement"] == {"state": "enforced" if abi >= 3 else "partial", "abi": abi}
    assert exporter.scrape().get1("cri_doctor_run_failures_total") == 0
    log = [json.loads(line) for line in exporter.log().splitlines() if line.startswith("{")]
    confined = [e for e in log if e.get("event") == "confined"]
    assert len(confined) == 1 and confined[0]["state"] in ("enforced", "partial") and confined[0]["rules"] > 0


def test_no_confine_flag_serves_unconfined(containerd, pods):
    with ExporterProcess(containerd.endpoint, "--no-confine", "--host-root", "/", "--collectors", "runtime,containers,cgroups") as exp:
        s = exp.scrape()
        assert s.get1("cri_exporter_confinement_info", state="disabled", abi="0") == 1
        _serves_the_burner(exp, pods)


def test_seccomp_answering_enosys_leaves_serve_serving_and_says_so(containerd, pods):
    """A runtime's seccomp profile that predates the landlock_* calls (ENOSYS):
    one warning, the metric says unavailable, the node's metrics are served."""
    wrap = [sys.executable, str(REPO / "tests/seccomp_no_landlock.py")]
    with ExporterProcess(containerd.endpoint, "--host-root", "/", "--collectors", "runtime,containers,cgroups",
                         wrap=wrap) as exp:
        s = exp.scrape()
        assert s.get1("cri_exporter_confinement_info", state="unavailable", abi="0") == 1
        _serves_the_burner(exp, pods)
        log = [json.loads(line) for line in exp.log().splitlines() if line.startswith("{")]
        warnings = [e for e in log if e.get("event", "").startswith("not confined")]
        assert len(warnings) == 1 and warnings[0]["level"] == "warning"
        assert "ENOSYS" in warnings[0]["reason"]
