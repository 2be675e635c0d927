"""serve's Landlock confinement (cri_exporter/confine.py), applied for real in
a child process to a planted host root: secrets cannot be opened, what the
collectors read still can, nothing can be written anywhere."""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
POD = "0b4c7f2e-6a1d-4e55-9d7e-1f0c2a3b4c5d"


def kernel_abi() -> int:
    """The kernel's Landlock ABI, asked here independently of the package."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return int(libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1)))


@pytest.fixture
def host(tmp_path) -> Path:
    root = tmp_path / "host"
    pod = root / "var/lib/kubelet/pods" / POD
    token = pod / "volumes/kubernetes.io~projected/kube-api-access-abcde/token"
    empty = pod / "volumes/kubernetes.io~empty-dir/cache"
    for d in (token.parent, empty / "sub", root / "var/lib/kubelet/pki", root / "etc/kubernetes/pki",
              root / "sys/fs/cgroup/kubepods/pod" / POD, root / "etc/containerd", root / "var/log/pods"):
        d.mkdir(parents=True, exist_ok=True)
    token.write_text("eyJhbGciOiJSUzI1NiJ9.planted")
    (empty / "data.bin").write_bytes(b"x" * 4096)
    (empty / "sub/more").write_text("y")
    (pod / "etc-hosts").write_text("127.0.0.1 localhost\n")
    (root / "var/lib/kubelet/pki/kubelet-client-current.pem").write_text("-----BEGIN EC PRIVATE KEY-----\n")
    (root / "var/lib/kubelet/pki/kubelet.key").write_text("-----BEGIN RSA PRIVATE KEY-----\n")
    (root / "var/lib/kubelet/pki/kubelet.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (root / "var/lib/kubelet/config.yaml").write_text("kind: KubeletConfiguration\n")
    (root / "etc/kubernetes/pki/ca.key").write_text("key")
    (root / "etc/kubernetes/admin.conf").write_text("client-key-data: c2VjcmV0\n")
    (root / "etc/shadow").write_text("root:$6$planted:19000::::::\n")
    (root / "etc/containerd/config.toml").write_text("version = 2\n")
    (root / "sys/fs/cgroup/kubepods/pod" / POD / "memory.current").write_text("12345\n")
    (root / "sys/fs/cgroup/kubepods/pod" / POD / "cpu.stat").write_text("usage_usec 10\n")
    return root


def probe(host: Path, ops: list[tuple[str, str]], plant=None) -> tuple[dict, list[str]]:
    proc = subprocess.Popen([sys.executable, str(REPO / "tests/confine_probe.py"), str(host), json.dumps(ops)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, cwd="/")
    assert proc.stdin is not None and proc.stdout is not None
    header = json.loads(proc.stdout.readline() or "null")
    if plant is not None:
        plant()
    proc.stdin.write("go\n")
    proc.stdin.flush()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return header, json.loads(out)


def test_policy_hides_secrets_keeps_what_collectors_read_and_denies_writes(host, tmp_path):
    pod = host / "var/lib/kubelet/pods" / POD
    token = pod / "volumes/kubernetes.io~projected/kube-api-access-abcde/token"
    empty = pod / "volumes/kubernetes.io~empty-dir/cache"
    cgroup = host / "sys/fs/cgroup/kubepods/pod" / POD
    outside = tmp_path / "outside.txt"
    outside.write_text("not under the host root")
    cases = [
        # secrets: not a byte
        (("read", str(token)), "PermissionError"),
        (("read", str(pod / "etc-hosts")), "PermissionError"),
        (("read", str(host / "var/lib/kubelet/pki/kubelet-client-current.pem")), "PermissionError"),
        (("read", str(host / "var/lib/kubelet/pki/kubelet.key")), "PermissionError"),
        (("read", str(host / "etc/kubernetes/pki/ca.key")), "PermissionError"),
        (("read", str(host / "etc/kubernetes/admin.conf")), "PermissionError"),
        (("read", str(host / "etc/shadow")), "PermissionError"),
        (("read", str(outside)), "PermissionError"),  # not the host root's, not the process's own
        # the ephemeral-storage walker: list, stat, a directory fd
        (("list", str(host / "var/lib/kubelet/pods")), "ok"),
        (("list", str(empty)), "ok"),
        (("list", str(empty / "sub")), "ok"),
        (("stat", str(empty / "data.bin")), "ok"),
        (("stat", str(token)), "ok"),
        (("opendir", str(empty)), "ok"),
        # what the collectors and the doctor read
        (("read", str(cgroup / "memory.current")), "ok"),
        (("read", str(cgroup / "cpu.stat")), "ok"),
        (("list", str(cgroup)), "ok"),
        (("read", str(host / "var/lib/kubelet/config.yaml")), "ok"),
        (("read", str(host / "var/lib/kubelet/pki/kubelet.crt")), "ok"),
        (("read", str(host / "etc/containerd/config.toml")), "ok"),
        (("read", "/proc/self/status"), "ok"),
        (("read", "/dev/null"), "ok"),
        # writes: nowhere
        (("write", str(cgroup / "memory.current")), "PermissionError"),
        (("create", str(host / "etc/containerd/new.toml")), "PermissionError"),
        (("create", str(empty / "new")), "PermissionError"),
        (("mkdir", str(host / "var/log/pods/new")), "PermissionError"),
        (("truncate", str(host / "etc/containerd/config.toml")), "PermissionError"),
        (("unlink", str(host / "etc/containerd/config.toml")), "PermissionError"),
        (("rename", str(host / "etc/containerd/config.toml")), "PermissionError"),
        (("create", "/tmp/cri-exporter-confine-probe-%d" % os.getpid()), "PermissionError"),
        (("create", str(tmp_path / "new")), "PermissionError"),
        (("write", str(outside)), "PermissionError"),
        # made after the restriction: beneath an unsplit directory it is read
        # as before; directly in a split one it is only listed (confine.py says why)
        (("read", str(host / "etc/containerd/late.toml")), "ok"),
        (("stat", str(host / "var/lib/kubelet/late.yaml")), "ok"),
        (("read", str(host / "var/lib/kubelet/late.yaml")), "PermissionError"),
        (("read", str(empty / "late")), "PermissionError"),
    ]

    def plant():
        (host / "etc/containerd/late.toml").write_text("version = 2\n")
        (host / "var/lib/kubelet/late.yaml").write_text("late: true\n")
        (empty / "late").write_text("late")

    header, results = probe(host, [op for op, _ in cases], plant)
    abi = kernel_abi()
    assert abi >= 1, "this machine's kernel has no Landlock: the confinement cannot be tested (nor enforced)"
    assert header["abi"] == abi
    assert header["state"] == ("enforced" if abi >= 3 else "partial")
    assert header["rules"] > 0
    got = {f"{op} {path}": r for (op, path), r in zip([op for op, _ in cases], results)}
    want = {f"{op} {path}": r for (op, path), r in cases}
    assert got == want
    assert token.read_text().endswith("planted")  # the files themselves are untouched
    assert (host / "etc/containerd/config.toml").read_text() == "version = 2\n"


def test_unreadable_secret_pattern_absent_at_start_still_hides_what_appears_later(tmp_path):
    """/etc/kubernetes does not exist yet (a node before kubeadm init): /etc is
    split, so the pki made later is not readable either."""
    host = tmp_path / "host"
    (host / "etc/containerd").mkdir(parents=True)
    late = host / "etc/kubernetes/pki/ca.key"

    def plant():
        late.parent.mkdir(parents=True)
        late.write_text("key")

    _, results = probe(host, [("read", str(late)), ("list", str(late.parent))], plant)
    assert results == ["PermissionError", "ok"]


CERTS_CHILD = """
import json, sys
from cri_exporter import confine
from tests.test_doctor_support import results
state = confine.apply(confine.build_policy(sys.argv[1])).state
f = results(sys.argv[1], checks=["certs.kubelet"])["certs.kubelet"].finding
print(json.dumps({"state": state, "status": f.status.value, "summary": f.summary, "seen": f.seen}))
"""


def test_the_certs_check_says_what_confinement_kept_it_from_reading(tmp_path):
    """Confined, the kubelet's client certificate (its file holds the key) cannot be
    read: the check says so and passes on the others, never counting it valid and
    never raising an alarm over a file the agent may not open."""
    from tests.test_doctor_support import copy_fixture

    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    out = subprocess.run([sys.executable, "-c", CERTS_CHILD, str(root)], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, cwd="/").stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got["state"] in ("enforced", "partial"), got
    assert got["status"] == "pass", got
    assert got["summary"].startswith("2 kubelet certificate(s) valid") and "not read: kubelet client certificate" in got["summary"]
    assert "permission denied" in got["summary"]
    assert "cluster CA: /etc/kubernetes/pki/ca.crt CN=kubernetes" in got["seen"]


REPLACED_CHILD = """
import json, sys
from cri_exporter import confine
root, mode = sys.argv[1], sys.argv[2]
if mode == "doctor":  # the hand-run doctor's policy (confine_doctor.py)
    from cri_exporter import confine_doctor
    state = confine_doctor.apply(root, True).state
