"""What the confined agent cannot see until it restarts, said where an operator
looks: cri_exporter_restart_needed{reason}, a warning in the log naming the
file and the restart, and the doctor's finding (restart_needed on /doctor).

Real confinement throughout: serve confines itself (Landlock) over a planted
host root, files are replaced by rename after it started, as editors, tools
and Secret volumes do, and a second serve over the same tree (the restart)
reads them. Healthy cases say nothing: a file replaced in a directory the
policy allows whole opens, and a file removed is absent, not unseen."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.exporter_proc import ExporterProcess, wait_for
from tests.test_doctor_support import copy_fixture
from tests.webtls import der_of, make_pki, write_config

pytestmark = [pytest.mark.containerd, pytest.mark.newest_runtime]

DOCTOR_RUN = 120.0  # seconds for a few doctor runs (a child interpreter each) on a loaded machine
RELOADED = 30.0  # the web config is stat'ed a few times a second; a reload is a millisecond


def replace(path: Path, data: bytes) -> None:
    """As editors and tools write: a new file renamed over the old one (a new inode)."""
    new = path.with_name(path.name + ".tmp")
    new.write_bytes(data)
    os.replace(new, path)


def needed(exp: ExporterProcess) -> dict[str, float]:
    s = exp.scrape()
    return {dict(labels)["reason"]: v for (name, labels), v in s.items() if name == "cri_exporter_restart_needed"}


def doctor_json(exp: ExporterProcess) -> dict:
    status, _, body = exp.get("/doctor")
    assert status == 200, body[:300]
    return json.loads(body)


def checks(report: dict) -> dict[str, dict]:
    return {c["id"]: c for c in report["checks"]}


def log_events(exp: ExporterProcess, event: str) -> list[dict]:
    out = []
    for line in exp.log().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("event") == event:
            out.append(e)
    return out


def run_after(exp: ExporterProcess, t: float) -> dict:
    """The first /doctor report of a run that started after `t` (seconds since the epoch)."""
    def newer() -> dict | None:
        status, _, body = exp.get("/doctor")
        if status != 200:
            return None  # no run finished yet
        report = json.loads(body)
        return report if report["summary"]["started_at"] > t else None

    return wait_for(newer, timeout=DOCTOR_RUN, what="a doctor run after the change")


RESTART_WARNING = "the agent needs a restart to see what changed after it started"


def test_a_check_skipped_over_a_file_replaced_after_start_says_a_restart_is_needed(containerd, tmp_path):
    """crictl.yaml rewritten after start to name a socket that does not exist: the
    confined agent cannot open the new file, so crictl.endpoint skips instead of
    failing. That skip is no longer silent: the gauge counts the file, the log
    names it and the restart, /doctor marks the check. Restarted, the agent
    judges the file (it fails) and waits for nothing. Before that, a file replaced
    in a directory allowed whole (/etc/containerd) and a file removed say nothing."""
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    args = ("--host-root", str(root), "--collectors", "runtime,doctor", "--doctor-interval", "1")
    with ExporterProcess(containerd.endpoint, *args) as exp:
        first = run_after(exp, 0)
        assert first["confinement"]["state"] in ("enforced", "partial")
        assert checks(first)["crictl.endpoint"]["status"] != "skip"
        assert needed(exp) == {"doctor_check": 0, "web_config": 0}

        # healthy changes: readable after the change, or simply gone
        config = root / "etc/containerd/config.toml"
        replace(config, config.read_bytes())
        (root / "var/lib/kubelet/kubeadm-flags.env").unlink()
        after = run_after(exp, os.stat(config).st_ctime + 1)
        assert not any("restart_needed" in c for c in after["checks"]), after["checks"]
        assert checks(after)["containerd.config.parse"]["status"] == "pass"
        assert needed(exp) == {"doctor_check": 0, "web_config": 0}
        assert log_events(exp, RESTART_WARNING) == []

        replace(root / "etc/crictl.yaml", b"runtime-endpoint: unix:///run/crio/crio.sock\n")
        wait_for(lambda: needed(exp)["doctor_check"] == 1, timeout=DOCTOR_RUN, what="the gauge")
        got = checks(doctor_json(exp))["crictl.endpoint"]
        assert got["status"] == "skip" and got["restart_needed"] == "/etc/crictl.yaml", got
        assert "after the agent started" in got["summary"] and "restarting the agent reads it" in got["summary"], got
        assert "rollout restart daemonset/cri-exporter" in got["summary"], got
        assert "systemctl restart cri-exporter" in got["summary"], got
        assert needed(exp)["web_config"] == 0
        # logged once, however many runs see it
        run_after(exp, exp_time_of_last_run(exp) + 0.5)
        warned = log_events(exp, RESTART_WARNING)
        assert len(warned) == 1, warned
        assert warned[0]["level"] == "warning" and warned[0]["reason"] == "doctor_check"
        assert warned[0]["what"] == "/etc/crictl.yaml" and "crictl.endpoint" in warned[0]["detail"]
        assert "rollout restart" in warned[0]["remedy"] and "systemctl restart cri-exporter" in warned[0]["remedy"]

    with ExporterProcess(containerd.endpoint, *args) as restarted:
        report = run_after(restarted, 0)
        got = checks(report)["crictl.endpoint"]
        assert got["status"] == "fail" and "/run/crio/crio.sock" in got["summary"], got
        assert not any("restart_needed" in c for c in report["checks"])
        assert needed(restarted) == {"doctor_check": 0, "web_config": 0}


def exp_time_of_last_run(exp: ExporterProcess) -> float:
    return float(doctor_json(exp)["summary"]["started_at"])


def _web(pki_dir: Path) -> dict:
    return {"tls_server_config": {"cert_file": str(pki_dir / "server.pem"), "key_file": str(pki_dir / "server.key")}}


def test_a_web_config_reloaded_to_name_a_new_directory_says_a_restart_is_needed(containerd, tmp_path):
    """The web config names certificates in a directory it did not name at start:
    the confined agent cannot read them, keeps serving the old certificate, and says
    that a restart reads them (the gauge, the reload's error in the log, the restart
    warning). A certificate rotated in the directory named at start is taken and
    says nothing. Restarted, the agent serves the new directory's certificate."""
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    pki = make_pki(tmp_path / "pki")
    web = tmp_path / "web"
    web.mkdir()
    first = web / "certs"
    first.mkdir()
    for name, src in (("server.pem", pki.cert_file), ("server.key", pki.key_file)):
        shutil.copy(src, first / name)
    config = write_config(web / "web.yml", _web(first))
    ctx = pki.client_context()

    def peer(exp: ExporterProcess) -> bytes:
        import socket
        with socket.create_connection((exp.host, exp.port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.getpeercert(binary_form=True)

    args = ("--host-root", str(root), "--collectors", "runtime", "--web.config.file", str(config))
    with ExporterProcess(containerd.endpoint, *args, tls=ctx) as exp:
        assert needed(exp) == {"doctor_check": 0, "web_config": 0}
        # rotated where it was: taken, nothing waits
        cert, key = pki.issue("rotated", "localhost", "127.0.0.1")
        replace(first / "server.pem", cert.read_bytes())
        replace(first / "server.key", key.read_bytes())
        wait_for(lambda: peer(exp) == der_of(cert), timeout=RELOADED, what="the rotated certificate")
        assert needed(exp) == {"doctor_check": 0, "web_config": 0}

        # a new directory, named by the reloaded file
        second = tmp_path / "web-new"
        second.mkdir()
        cert2, key2 = pki.issue("moved", "localhost", "127.0.0.1")
        shutil.copy(cert2, second / "server.pem")
        shutil.copy(key2, second / "server.key")
        replace(config, (web / "web.yml").read_bytes().replace(str(first).encode(), str(second).encode()))
        wait_for(lambda: needed(exp)["web_config"] == 1, timeout=RELOADED, what="the gauge")
        s = exp.scrape()
        assert s.get1("cri_exporter_web_config_last_reload_successful") == 0
        assert peer(exp) == der_of(cert)  # the last good one stays in force
        # (a reload between the two renames above may have failed on a mismatched pair: not this one)
        errors = [e for e in log_events(exp, "web config not reloaded; serving with the last good one")
                  if "Permission denied" in e["error"]]
        assert len(errors) == 1, errors
        assert "restarting the agent reads it" in errors[0]["error"], errors
        warned = log_events(exp, RESTART_WARNING)
        assert len(warned) == 1 and warned[0]["reason"] == "web_config", warned
        assert warned[0]["what"] == str(second / "server.pem"), warned
        assert needed(exp)["doctor_check"] == 0

    with ExporterProcess(containerd.endpoint, *args, tls=ctx) as restarted:
        assert peer(restarted) == der_of(cert2)
        assert needed(restarted) == {"doctor_check": 0, "web_config": 0}
        assert restarted.scrape().get1("cri_exporter_web_config_last_reload_successful") == 1
