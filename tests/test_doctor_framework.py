"""The doctor as a user sees it: the CLI's exit codes, text and JSON output
(validated against schemas/doctor-report.schema.json), selection, and a
check that crashes."""
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

try:
    from tests.test_doctor_support import FakeCriServer, copy_fixture, fixture
except ImportError:
    from test_doctor_support import FakeCriServer, copy_fixture, fixture

from cri_exporter.doctor import Severity, Status, UnknownCheck, run_doctor
from cri_exporter.doctor import registry, report
from cri_exporter.doctor.cli import doctor
from cri_exporter.doctor.model import Check
from cri_exporter.hostfs import HostFS

# In-process runs must not confine the test runner itself (Landlock is irreversible).
IN_PROCESS = {"CRI_EXPORTER_CONFINE": "false"}

SCHEMA = json.loads((Path(__file__).parent.parent / "schemas" / "doctor-report.schema.json").read_text())


def invoke(*args, **kw):
    return CliRunner(env=IN_PROCESS).invoke(doctor, list(args), catch_exceptions=False, **kw)


@pytest.mark.parametrize("case", ["kubeadm-containerd-v2", "kubeadm-containerd-broken", "containerd-v3",
                                  "crio", "crio-broken", "crio-parse-error", "containerd-parse-error",
                                  "containerd-v3-stale-sections", "containerd-no-version"])
def test_json_output_validates_against_schema(case, tmp_path):
    import jsonschema  # a test-only dependency (pyproject: test extra)
    res = invoke("--host-root", fixture(case), "--runtime-endpoint", f"unix://{tmp_path}/none.sock", "-o", "json")
    data = json.loads(res.output)
    jsonschema.validate(data, SCHEMA, format_checker=jsonschema.FormatChecker())
    assert data["summary"]["total"] == len(data["checks"]) == len(registry.all_checks())
    assert res.exit_code == (0 if data["summary"]["ok"] else 1)


def test_every_warn_or_fail_on_broken_node_is_actionable():
    data = json.loads(invoke("--host-root", fixture("kubeadm-containerd-broken"), "-o", "json").output)
    bad = [c for c in data["checks"] if c["status"] in ("warn", "fail")]
    assert len(bad) > 15
    for c in bad:
        assert c["detail"] and c["why"] and c["fix"] and c["refs"], c["id"]


