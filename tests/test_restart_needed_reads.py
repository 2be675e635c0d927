"""When a denied read counts as "needs a restart" (confined_read.replaced_after_start),
under the real Landlock policies applied in a child to a planted host root; and
the tracker, the doctor's JSON and the export that carry it. The serve end to
end (gauge, log, /doctor, the restart itself): tests/test_restart_needed.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import pytest
from structlog.testing import capture_logs

from cri_exporter import restart_needed
from cri_exporter.doctor.metrics import DoctorCollector
from cri_exporter.doctor.model import CheckResult, Finding, Report, Severity, passed, skipped
from cri_exporter.doctor.report import parse_json, render_json
from tests.test_doctor_support import copy_fixture

REPO = Path(__file__).resolve().parent.parent

READS_CHILD = """
import json, os, sys
from cri_exporter import confine, confined_read
from cri_exporter.doctor.facts.files import read_config
from cri_exporter.hostfs import HostFS
root, mode, uid = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "doctor":
    from cri_exporter import confine_doctor
    state = confine_doctor.apply(root, True).state
else:
    state = confine.apply(confine.build_policy(root)).state
if uid:
    os.setgid(uid); os.setuid(uid)  # after the restriction: a process the file's mode keeps out
print(json.dumps({"state": state}), flush=True)
sys.stdin.readline()  # the parent changes the files now
out = {}
for path in json.loads(sys.argv[4]):
    try:
        read_config(HostFS(root), path)
        out[path] = "read"
    except confined_read.DeniedByConfinement as e:
        out[path] = "restart" if e.changed_at is not None else "denied"
    except OSError as e:
        out[path] = type(e).__name__
print(json.dumps(out), flush=True)
"""


def _reads(root: Path, mode: str, change, paths: list[str], uid: int = 0) -> dict:
    proc = subprocess.Popen([sys.executable, "-c", READS_CHILD, str(root), mode, str(uid), json.dumps(paths)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, cwd="/")
    assert proc.stdin is not None and proc.stdout is not None
    header = json.loads(proc.stdout.readline() or "null")
    assert header is not None and header["state"] in ("enforced", "partial"), proc.communicate(timeout=60)[1]
    change()
    proc.stdin.write("go\n")
    proc.stdin.flush()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def _replace(path: Path, data: bytes | None = None, mode: int | None = None) -> None:
    new = path.with_name(path.name + ".new")
    new.write_bytes(path.read_bytes() if data is None else data)
    if mode is not None:
        new.chmod(mode)
    os.replace(new, path)


def test_only_a_file_replaced_after_start_in_a_split_directory_needs_a_restart(tmp_path):
    """Under serve's policy: replaced in a split directory (/etc, /var/lib/kubelet) -> restart;
    replaced in a directory allowed whole (/etc/containerd) -> read; untouched -> read;
    removed -> absent; a secret (never read) -> denied, not a restart."""
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    (root / "etc/kubernetes/admin.conf").write_text("apiVersion: v1\nkind: Config\n")

    def change():
        _replace(root / "etc/crictl.yaml")
        _replace(root / "var/lib/kubelet/config.yaml")
        _replace(root / "etc/containerd/config.toml")
        (root / "var/lib/kubelet/kubeadm-flags.env").unlink()

    got = _reads(root, "serve", change, ["/etc/crictl.yaml", "/var/lib/kubelet/config.yaml",
                                         "/etc/containerd/config.toml", "/var/lib/kubelet/kubeadm-flags.env",
                                         "/etc/kubernetes/admin.conf"])
    assert got == {"/etc/crictl.yaml": "restart", "/var/lib/kubelet/config.yaml": "restart",
                   "/etc/containerd/config.toml": "read", "/var/lib/kubelet/kubeadm-flags.env": "FileNotFoundError",
                   "/etc/kubernetes/admin.conf": "denied"}


def test_nothing_changed_nothing_needs_a_restart(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    got = _reads(root, "serve", lambda: None, ["/etc/crictl.yaml", "/var/lib/kubelet/config.yaml"])
    assert got == {"/etc/crictl.yaml": "read", "/var/lib/kubelet/config.yaml": "read"}


def test_the_hand_run_doctor_is_never_told_to_restart_the_agent(tmp_path):
    """The hand-run doctor's own confinement denies a file replaced while it ran: running it
    again reads it; it is no agent's restart (no restart_needed, no gauge)."""
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    got = _reads(root, "doctor", lambda: _replace(root / "etc/crictl.yaml"), ["/etc/crictl.yaml"])
    assert got == {"/etc/crictl.yaml": "denied"}


def test_a_file_its_mode_keeps_out_is_the_files_fault_not_a_restart():
    """A file replaced after start that the agent's uid may not read (0600, another owner):
    a restart would not read it, so it is not counted, whatever Landlock also says.
    (The suite runs as root, as the lab's containerd needs; the child drops to nobody.)"""
    base = Path(tempfile.mkdtemp(prefix="restart-needed-"))
    try:
        base.chmod(0o755)  # the dropped uid must reach the host root
        root = copy_fixture("kubeadm-containerd-v2", base)
        for d, _, files in os.walk(root):
            os.chmod(d, 0o755)
            for f in files:
                os.chmod(os.path.join(d, f), 0o644)

        def change():
            _replace(root / "etc/crictl.yaml", mode=0o600)  # root's, unreadable by nobody
            _replace(root / "var/lib/kubelet/config.yaml")  # readable by anyone: a restart reads it

        got = _reads(root, "serve", change, ["/etc/crictl.yaml", "/var/lib/kubelet/config.yaml"], uid=65534)
        assert got == {"/etc/crictl.yaml": "denied", "/var/lib/kubelet/config.yaml": "restart"}
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=True)


