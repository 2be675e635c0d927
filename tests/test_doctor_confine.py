"""`cri-exporter doctor` run by hand confines itself (confine_doctor.py): run
for real as a child process, as an operator runs it, over planted host roots
and against the lab's real containerd. Confined, it writes nothing but the
bundle it was asked for, opens none of the planted secrets it does not need,
and finds what an unconfined run finds; where Landlock is unavailable it runs
and says so."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.test_confine import kernel_abi
from tests.test_doctor_support import copy_fixture

REPO = Path(__file__).resolve().parent.parent
POD = "0b4c7f2e-6a1d-4e55-9d7e-1f0c2a3b4c5d"
CONFINED = ("enforced", "partial")


def run_doctor(*args: str, ops=(), wrap=(), env=None) -> tuple[int, str, str, dict]:
    """The doctor CLI in a child (tests/doctor_confine_probe.py): exit status,
    stdout without the probe's line, stderr, and the probe's results."""
    cmd = [*wrap, sys.executable, str(REPO / "tests/doctor_confine_probe.py"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd="/",
                          env={**os.environ, "PYTHONPATH": str(REPO), "CRI_PROBE_OPS": json.dumps(list(ops)),
                               **(env or {})})
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    out, _, probe = proc.stdout.rpartition("PROBE ")
    assert proc.returncode == 0 and probe, (proc.returncode, proc.stderr[-3000:])
    got = json.loads(probe)
    return got["exit"], out, proc.stderr, got


def report_of(out: str) -> dict:
    return json.loads(out)


def findings(report: dict) -> dict[str, tuple[str, str, str]]:
    return {c["id"]: (c["status"], c["summary"], c["detail"]) for c in report["checks"]}


# Lists the machine's pod interfaces by name: other tests' pods come and go between runs.
CHURN = {"network.mtu"}


def _numbers_out(finding: tuple[str, str, str]) -> tuple[str, ...]:
    """A finding with its measurements (free bytes, counts, ages) blanked: the
    node's disk fills and processes come and go between two runs."""
    return tuple(re.sub(r"\d+(\.\d+)?", "#", text) for text in finding)


def assert_same_findings(confined: dict, *plain: dict) -> None:
    """Each confined finding is one an unconfined run gave: two unconfined
    runs bracket it, so a fact the node changed meanwhile (another test's
    pod, a process count) is no false difference."""
    got = findings(confined)
    runs = [findings(p) for p in plain]
    assert set(got) == set(runs[0]), set(got) ^ set(runs[0])
    differ = {cid: (f, [r[cid] for r in runs]) for cid, f in got.items()
              if all(f != r[cid] and _numbers_out(f) != _numbers_out(r[cid]) for r in runs)
              and not (cid in CHURN and any(f[0] == r[cid][0] for r in runs))}
    assert differ == {}


def plant_secrets(root: Path, outside: Path) -> dict[str, Path]:
    """The kubelet's pki as it rotates it (kubelet-client-current.pem links to a
    dated file holding cert and key; an older one stays), pods' volumes,
    control-plane keys and kubeconfigs, the host's shadow file."""
    pki = root / "var/lib/kubelet/pki"
    current = pki / "kubelet-client-current.pem"
    dated = pki / "kubelet-client-2026-11-01-10-00-00.pem"
    dated.write_text(current.read_text() + "-----BEGIN EC PRIVATE KEY-----\nplanted-current-key\n"
                                            "-----END EC PRIVATE KEY-----\n")
    current.unlink()
    current.symlink_to("/var/lib/kubelet/pki/" + dated.name)  # absolute, as the kubelet makes it
    old = pki / "kubelet-client-2025-11-01-10-00-00.pem"
    old.write_text("-----BEGIN EC PRIVATE KEY-----\nplanted-old-key\n-----END EC PRIVATE KEY-----\n")
    token = root / "var/lib/kubelet/pods" / POD / "volumes/kubernetes.io~projected/kube-api-access-abcde/token"
    token.parent.mkdir(parents=True)
    token.write_text("eyJhbGciOiJSUzI1NiJ9.planted")
    files = {
        "token": token, "old_pem": old, "dated_pem": dated, "current_pem": current,
        "kubelet_key": pki / "kubelet.key", "ca_key": root / "etc/kubernetes/pki/ca.key",
        "admin_conf": root / "etc/kubernetes/admin.conf", "kubelet_conf": root / "etc/kubernetes/kubelet.conf",
        "shadow": root / "etc/shadow", "outside": outside,
    }
    files["kubelet_key"].write_text("-----BEGIN RSA PRIVATE KEY-----\nplanted\n")
    files["ca_key"].write_text("planted-ca-key")
    files["admin_conf"].write_text("users:\n- user:\n    client-key-data: cGxhbnRlZA==\n")
    files["kubelet_conf"].write_text("users:\n- name: default-auth\n  user:\n"
                                     "    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n")
    files["shadow"].write_text("root:$6$planted:19000::::::\n")
    outside.write_text("not under the host root")
    return files


