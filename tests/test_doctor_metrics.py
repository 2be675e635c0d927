"""Serve mode's view of the doctor: metrics on a registry of our own."""
import json
import time

from prometheus_client import CollectorRegistry, generate_latest

try:
    from tests.test_doctor_support import fixture
except ImportError:
    from test_doctor_support import fixture

from cri_exporter.doctor import run_doctor
from cri_exporter.doctor.metrics import DoctorCollector, PeriodicDoctor
from cri_exporter.hostfs import HostFS


def test_metrics_from_a_report():
    report = run_doctor(HostFS(fixture("kubeadm-containerd-broken")), None,
                        checks=["kernel.swap", "kernel.module.overlay", "kernel.inotify", "kernel.module.ipvs",
                                "kernel.conntrack"])
    c = DoctorCollector()
    reg = CollectorRegistry()
    reg.register(c)
    assert generate_latest(reg) == b""  # nothing before the first run
    c.update(report)
    text = generate_latest(reg).decode()
    assert 'cri_doctor_check_ok{area="kernel",check="kernel.swap",severity="critical"} 0.0' in text
    assert 'cri_doctor_check_ok{area="kernel",check="kernel.inotify",severity="warning"} 0.0' in text
    assert 'check="kernel.module.ipvs",severity' not in text  # skipped: not in check_ok
    assert 'cri_doctor_check_status{check="kernel.module.ipvs",status="skip"} 1.0' in text
    assert 'cri_doctor_check_status{check="kernel.swap",status="pass"} 0.0' in text
    assert "cri_doctor_last_run_timestamp_seconds" in text
    assert json.loads(c.latest_json())["summary"]["fail"] >= 1


def test_periodic_runs_off_the_scrape_path():
    c = DoctorCollector()
    calls = []

    def run():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("one bad run")
        return run_doctor(HostFS(fixture("kubeadm-containerd-v2")), None, checks=["kernel"])

    errors = []
    t = PeriodicDoctor(run, c, interval=0.01, on_error=errors.append)
    t.start()
    deadline = time.time() + 5
    while len(calls) < 3 and time.time() < deadline:
        time.sleep(0.01)
    t.stop()
    t.join(2)
    assert c.report is not None and errors and len(calls) >= 3