else:
    state = confine.apply(confine.build_policy(root)).state if mode == "confined" else "unconfined"
print(json.dumps({"state": state}), flush=True)
sys.stdin.readline()  # the parent replaces the files now, after the restriction
if sys.argv[3] == "child":  # as serve runs it: `cri-exporter doctor` as a child, inheriting the confinement
    from cri_exporter.doctor.child import DoctorChild
    report = DoctorChild(root, lambda: None, cri_timeout=2.0).run()
else:
    from tests.test_doctor_support import run_doctor, HostFS
    report = run_doctor(HostFS(root), None, checks=["crictl", "kubelet", "certs"], cri_timeout=2.0)
found = {r.id: {"status": r.finding.status.value, "summary": r.finding.summary} for r in report.results
         if r.id.split(".")[0] in ("crictl", "kubelet", "certs")}
print(json.dumps(found), flush=True)
"""


def _doctor_after_replacing(root: Path, mode: str, replaced: tuple[str, ...], how: str = "in-process") -> dict:
    """The crictl and kubelet checks over `root` after each of `replaced` was
    rewritten as editors and tools do (a new file renamed over the old one: a
    new inode), once the child is confined (or not: `mode`)."""
    proc = subprocess.Popen([sys.executable, "-c", REPLACED_CHILD, str(root), mode, how], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, cwd="/")
    assert proc.stdin is not None and proc.stdout is not None
    header = json.loads(proc.stdout.readline() or "null")
    assert header is not None, proc.communicate(timeout=60)[1]
    for rel in replaced:
        path = root / rel
        new = path.with_name(path.name + ".new")
        new.write_bytes(path.read_bytes())  # the same content: the node is as healthy as before
        os.replace(new, path)
    proc.stdin.write("go\n")
    proc.stdin.flush()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return {"state": header["state"], **json.loads(out.strip().splitlines()[-1])}


@pytest.mark.parametrize("fixture, replaced, skipped", [
    # each file directly inside a directory the policy splits (/etc, /var/lib/kubelet, /etc/kubernetes, /etc/rancher/k3s)
    ("kubeadm-containerd-v2", ("etc/crictl.yaml", "var/lib/kubelet/config.yaml", "var/lib/kubelet/kubeadm-flags.env"),
     ("crictl.endpoint", "kubelet.config.parse", "kubelet.runtime_endpoint", "kubelet.removed_flags")),
    ("kubespray", ("etc/kubernetes/kubelet-config.yaml", "etc/kubernetes/kubelet.env"),
     ("kubelet.config.parse", "kubelet.runtime_endpoint", "kubelet.removed_flags")),
    ("k3s-healthy", ("etc/rancher/k3s/config.yaml",), ("kubelet.config.parse", "kubelet.runtime_endpoint")),
])
def test_a_config_replaced_after_start_is_no_warning_and_names_the_cause(tmp_path, fixture, replaced, skipped):
    """A config replaced by rename after serve confined itself cannot be opened:
    the checks that read it say so and skip, never warn or fail; run unconfined
    over the same tree, the same checks judge the file."""
    from tests.test_doctor_support import copy_fixture

    confined = _doctor_after_replacing(copy_fixture(fixture, tmp_path / "a"), "confined", replaced)
    plain = _doctor_after_replacing(copy_fixture(fixture, tmp_path / "b"), "unconfined", replaced)
    assert confined.pop("state") in ("enforced", "partial")
    assert plain.pop("state") == "unconfined"
    assert set(confined) == set(plain)
    for cid in skipped:
        got = confined[cid]
        assert got["status"] == "skip", (cid, got)
        assert "exists but the confined agent could not open it" in got["summary"], (cid, got)
        assert "replaced" in got["summary"] and "restarting the agent" in got["summary"], (cid, got)
        assert any(f"/{rel} exists" in got["summary"] for rel in replaced), (cid, got)
        assert plain[cid]["status"] != "skip", (cid, plain[cid])  # unconfined, the same file is judged
    # Confinement raises no warning or failure of its own: each one it leaves is one the node has unconfined.
    for cid, got in confined.items():
        if got["status"] in ("warn", "fail"):
            assert got == plain[cid], cid


def test_a_certificate_renewed_after_start_is_named_not_read_with_the_cause(tmp_path):
    """k3s rewrites its agent's certificates (directly in the split agent
    directory) when it renews them: confined, the certs check names the one it
    could not open and why, and passes on the others."""
    from tests.test_doctor_support import copy_fixture

    replaced = ("var/lib/rancher/k3s/agent/serving-kubelet.crt",)
    confined = _doctor_after_replacing(copy_fixture("k3s-healthy", tmp_path / "a"), "confined", replaced)
    plain = _doctor_after_replacing(copy_fixture("k3s-healthy", tmp_path / "b"), "unconfined", replaced)
    assert confined.pop("state") in ("enforced", "partial") and plain.pop("state") == "unconfined"
    got = confined["certs.kubelet"]
    assert plain["certs.kubelet"]["status"] == "pass" and "not read" not in plain["certs.kubelet"]["summary"]
    assert got["status"] == "pass", got
    assert "not read: kubelet serving certificate" in got["summary"] and "renewed since it started" in got["summary"]
    for cid, f in confined.items():
        if f["status"] in ("warn", "fail"):
            assert f == plain[cid], cid


def test_serves_doctor_child_inherits_the_confinement_and_says_so(tmp_path):
    """serve's own path: the confined process runs `cri-exporter doctor` as a
    child (DoctorChild); the child inherits the restriction and the mark, so a
    crictl.yaml replaced after start is a skip naming the cause there too."""
    from tests.test_doctor_support import copy_fixture

    got = _doctor_after_replacing(copy_fixture("kubeadm-containerd-v2", tmp_path), "confined",
                                  ("etc/crictl.yaml",), how="child")
    assert got.pop("state") in ("enforced", "partial")
    assert got["crictl.endpoint"]["status"] == "skip", got["crictl.endpoint"]
    assert "/etc/crictl.yaml exists but the confined agent could not open it" in got["crictl.endpoint"]["summary"]
    assert got["kubelet.config.parse"]["status"] == "pass", got["kubelet.config.parse"]  # not replaced: read


def test_under_the_hand_run_doctors_confinement_a_replaced_config_names_the_doctor(tmp_path):
    """The same skip under the hand-run doctor's own policy, worded for it: the
    file was replaced while the doctor ran, and running it again reads it."""
    from tests.test_doctor_support import copy_fixture

    got = _doctor_after_replacing(copy_fixture("kubeadm-containerd-v2", tmp_path), "doctor", ("etc/crictl.yaml",))
    assert got.pop("state") in ("enforced", "partial")
    summary = got["crictl.endpoint"]["summary"]
    assert got["crictl.endpoint"]["status"] == "skip", got["crictl.endpoint"]
    assert "/etc/crictl.yaml exists but the confined doctor could not open it" in summary, summary
    assert "running the doctor again reads it" in summary and "agent" not in summary, summary
    # the kubelet's client certificate, closed to serve, is read under the doctor's policy
    assert got["certs.kubelet"]["status"] == "pass" and "not read" not in got["certs.kubelet"]["summary"], got
