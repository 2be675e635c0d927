"""The support bundle: what it holds, and that no planted secret survives.

tests/fixtures/hosts/bundle-secrets plants credentials in every place the
issue names (registry auth/username/password/identitytoken, Authorization
headers in hosts.toml, tokens in flags and YAML, private keys inline and as
files, a kubeconfig); the fake runtime's Status verbose config carries
registry credentials too. The whole tar, decompressed, must contain none.
"""
import gzip
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from click.testing import CliRunner

try:
    from tests.test_doctor_support import FakeCriServer, FakeRuntime, copy_fixture
except ImportError:
    from test_doctor_support import FakeCriServer, FakeRuntime, copy_fixture

from cri_exporter.doctor.cli import doctor
from cri_exporter.redact import redact_text

REPO = Path(__file__).resolve().parent.parent
# In-process runs must not confine the test runner itself (Landlock is irreversible).
IN_PROCESS = {"CRI_EXPORTER_CONFINE": "false"}

SECRETS = [f"planted-{s}" for s in (
    "user-1", "pass-2", "idtoken-4", "user-5", "pass-6", "bearer-7", "urlpass-8", "rawtoken-9", "keyfile-10",
    "flagtoken-11", "flagpass-12", "yamlauth-13", "cnitoken-14", "cnipass-15", "inline-key-16", "kubeconfig-17",
    "status-user-18", "status-pass-19", "status-tok-20", "status-bearer-21")] + [
    "cGxhbnRlZC1hdXRoLTM=", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwbGFudGVkIn0", "c3RhdHVzLWF1dGg="]


def make_bundle(tmp_path):
    root = copy_fixture("bundle-secrets", tmp_path)
    fake = FakeRuntime(images=[("registry.k8s.io/pause:3.10", True)])
    fake.running_config(sandboxImage="registry.k8s.io/pause:3.10", registry={
        "configPath": "", "configs": {"registry.internal.example": {"auth": {
            "username": "planted-status-user-18", "password": "planted-status-pass-19",
            "auth": "c3RhdHVzLWF1dGg=", "identitytoken": "planted-status-tok-20"}}},
        "headers": {"Authorization": ["Bearer planted-status-bearer-21"]}})
    out = tmp_path / "bundle.tar.gz"
    # As an operator runs it: a process of its own, confined (confine_doctor.py), the bundle opened before.
    with FakeCriServer(root / "run/containerd/containerd.sock", fake):
        res = subprocess.run([sys.executable, "-m", "cri_exporter", "doctor", "--host-root", str(root),
                              "--bundle", str(out), "-o", "json"], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, cwd="/")
    assert res.returncode in (0, 1) and "Traceback" not in res.stderr, res.stderr
    assert json.loads(res.stdout)["confinement"]["state"] in ("enforced", "partial")
    return out


def test_bundle_contains_no_planted_secret(tmp_path):
    path = make_bundle(tmp_path)
    raw = gzip.decompress(path.read_bytes())
    leaked = [s for s in SECRETS if s.encode() in raw]
    assert not leaked, f"secrets in the bundle: {leaked}"
    with tarfile.open(path) as tar:
        names = tar.getnames()
        texts = {n: tar.extractfile(n).read().decode() for n in names}
    assert not any(n.endswith((".key", "kubelet.conf", ".cert")) for n in names), names
    for n, t in texts.items():
        for s in SECRETS:
            assert s not in t, (n, s)


def test_bundle_keeps_what_helps_and_shows_redaction(tmp_path):
    path = make_bundle(tmp_path)
    with tarfile.open(path) as tar:
        files = {n.split("cri-doctor-bundle/", 1)[1]: tar.extractfile(n).read().decode() for n in tar.getnames()}
    assert {"README.txt", "findings.json", "findings.txt", "runtime.json", "facts.json"} <= set(files)
    findings = json.loads(files["findings.json"])
    assert findings["summary"]["total"] == len(findings["checks"])
    runtime = json.loads(files["runtime.json"])
    assert runtime["version"]["runtime_name"] == "containerd"
    assert runtime["status"]["conditions"][0]["type"] == "RuntimeReady"
    assert runtime["status"]["info"]["config"]["sandboxImage"] == "registry.k8s.io/pause:3.10"
    assert runtime["image_fs_info"][0]["kind"] == "image"
    assert runtime["summary"]["pods"]["total"] == 1
    facts = json.loads(files["facts.json"])
    assert facts["kernel"]["sysctls"]["net.ipv4.ip_forward"] == "1"
    assert facts["cgroup"]["version"] == 2
    config = files["files/etc/containerd/config.toml"]
    assert 'password = "REDACTED"' in config and 'sandbox_image = "registry.k8s.io/pause:3.10"' in config
    # Header values are redacted whatever the header's name (a custom auth header
    # cannot be told from a harmless one); the names stay, so the shape is visible.
    hosts = files["files/etc/containerd/certs.d/docker.io/hosts.toml"]
    assert 'x-custom = "REDACTED"' in hosts and "visible-header-value" not in hosts
    kubelet = files["files/var/lib/kubelet/config.yaml"]
    assert "X-Trace:" in kubelet and "visible-trace" not in kubelet and "cgroupDriver: systemd" in kubelet
    assert "--node-ip=10.0.0.5" in files["files/var/lib/kubelet/kubeadm-flags.env"]
    assert "files/etc/cni/net.d/20-secret-plugin.conflist" in files


def test_redact_keeps_paths_and_non_secret_values():
    text = 'tls_key_file = "/etc/ssl/k.pem"\nconfig_path = "/etc/containerd/certs.d"\nkeyFile: /x\n'
    assert redact_text(text) == text


def test_unwritable_bundle_path_is_reported_not_raised(tmp_path):
    res = CliRunner(env=IN_PROCESS).invoke(doctor, ["--host-root", str(tmp_path), "--check", "kernel.swap",
                                      "--bundle", str(tmp_path / "no/such/dir/b.tar.gz")])
    assert res.exit_code == 1 and "could not write the support bundle" in res.output