# ---- the tracker, the doctor's JSON, the export

def _report(*findings: tuple[str, Finding]) -> Report:
    return Report([CheckResult(cid, cid.split(".")[0], Severity.WARNING, f) for cid, f in findings])


def test_the_doctors_json_carries_restart_needed_and_validates():
    report = _report(("crictl.endpoint", skipped("not judged: ...", seen="x", restart_needed="/etc/crictl.yaml")),
                     ("kubelet.config.parse", passed("parses")))
    text = render_json(report)
    data = json.loads(text)
    jsonschema.Draft202012Validator(json.loads((REPO / "schemas/doctor-report.schema.json").read_text())).validate(data)
    assert data["checks"][0]["restart_needed"] == "/etc/crictl.yaml"
    assert "restart_needed" not in data["checks"][1]  # absent unless set: older readers see nothing new
    assert parse_json(text).results[0].finding.restart_needed == "/etc/crictl.yaml"


def test_the_export_counts_files_logs_each_once_and_clears():
    needed = restart_needed.RestartNeeded()
    doctor = DoctorCollector(needed)
    one = _report(("crictl.endpoint", skipped("a", restart_needed="/etc/crictl.yaml")),
                  ("kubelet.config.parse", skipped("b", restart_needed="/var/lib/kubelet/config.yaml")),
                  ("kubelet.runtime_endpoint", skipped("c", restart_needed="/var/lib/kubelet/config.yaml")),
                  ("crio.config", skipped("does not apply")))
    with capture_logs() as logs:
        doctor.update(one)
        doctor.update(one)
    warned = [e for e in logs if e["log_level"] == "warning"]
    assert sorted(e["what"] for e in warned) == ["/etc/crictl.yaml", "/var/lib/kubelet/config.yaml"]
    assert "kubelet.config.parse, kubelet.runtime_endpoint" in next(
        e["detail"] for e in warned if e["what"] == "/var/lib/kubelet/config.yaml")
    assert all("systemctl restart cri-exporter" in e["remedy"] for e in warned)
    gauge = {s.labels["reason"]: s.value for f in needed.collect() for s in f.samples}
    assert gauge == {"doctor_check": 2, "web_config": 0}
    # a plain skip (does not apply) is no restart; after a restart-free run, nothing waits
    with capture_logs() as logs:
        doctor.update(_report(("crio.config", skipped("does not apply"))))
    assert [e["event"] for e in logs] == ["no longer waiting for a restart"] * 2
    assert {s.labels["reason"]: s.value for f in needed.collect() for s in f.samples} == {"doctor_check": 0,
                                                                                          "web_config": 0}
    with pytest.raises(ValueError):
        needed.set("anything", {})


def test_an_unconfined_agents_denied_web_config_file_is_not_a_restart(tmp_path, monkeypatch):
    """No confinement (--no-confine, or Landlock unavailable): a denied file is the file's fault."""
    from cri_exporter import confined_read
    from cri_exporter.webconfig import WebConfigFile

    monkeypatch.delenv(confined_read.CONFINED_ENV, raising=False)
    config = tmp_path / "web.yml"
    config.write_text("")
    web = WebConfigFile(str(config))
    other = tmp_path.parent / "elsewhere.pem"
    assert web.closed_until_restart(str(other)) is False


def test_a_confined_agents_web_config_file_needs_a_restart_only_outside_the_directories_of_start(tmp_path, monkeypatch):
    """The decision alone (the real denial is tests/test_restart_needed.py): beneath a directory the
    web config named at start (as named or through a link) the agent may read, so a denial there is
    not its confinement's; elsewhere, readable by its mode, it is."""
    from cri_exporter import confined_read
    from cri_exporter.webconfig import WebConfigFile

    monkeypatch.setenv(confined_read.CONFINED_ENV, "enforced")
    monkeypatch.setenv(confined_read.CONFINED_BY_ENV, confined_read.BY_SERVE)
    (tmp_path / "web/sub").mkdir(parents=True)
    (tmp_path / "new").mkdir()
    config = tmp_path / "web/web.yml"
    config.write_text("")
    for f in ("web/sub/a.pem", "new/b.pem"):
        (tmp_path / f).write_text("x")
    (tmp_path / "web/link.pem").symlink_to(tmp_path / "new/b.pem")
    web = WebConfigFile(str(config))
    assert web.closed_until_restart(str(tmp_path / "web/sub/a.pem")) is False
    assert web.closed_until_restart(str(tmp_path / "new/b.pem")) is True
    assert web.closed_until_restart(str(tmp_path / "web/link.pem")) is True  # Landlock follows the link out
    monkeypatch.setenv(confined_read.CONFINED_BY_ENV, confined_read.BY_DOCTOR)
    assert web.closed_until_restart(str(tmp_path / "new/b.pem")) is False