def test_hand_run_doctor_writes_only_its_bundle_and_opens_no_secret_it_does_not_need(tmp_path):
    abi = kernel_abi()
    assert abi >= 1, "this machine's kernel has no Landlock: the doctor cannot be confined (nor tested) here"
    root = copy_fixture("kubeadm-containerd-v2", tmp_path / "host")
    f = plant_secrets(root, tmp_path / "outside.txt")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    bundle = out_dir / "bundle.tar.gz"
    config = root / "etc/containerd/config.toml"
    cases = [
        # the secrets it does not need: not a byte
        (("read", str(f["token"])), "PermissionError"),
        (("read", str(f["old_pem"])), "PermissionError"),  # a rotated-out key: only the current one is read
        (("read", str(f["kubelet_key"])), "PermissionError"),
        (("read", str(f["ca_key"])), "PermissionError"),
        (("read", str(f["admin_conf"])), "PermissionError"),
        (("read", str(f["shadow"])), "PermissionError"),
        (("read", str(f["outside"])), "PermissionError"),  # outside the host root, not its own
        # what its checks need, serve's confinement hides: the kubelet's certificate file and kubeconfig
        (("read", str(f["dated_pem"])), "ok"),  # the file kubelet-client-current.pem links to
        (("read", str(f["kubelet_conf"])), "ok"),
        (("read", str(root / "etc/kubernetes/pki/ca.crt")), "ok"),
        (("read", str(config)), "ok"),
        (("list", str(root / "var/lib/kubelet/pods")), "ok"),
        # writes: none, the bundle's own directory and the bundle's path included
        (("write", str(bundle)), "PermissionError"),
        (("create", str(out_dir / "other.tar.gz")), "PermissionError"),
        (("rename", str(bundle)), "PermissionError"),
        (("unlink", str(bundle)), "PermissionError"),
        (("truncate", str(bundle)), "PermissionError" if abi >= 3 else "ok"),
        (("write", str(config)), "PermissionError"),
        (("create", str(root / "etc/containerd/new.toml")), "PermissionError"),
        (("mkdir", str(root / "etc/containerd/new.d")), "PermissionError"),
        (("unlink", str(config)), "PermissionError"),
        (("create", "/tmp/cri-doctor-confine-probe-%d" % os.getpid()), "PermissionError"),
        (("write", str(f["outside"])), "PermissionError"),
    ]
    status, out, err, probe = run_doctor("--host-root", str(root), "-o", "json", "--bundle", str(bundle),
                                         "--runtime-endpoint", f"unix://{tmp_path}/none.sock",
                                         ops=[op for op, _ in cases])
    assert status in (0, 1), err
    got = {f"{op} {path}": r for (op, path), r in zip([op for op, _ in cases], probe["results"])}
    assert got == {f"{op} {path}": r for (op, path), r in cases}
    report = report_of(out)
    assert report["confinement"] == {"state": "enforced", "abi": abi} if abi >= 3 else report["confinement"]["state"] == "partial"
    # the certs check read the client certificate through the link, which serve's confinement cannot
    certs = findings(report)["certs.kubelet"]
    assert certs[0] == "pass" and "not read" not in certs[1], certs
    assert "kubelet client certificate: /var/lib/kubelet/pki/kubelet-client-current.pem CN=" in certs[2], certs
    # the bundle it was asked for is written, and holds no key
    assert f"support bundle written to {bundle}" in err
    with tarfile.open(bundle) as tar:
        members = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers()}
    assert json.loads(members["findings.json"])["confinement"]["state"] in CONFINED
    assert findings(json.loads(members["findings.json"])) == findings(report)
    raw = b"".join(members.values())
    assert b"planted" not in raw and b"PRIVATE KEY" not in raw
    assert sorted(os.listdir(out_dir)) == ["bundle.tar.gz"]
    # the same tree unconfined: the same findings
    plain = [report_of(run_doctor("--host-root", str(root), "-o", "json", "--no-confine",
                                  "--runtime-endpoint", f"unix://{tmp_path}/none.sock")[1]) for _ in range(2)]
    assert plain[0]["confinement"] == {"state": "disabled", "abi": 0, "reason": "--no-confine"}
    assert_same_findings(report, *plain)
    assert f["token"].read_text().endswith("planted") and config.read_text().startswith("version = 2")


@pytest.mark.parametrize("fixture", ["kubeadm-containerd-v2", "kubeadm-containerd-broken", "kubespray", "k3s-healthy",
                                     "rke2-healthy", "microk8s", "crio", "kubeadm-rpm"])
def test_confined_and_unconfined_runs_find_the_same(tmp_path, fixture):
    """Every layout the doctor knows: confinement takes no finding away and adds none."""
    root = copy_fixture(fixture, tmp_path / "host")
    args = ("--host-root", str(root), "-o", "json", "--runtime-endpoint", f"unix://{tmp_path}/none.sock")
    confined = report_of(run_doctor(*args)[1])
    assert confined["confinement"]["state"] in CONFINED
    plain = [report_of(run_doctor(*args, "--no-confine")[1]) for _ in range(2)]
    assert_same_findings(confined, *plain)


