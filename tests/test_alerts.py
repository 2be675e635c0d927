"""The alert rules: generated from alerts/settings.py and alerts/rules.py,
valid for promtool, unit-tested with `promtool test rules` of every
Prometheus release the project supports (tests/prometheus_proc.RELEASES),
each with a runbook."""
from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from alerts import DIR, OPERATOR_FILE, RULES_FILE, generate, settings
from alerts.rules import alert_names, groups
from dashboards import lint
from tests.prometheus_proc import RELEASES, release, release_id

TESTS = sorted((DIR / "tests").glob("*.yml"))
RULES = [r for g in groups() for r in g["rules"]]
SEVERITIES = {"critical", "warning", "info"}

# The issue's list, each by the alert that covers it.
REQUIRED = {
    "exporter down": "CriExporterDown", "runtime down": "CriRuntimeDown",
    "RuntimeReady false": "CriRuntimeNotReady", "NetworkReady false": "CriNetworkNotReady",
    "CPU throttling high": "CriContainerCPUThrottlingHigh", "container OOM-killed": "CriContainerOOMKilled",
    "memory working set near limit": "CriContainerMemoryNearLimit", "image filesystem filling up": "CriImageFsAlmostFull",
    "image filesystem predicted full": "CriImageFsPredictedFull", "inodes low": "CriImageFsInodesLow",
    "pod network errors": "CriPodNetworkErrors", "doctor check failing": "CriDoctorCheckFailing",
    "collector failing": "CriCollectorFailing", "scrape slow": "CriExporterScrapeSlow",
    # issue 15.1
    "container crash-looping": "CriContainerCrashLooping", "OOM kills by rate": "CriPodOOMKillsRepeated",
    # issue 15.5
    "container near its fd limit": "CriContainerFdsNearLimit",
    # issue 15.2
    "pod pushing the node over the eviction thresholds": "CriPodEphemeralStorageFillingNode",
    "kubelet filesystem near its inode eviction threshold": "CriNodefsInodesNearEviction",
    "pod pushing the node over its inode eviction threshold": "CriPodEphemeralInodesFillingNode",
    # issue 15: the readers off the scrape path behind 15.2-15.5
    "background reader stuck, its numbers frozen": "CriBackgroundReadingStale",
}


def promtool(name: str, *args: str) -> subprocess.CompletedProcess:
    """`promtool` of Prometheus release `name`, run in alerts/."""
    return subprocess.run([release(name).promtool, *args], capture_output=True, text=True, cwd=DIR)


def test_committed_files_are_what_the_code_generates():
    """Run `python -m codegen` after changing alerts/*.py, and commit the YAML."""
    stale = [n for n, t in generate().items() if not (DIR / n).exists() or (DIR / n).read_text() != t]
    assert not stale, f"stale (run `python -m codegen`): {stale}"


def test_the_operator_manifest_holds_the_same_groups():
    manifest = yaml.safe_load((DIR / OPERATOR_FILE).read_text())
    assert manifest["kind"] == "PrometheusRule" and manifest["apiVersion"] == "monitoring.coreos.com/v1"
    assert manifest["spec"]["groups"] == yaml.safe_load((DIR / RULES_FILE).read_text())["groups"]


@pytest.mark.parametrize("prometheus", RELEASES, ids=release_id)
def test_promtool_check_rules(prometheus, tmp_path):
    result = promtool(prometheus, "check", "rules", RULES_FILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULES)} rules found" in result.stdout
    # the short-window copy the end-to-end test loads must be valid too
    fast = tmp_path / "fast.yml"
    fast.write_text(yaml.safe_dump({"groups": groups(settings.fast())}))
    result = promtool(prometheus, "check", "rules", str(fast))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("prometheus", RELEASES, ids=release_id)
def test_promtool_unit_tests(prometheus):
    """Each release evaluates the same tests: Prometheus 3's left-open range
    selectors (a sample exactly at the window's start no longer counts) must
    not move any alert's firing time or value in them."""
    result = promtool(prometheus, "test", "rules", *[str(p.relative_to(DIR)) for p in TESTS])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_issue_list_is_covered():
    assert set(REQUIRED.values()) <= set(alert_names())


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r["alert"])
def test_each_alert_is_complete(rule):
    name = rule["alert"]
    assert re.fullmatch(r"Cri[A-Za-z]+", name)
    assert re.fullmatch(r"\d+[smh]", rule["for"])
    severity = rule["labels"]["severity"]
    # CriDoctorCheckFailing takes the failing check's severity (same scale)
    assert severity in SEVERITIES or severity == "{{ $labels.severity }}"
    ann = rule["annotations"]
    assert set(ann) == {"summary", "description", "runbook_url"}
    assert "{{" in ann["description"], "the description must say which node / container"
    assert ann["runbook_url"] == f"{settings.PRODUCTION.runbook_base}{name}.md"
    assert lint.counter_problems(rule["expr"]) == []
    assert lint.prometheus3_problems(rule["expr"]) == []
    assert 'job="cri-exporter"' in rule["expr"]


@pytest.mark.parametrize("name", alert_names())
def test_each_alert_has_a_runbook(name):
    text = (DIR / "runbooks" / f"{name}.md").read_text()
    assert text.startswith(f"# {name}\n")
    for section in ("## What it means", "## How to confirm", "## How to fix"):
        assert section in text
    assert "`" in text.split("## How to confirm")[1], "confirming needs a concrete query or command"


def test_no_orphan_runbooks():
    assert sorted(p.stem for p in (DIR / "runbooks").glob("*.md")) == sorted(alert_names())


def _unit_tests() -> dict[str, list[dict]]:
    by_alert: dict[str, list[dict]] = {}
    for path in TESTS:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for t in group.get("alert_rule_test", []):
                by_alert.setdefault(t["alertname"], []).append(t)
    return by_alert


@pytest.mark.parametrize("name", alert_names())
def test_each_alert_is_unit_tested(name):
    """Not firing before its `for` window, then firing with labels and all
    annotations; the healthy series in the same input prove it stays quiet on them."""
    cases = _unit_tests().get(name, [])
    quiet = [c for c in cases if not c["exp_alerts"]]
    firing = [c for c in cases if c["exp_alerts"]]
    assert quiet and firing, f"{name}: needs a not-yet-firing case and a firing one"
    assert min(_minutes(c["eval_time"]) for c in quiet) < max(_minutes(c["eval_time"]) for c in firing)
    for case in firing:
        for alert in case["exp_alerts"]:
            assert "severity" in alert["exp_labels"]
            assert set(alert["exp_annotations"]) == {"summary", "description", "runbook_url"}


def _minutes(duration: str) -> float:
    total = 0.0
    for value, unit in re.findall(r"(\d+)([smh])", duration):
        total += int(value) * {"s": 1 / 60, "m": 1, "h": 60}[unit]
    return total


def test_fast_settings_change_only_windows():
    fast, prod = groups(settings.fast()), groups()
    for g_fast, g_prod in zip(fast, prod):
        for a, b in zip(g_fast["rules"], g_prod["rules"]):
            assert a["alert"] == b["alert"] and a["labels"] == b["labels"]
            assert a["for"] == "3s"
            assert re.sub(r"\[\w+\]", "[w]", a["expr"]) == re.sub(r"\[\w+\]", "[w]", b["expr"])