def test_exit_codes(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    with FakeCriServer(root / "run/containerd/containerd.sock"):
        assert invoke("--host-root", str(root), "--check", "kernel").exit_code == 0
        assert invoke("--host-root", str(root), "--check", "crictl.endpoint").exit_code == 0
    (root / "etc/crictl.yaml").unlink()
    assert invoke("--host-root", str(root), "--check", "crictl.endpoint").exit_code == 0  # a warning
    assert invoke("--host-root", str(root), "--check", "crictl.endpoint", "--strict").exit_code == 1
    assert invoke("--host-root", fixture("kubeadm-containerd-broken"), "--check", "kernel.swap").exit_code == 1
    assert invoke("--host-root", str(root), "--check", "no.such.check").exit_code == 2
    assert invoke("--host-root", str(root), "--skip", "bogus").exit_code == 2
    assert invoke("--host-root", str(root), "--output", "yaml").exit_code == 2


def test_unknown_id_is_a_usage_error_naming_it():
    res = CliRunner(env=IN_PROCESS).invoke(doctor, ["--check", "kernel.swapp"])
    assert res.exit_code == 2 and "kernel.swapp" in res.output
    with pytest.raises(UnknownCheck):
        run_doctor(HostFS(fixture("crio")), None, checks=["nope"])


def test_check_and_skip_select_by_id_and_area():
    r = run_doctor(HostFS(fixture("crio")), "unix:///nonexistent.sock", checks=["kernel", "cni.config"],
                   skip=["kernel.swap"])
    ids = [x.id for x in r.results]
    assert "cni.config" in ids and "kernel.swap" not in ids and "kernel.inotify" in ids
    assert all(i.startswith(("kernel.", "cni.config")) for i in ids)


def test_a_crashing_check_becomes_a_skip_and_the_rest_still_run(monkeypatch):
    def boom(ctx):
        raise RuntimeError("kaboom")

    monkeypatch.setitem(registry.CHECKS, "kernel.swap", Check("kernel.swap", Severity.CRITICAL, boom))
    r = run_doctor(HostFS(fixture("kubeadm-containerd-broken")), None, checks=["kernel"]).by_id()
    assert r["kernel.swap"].status is Status.SKIP and "kaboom" in r["kernel.swap"].finding.summary
    assert r["kernel.sysctl.ip_forward"].status is Status.FAIL


def test_text_report_groups_by_area_and_explains_failures():
    res = invoke("--host-root", fixture("kubeadm-containerd-broken"), "--check", "kernel", "--check", "cni")
    out = res.output
    assert "\x1b[" not in out  # not a TTY: no colour
    lines = out.splitlines()
    assert lines.index("kernel") < lines.index("cni")
    i = next(n for n, line in enumerate(lines) if "kernel.sysctl.ip_forward" in line)
    assert lines[i].split()[0] == "FAIL"
    assert lines[i + 1].strip().startswith("seen:") and lines[i + 2].strip().startswith("why:")
    assert any(line.strip().startswith("fix:") for line in lines[i:i + 6])
    assert any(line.strip().startswith("ref:  https://") for line in lines[i:i + 8])
    assert lines[-1].startswith("summary: ")


def test_colour_only_when_asked():
    r = run_doctor(HostFS(fixture("kubeadm-containerd-broken")), None, checks=["kernel.swap"])
    assert "\x1b[31;1mFAIL" in report.render_text(r, colour=True)
    assert "\x1b[" not in report.render_text(r, colour=False)


def test_list_shows_every_id():
    out = invoke("--list").output
    for cid in registry.all_checks():
        assert cid in out


def test_doctor_never_raises_on_an_empty_or_garbage_root(tmp_path):
    (tmp_path / "etc/containerd").mkdir(parents=True)
    (tmp_path / "etc/containerd/config.toml").write_bytes(bytes(range(256)) * 10)
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/swaps").write_bytes(b"\xff\xfe")
    (tmp_path / "proc/modules").mkdir()  # a directory where a file should be
    for root in (tmp_path, tmp_path / "missing"):
        r = run_doctor(HostFS(str(root)), None)
        assert not [x for x in r.results if "could not run" in x.finding.summary]


def test_a_check_that_does_not_apply_is_never_called(monkeypatch):
    """requires= is decided when the list is built: the CRI-O checks on a
    containerd node are skips naming the requirement, their functions unrun."""
    calls = []
    crio_parse = registry.all_checks()["crio.config.parse"]
    monkeypatch.setitem(registry.CHECKS, "crio.config.parse",
                        Check(crio_parse.id, crio_parse.severity, lambda ctx: calls.append(1), requires=crio_parse.requires))
    r = run_doctor(HostFS(fixture("kubeadm-containerd-v2")), "unix:///nonexistent.sock",
                   checks=["crio.config.parse"]).by_id()["crio.config.parse"]
    assert calls == [] and r.status is Status.SKIP
    assert r.finding.summary == "crio is not this node's runtime (containerd is)"


def test_finding_constructors_take_keywords_only():
    from cri_exporter.doctor.model import failed, passed, warned

    with pytest.raises(TypeError):
        warned("summary", "seen", "why", "fix", ["ref"])
    with pytest.raises(TypeError):
        passed("summary", "seen")
    f = failed("s", seen="seen", why="why", fix="fix", refs=["r"])
    assert (f.seen, f.why, f.fix, f.refs) == ("seen", "why", "fix", ("r",))