def test_where_landlock_is_unavailable_the_doctor_runs_and_says_so_once(tmp_path):
    """A seccomp profile answering ENOSYS to the landlock_* calls (an old
    runtime's): the same findings, the bundle written, one line saying it."""
    root = copy_fixture("kubeadm-containerd-v2", tmp_path / "host")
    wrap = [sys.executable, str(REPO / "tests/seccomp_no_landlock.py")]
    args = ("--host-root", str(root), "--runtime-endpoint", f"unix://{tmp_path}/none.sock")
    status, text, err, _ = run_doctor(*args, wrap=wrap)
    assert status in (0, 1), err
    lines = [line for line in text.splitlines() if line.startswith("confinement:")]
    assert len(lines) == 1 and lines[0].startswith("confinement: unavailable (") and "ENOSYS" in lines[0], lines
    assert "ran unconfined" in lines[0]
    assert "confinement" not in err
    bundle = tmp_path / "b.tar.gz"
    status, out, err, _ = run_doctor(*args, "-o", "json", "--bundle", str(bundle), wrap=wrap)
    report = report_of(out)
    assert report["confinement"]["state"] == "unavailable" and report["confinement"]["abi"] == 0
    assert "ENOSYS" in report["confinement"]["reason"]
    with tarfile.open(bundle) as tar:
        assert json.loads(tar.extractfile("cri-doctor-bundle/findings.json").read())["confinement"]["state"] == "unavailable"
    plain = [report_of(run_doctor(*args, "-o", "json", "--no-confine")[1]) for _ in range(2)]
    assert_same_findings(report, *plain)


def test_the_environment_turns_it_off_as_for_serve(tmp_path):
    root = copy_fixture("crio", tmp_path / "host")
    _, out, _, probe = run_doctor("--host-root", str(root), "-o", "json", "--check", "kernel.swap",
                                  ops=[("create", str(tmp_path / "made"))], env={"CRI_EXPORTER_CONFINE": "false"})
    assert report_of(out)["confinement"]["state"] == "disabled"
    assert probe["results"] == ["ok"]  # unconfined indeed


@pytest.mark.parametrize("make, why", [
    (lambda p: p.symlink_to("/etc/hostname"), "symbolic link"),
    (lambda p: os.mkfifo(p), "not a regular file"),
])
def test_a_bundle_path_that_is_no_plain_file_is_refused_before_the_run(tmp_path, make, why):
    bundle = tmp_path / "b.tar.gz"
    make(bundle)
    proc = subprocess.run([sys.executable, "-m", "cri_exporter", "doctor", "--host-root", str(tmp_path),
                           "--check", "kernel.swap", "--bundle", str(bundle)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd="/")
    assert proc.returncode == 1 and proc.stdout == "", proc
    assert f"could not write the support bundle {bundle}: " in proc.stderr and why in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.containerd
def test_on_the_real_containerd_confined_finds_what_unconfined_finds(lab, tmp_path):
    """The lab's containerd, its pods running, the machine's own root: the
    confined run (with a bundle) gives the findings of unconfined runs."""
    cd, _ = lab
    bundle = tmp_path / "bundle.tar.gz"
    args = ("--host-root", "/", "--runtime-endpoint", cd.endpoint, "-o", "json")
    before = report_of(run_doctor(*args, "--no-confine")[1])
    status, out, err, _ = run_doctor(*args, "--bundle", str(bundle))
    after = report_of(run_doctor(*args, "--no-confine")[1])
    confined = report_of(out)
    assert confined["confinement"]["state"] in CONFINED and status in (0, 1)
    assert findings(confined)["cri.runtime_ready"][0] == "pass"
    assert_same_findings(confined, before, after)
    with tarfile.open(bundle) as tar:
        runtime = json.loads(tar.extractfile("cri-doctor-bundle/runtime.json").read())
    assert runtime["endpoint"] == cd.endpoint and runtime["version"]["runtime_name"] == "containerd"
    assert runtime["summary"]["pods"]["total"] >= 1


def test_an_existing_bundle_file_is_replaced_whole_under_the_confinement(tmp_path):
    """A bundle path that exists (the last run's): opened before the restriction,
    emptied and written through that descriptor, no longer than the new bundle."""
    root = copy_fixture("crio", tmp_path / "host")
    bundle = tmp_path / "b.tar.gz"
    bundle.write_bytes(b"x" * (4 << 20))  # larger than any bundle of this tree
    _, out, err, _ = run_doctor("--host-root", str(root), "-o", "json", "--bundle", str(bundle),
                                "--runtime-endpoint", f"unix://{tmp_path}/none.sock")
    assert report_of(out)["confinement"]["state"] in CONFINED
    assert f"support bundle written to {bundle}" in err
    assert bundle.stat().st_size < 1 << 20
    with tarfile.open(bundle) as tar:
        assert "cri-doctor-bundle/findings.json" in tar.getnames()
