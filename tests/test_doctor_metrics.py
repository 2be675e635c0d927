"""Serve mode's view of the doctor: metrics on a registry of our own, and the
child process each serve-mode run happens in."""
import contextlib
import ctypes
import json
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from prometheus_client import CollectorRegistry, generate_latest

try:
    from tests.test_doctor_support import fixture
except ImportError:
    from test_doctor_support import fixture

from cri_exporter.doctor import run_doctor
from cri_exporter.doctor.child import DoctorChild, DoctorRunFailed
from cri_exporter.doctor.metrics import DoctorCollector, PeriodicDoctor
from cri_exporter.doctor.report import parse_json, render_json
from cri_exporter.hostfs import HostFS
from tests.exporter_proc import wait_for


def test_metrics_from_a_report():
    report = run_doctor(HostFS(fixture("kubeadm-containerd-broken")), None,
                        checks=["kernel.swap", "kernel.module.overlay", "kernel.inotify", "kernel.module.ipvs",
                                "kernel.conntrack"])
    c = DoctorCollector()
    reg = CollectorRegistry()
    reg.register(c)
    # before the first run: no findings, only the failure count
    assert generate_latest(reg).decode().splitlines()[2:] == ["cri_doctor_run_failures_total 0.0"]
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
    wait_for(lambda: len(calls) >= 3, timeout=60, interval=0.01, what="three runs")
    t.stop()
    t.join(2)
    assert c.report is not None and errors and len(calls) >= 3
    assert "cri_doctor_run_failures_total 1.0" in generate_latest(_registry(c)).decode()


def _registry(collector) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(collector)
    return reg


def test_a_report_survives_json():
    report = run_doctor(HostFS(fixture("kubeadm-containerd-broken")), "unix:///nonexistent.sock")
    back = parse_json(render_json(report))
    assert back.to_dict() == report.to_dict()
    assert render_json(back) == render_json(report)
    for garbage in ("", "[]", "{}", '{"schema_version": 1}', '{"schema_version": 99, "checks": []}',
                    '{"schema_version": 1, "summary": {}, "checks": [{"id": "x"}]}'):
        with pytest.raises(ValueError):
            parse_json(garbage)


def test_the_child_reports_what_the_command_does():
    """serve's run is `cri-exporter doctor --output json` in a child: the same
    findings as the doctor run in-process over the same node.

    The node is the fixture tree plus the network the doctor runs in (the
    netlink checks read links and routes, not files). This machine's own
    network changes all the time (network.mtu counts the veths of whatever
    pods other tests run, and it flipped between the two runs), so both run in
    a network namespace of the test's own, which nothing else touches."""
    root = fixture("kubeadm-containerd-broken")
    child = DoctorChild(root, lambda: "unix:///nonexistent.sock")
    with _private_network() as run_inside:
        report = run_inside(child.run)
        direct = run_inside(lambda: run_doctor(HostFS(root), "unix:///nonexistent.sock"))
    assert {r.id: r.status for r in report.results} == {r.id: r.status for r in direct.results}
    assert report.failed and report.host_root == HostFS(root).root
    assert {r.id: r.finding.fix for r in report.results} == {r.id: r.finding.fix for r in direct.results}
    # the network checks ran, on the namespace's links: its uplink, and a pod veth pair above its MTU
    network = {r.id: r for r in direct.results if r.id.startswith("network.")}
    assert network["network.default_route"].finding.summary == "default route via 192.0.2.1 dev eth0"
    assert network["network.mtu"].status.value == "warn" and "veth0" in network["network.mtu"].finding.seen


CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def _private_network():
    """A network namespace (uplink eth0 at MTU 1400 with the default route, a
    veth pair at 1500 as a pod's would be) and a function that runs a callable
    in a thread inside it: setns(2) moves only the calling thread, and the
    processes it starts inherit its namespace."""
    name = f"cri-doctor-child-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, text=True)
    try:
        for args in (["link", "add", "eth0", "mtu", "1400", "type", "veth", "peer", "name", "uplink", "mtu", "1400"],
                     ["link", "set", "eth0", "up"], ["link", "set", "uplink", "up"],
                     ["addr", "add", "192.0.2.10/24", "dev", "eth0"], ["route", "add", "default", "via", "192.0.2.1"],
                     ["link", "add", "veth0", "mtu", "1500", "type", "veth", "peer", "name", "veth1", "mtu", "1500"]):
            subprocess.run(["ip", "-n", name, *args], check=True, capture_output=True, text=True)
        libc = ctypes.CDLL(None, use_errno=True)

        def enter():
            fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {name}")
            finally:
                os.close(fd)

        with ThreadPoolExecutor(1, initializer=enter) as pool:
            yield lambda fn: pool.submit(fn).result()
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


class _Scripted(DoctorChild):
    def __init__(self, script: str, timeout: float = 30.0):
        super().__init__("/", lambda: None, timeout=timeout)
        self.script = script

    def command(self):
        return [sys.executable, "-c", self.script]


def test_a_child_that_hangs_is_killed_at_its_deadline():
    child = _Scripted("import os, time; print(os.getpid(), flush=True); time.sleep(600)", timeout=1.0)
    t = time.monotonic()
    with pytest.raises(DoctorRunFailed, match="did not finish in 1 s and was killed"):
        child.run()
    assert time.monotonic() - t < 10
    assert child._proc is None


@pytest.mark.parametrize("script, message", [
    ("print('not json')", "not a report"),
    ("import sys; sys.stderr.write('Traceback...\\nBoom: the last line\\n'); sys.exit(3)", "status 3: Boom: the last line"),
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "status -9"),
])
def test_a_child_without_a_report_is_a_failed_run(script, message):
    with pytest.raises(DoctorRunFailed, match=message):
        _Scripted(script).run()


def test_stopping_serve_kills_a_run_in_progress():
    child = _Scripted("import time; time.sleep(600)", timeout=300)
    errors = []
    t = PeriodicDoctor(child.run, DoctorCollector(), interval=300, on_error=errors.append)
    t.start()
    proc = wait_for(lambda: child._proc, timeout=60, interval=0.02, what="the child to start")
    child.stop()
    t.stop()
    t.join(10)
    assert not t.is_alive() and proc.poll() is not None
    with pytest.raises(DoctorRunFailed, match="stopping"):
        child.run()


def test_serve_does_not_load_the_checks():
    """The checks and their libraries live in the doctor's child process only."""
    code = ("import sys; import cri_exporter.cli, cri_exporter.exporter, cri_exporter.server; "
            "print(sorted(m for m in sys.modules if m.startswith(('pyroute2', 'yaml', 'cri_exporter.doctor.checks'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
