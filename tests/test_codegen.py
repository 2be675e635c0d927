"""`python -m codegen --check`, the command CI runs, over the committed files."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import codegen

REPO = Path(__file__).resolve().parents[1]


def test_the_deploy_manifests_come_after_the_alert_rules_they_embed():
    names = [t.name for t in codegen.TARGETS]
    assert names.index("alerts") < names.index("deploy")


def test_check_passes_on_the_committed_files_and_names_a_stale_one(tmp_path, monkeypatch):
    r = subprocess.run([sys.executable, "-m", "codegen", "--check"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    target = REPO / "dashboards" / "pod-detail.json"
    lines: list[str] = []
    stale = codegen.Target("dashboards", lambda: {target: "{}\n"})
    monkeypatch.setattr(codegen, "TARGETS", (stale,))
    assert codegen.run(check=True, out=lines.append) == 1
    assert lines == ["stale: dashboards/pod-detail.json (run .venv/bin/python -m codegen)"]
    assert target.read_text() != "{}\n"  # --check writes nothing
