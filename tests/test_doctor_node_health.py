"""The checks operators asked for: certificate expiry, the kubelet's healthz,
the kernel log, PID/file headroom and the runtime's own metrics endpoint,
each passing and failing on fixture trees."""
import os
import datetime as dt
import http.server
import tarfile
import threading

import pytest

from tests.test_doctor_support import FIXTURES, FakeCriServer, FakeRuntime, copy_fixture, fixture, results, status, write

from cri_exporter.doctor.bundle import write_bundle
from cri_exporter.doctor.checks import certs
from cri_exporter.doctor.context import Context
from cri_exporter.doctor.report import render_json
from cri_exporter.doctor.runner import run
from cri_exporter.hostfs import HostFS

FIXTURE_KEY = "Tk9UIEEgUkVBTCBLRVkgKGZpeHR1cmUp"  # the dummy key block in kubelet-client-current.pem


def at(monkeypatch, year, month=1, day=1):
    monkeypatch.setattr(certs, "now", lambda: dt.datetime(year, month, day, tzinfo=dt.timezone.utc))


@pytest.mark.parametrize("when,expected", [((2026, 11, 1), "pass"), ((2046, 11, 1), "warn"), ((2047, 1, 1), "fail")])
def test_kubelet_certificates_by_expiry(when, expected, monkeypatch):
    at(monkeypatch, *when)
    f = results(fixture("kubeadm-containerd-v2"), checks=["certs.kubelet"])["certs.kubelet"].finding
    assert f.status.value == expected, f
    # notAfter as openssl printed it for these fixture certificates.
    assert "kubelet-client-current.pem CN=system:node:node1 notAfter 2046-11-20 16:43Z" in f.seen
    assert "cluster CA: /etc/kubernetes/pki/ca.crt CN=kubernetes notAfter 2126-11-01" in f.seen


def test_certificate_files_are_never_bundled_and_keys_never_read(tmp_path):
    ctx = Context(HostFS(fixture("kubeadm-containerd-v2")), "unix:///nonexistent.sock", cri_timeout=1.0)
    report = run(ctx, ["certs", "kubelet"])
    assert not [p for p in ctx.hostfs.recorded if p.endswith((".pem", ".crt"))]
    out = tmp_path / "b.tar.gz"
    write_bundle(str(out), report, ctx)
    with tarfile.open(out) as tar:
        text = "".join(tar.extractfile(m).read().decode() for m in tar.getmembers() if m.isfile())
    assert FIXTURE_KEY not in text and FIXTURE_KEY not in render_json(report)
    assert "kubelet-client-current.pem CN=system:node:node1" in text  # the finding is there


def test_registry_certificates(monkeypatch):
    assert status(fixture("containerd-v3"), "certs.registry") == "pass"
    at(monkeypatch, 2127)
    f = results(fixture("containerd-v3"), checks=["certs.registry"])["certs.registry"].finding
    assert f.status.value == "fail" and "registry.internal.example:5000/ca.crt CN=registry.internal.example CA" in f.seen


class _Healthz(http.server.BaseHTTPRequestHandler):
    answer = (200, b"ok")

    def do_GET(self):
        code, body = self.answer if self.path == "/healthz" else (404, b"no")
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def healthz_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Healthz)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server
    server.shutdown()
    server.server_close()


def test_kubelet_healthz(healthz_server, tmp_path, monkeypatch):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    with open(root / "var/lib/kubelet/config.yaml", "a") as f:
        f.write(f"healthzPort: {healthz_server.server_address[1]}\nhealthzBindAddress: 127.0.0.1\n")
    assert status(root, "kubelet.healthz") == "skip"  # a fixture root is not on the node's network
    monkeypatch.setattr(Context, "on_node_network", True)
    f = results(root, checks=["kubelet.healthz"])["kubelet.healthz"].finding
    assert f.status.value == "pass" and "-> 200: ok" in f.seen
    monkeypatch.setattr(_Healthz, "answer", (500, b"[-]syncloop failed"))
    f = results(root, checks=["kubelet.healthz"])["kubelet.healthz"].finding
    assert f.status.value == "fail" and "syncloop failed" in f.seen
    healthz_server.shutdown()
    healthz_server.server_close()
    assert status(root, "kubelet.healthz") == "fail"  # nothing listens: the kubelet is down
    # A kubelet config but no kubelet unit, process, package or binary: nothing to ask, no alarm.
    for unit in root.glob("**/kubelet.service"):
        unit.unlink()
    f = results(root, checks=["kubelet.healthz"])["kubelet.healthz"].finding
    assert f.status.value == "skip" and "no kubelet unit, process, package or binary" in f.summary, f


UID = "0f4c7ab2-1e8d-4c3a-9b7e-2a1d5e6f7a8b"


def kmsg(*records):
    return "".join(f"6,{i},{int(t * 1e6)},-;{m}\n" for i, (t, m) in enumerate(records))


@pytest.mark.parametrize("records,expected,needle", [
    ([(50_000, "eth0: link up"),
      (90_000, "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=cri-containerd-ab12.scope,mems_allowed=0,"
               "oom_memcg=/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + UID.replace("-", "_")
               + ".slice,task_memcg=/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
               + UID.replace("-", "_") + ".slice/cri-containerd-ab12.scope,task=java,pid=4242,uid=1000")],
     "pass", "java (pid 4242) in default/pod-0f4c"),  # the fake names pod <uid> "default/pod-<uid[:4]>"
    ([(90_000, "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,"
               "task_memcg=/system.slice/ssh.service,task=sshd,pid=777,uid=0")], "warn", "sshd (pid 777) in not a pod"),
    ([(95_000, "INFO: task jbd2/sda1-8:312 blocked for more than 122 seconds.")], "warn", "hung tasks: 1"),
    ([(95_000, "nf_conntrack: nf_conntrack: table full, dropping packet")], "warn", "conntrack table full: 1"),
    ([(95_000, "EXT4-fs (sda1): Remounting filesystem read-only")], "fail", "filesystem errors: 1"),
    ([(95_000, "blk_update_request: I/O error, dev nvme0n1, sector 2048 op 0x1:(WRITE) flags 0x800")],
     "fail", "filesystem errors: 1"),
    ([(95_000, "I/O error, dev sr0, sector 0 op 0x0:(READ) flags 0x80700 phys_seg 1 prio class 2"),
      (95_001, "Buffer I/O error on dev sr0, logical block 0, async page read")],
     "pass", "no node-level faults"),  # an empty virtual CD-ROM on a healthy VM
    ([(1_000, "EXT4-fs error (device sda1): ext4_find_entry:1463: inode #2: comm ls: reading directory")],
     "pass", "1 kernel log records in the last 24 h (of 2"),  # 27 hours ago: outside the window
])
def test_kernel_log(records, expected, needle, tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    write(root, "/proc/uptime", "100000.00 180000.00\n")
    write(root, "/dev/kmsg", kmsg((99_000, "Linux version 6.1.0"), *records))
    runtime = FakeRuntime()
    with FakeCriServer(root / "run/containerd/containerd.sock", runtime):
        runtime.sandboxes = [UID]
        f = results(root, checks=["kernel.log"])["kernel.log"].finding
    assert f.status.value == expected, f
    assert needle in f.seen or needle in f.summary, f


def test_kernel_log_from_the_journal_when_kmsg_is_not_readable(tmp_path, monkeypatch):
    """tests/fixtures/journal: a journal file systemd 252 wrote (compact, keyed
    hash, zstd). Only kernel entries of the last 24 h count; a service quoting
    an ext4 error is no filesystem error."""
    import gzip

    from cri_exporter.doctor.checks import kernel_health

    t0 = 1_800_000_000
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    write(root, "/proc/uptime", "7200.00 14000.00\n")  # booted 2 h before t0: the ext4 error 27 h ago was an earlier boot
    journal = root / "var/log/journal/0123456789abcdef0123456789abcdef/system.journal"
    journal.parent.mkdir(parents=True)
    journal.write_bytes(gzip.decompress((FIXTURES.parent / "journal" / "kernel.journal.gz").read_bytes()))
    os.utime(journal, (t0, t0))
    monkeypatch.setattr(kernel_health, "now", lambda: t0)
    runtime = FakeRuntime()
    with FakeCriServer(root / "run/containerd/containerd.sock", runtime):
        runtime.sandboxes = [UID]
        f = results(root, checks=["kernel.log"])["kernel.log"].finding
    assert f.status.value == "fail" and f.summary == "1 filesystem error(s) in the kernel log", f
    assert f.seen.startswith("2 kernel log records in the last 24 h (of 2 in the journal (/dev/kmsg: ")
    assert "[3600s] java (pid 4242) in default/pod-0f4c" in f.seen  # 1 h before t0, 1 h after boot
    assert "Remounting filesystem read-only" in f.seen and "sdb1" not in f.seen and "sda1): ext4_find_entry" not in f.seen
    # Older than the window: the file is not even opened.
    os.utime(journal, (t0 - 2 * 86400, t0 - 2 * 86400))
    f = results(root, checks=["kernel.log"])["kernel.log"].finding
    assert f.status.value == "skip" and "no journal files in /var/log/journal or /run/log/journal" in f.summary


def test_kernel_log_unreadable_is_a_skip(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    assert status(root, "kernel.log") == "skip"


@pytest.mark.parametrize("threads,files,expected", [(1200, "2048\t0\t9223372036854775807", "pass"),
                                                     (26000, "2048\t0\t9223372036854775807", "warn"),
                                                     (1200, "95000\t0\t100000", "fail")])
def test_headroom(threads, files, expected, tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    write(root, "/proc/loadavg", f"0.50 0.40 0.30 3/{threads} 98765\n")
    write(root, "/proc/sys/kernel/pid_max", "32768\n")
    write(root, "/proc/sys/kernel/threads-max", "254000\n")
    write(root, "/proc/sys/fs/file-nr", files + "\n")
    f = results(root, checks=["kernel.headroom"])["kernel.headroom"].finding
    assert f.status.value == expected, f
    assert f"threads / kernel.pid_max: {threads} of 32768" in f.seen
    assert "podPidsLimit: -1 (kubelet default): unlimited" in f.seen


def test_runtime_metrics_endpoint_is_information(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    f = results(root, checks=["containerd.metrics"])["containerd.metrics"].finding
    assert f.status.value == "pass" and "off" in f.summary
    with open(root / "etc/containerd/config.toml", "a") as cfg:
        cfg.write('\n[metrics]\n  address = "127.0.0.1:1338"\n')
    f = results(root, checks=["containerd.metrics"])["containerd.metrics"].finding
    assert f.summary == "containerd serves metrics on http://127.0.0.1:1338/v1/metrics"
    crio = copy_fixture("crio", tmp_path / "c")
    write(crio, "/etc/crio/crio.conf.d/50-metrics.conf", "[crio.metrics]\nenable_metrics = true\nmetrics_port = 9537\n")
    f = results(crio, checks=["crio.metrics"])["crio.metrics"].finding
    assert f.summary == "CRI-O serves metrics on http://127.0.0.1:9537/metrics"
