"""The Grafana dashboards: generated from dashboards/*.py, committed as JSON,
and held to the conventions Grafana's dashboard linter enforces."""
from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from dashboards import BOARDS, DIR, generate, lint
from tests.prometheus_proc import RELEASES, release, release_id

GENERATED = generate()


def test_committed_json_is_what_the_code_generates():
    """Run `python -m codegen` after changing dashboards/*.py, and commit the JSON."""
    stale = [name for name, text in GENERATED.items()
             if not (DIR / name).exists() or (DIR / name).read_text() != text]
    assert not stale, f"stale dashboards (run `python -m codegen`): {stale}"
    assert sorted(p.name for p in DIR.glob("*.json")) == sorted(BOARDS), "a JSON file without a builder"


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_conventions(name):
    assert lint.board_problems(json.loads(GENERATED[name])) == []


def test_uids_and_titles_are_unique():
    boards = [json.loads(t) for t in GENERATED.values()]
    assert len({b["uid"] for b in boards}) == len({b["title"] for b in boards}) == len(boards)


def test_pod_detail_has_its_variables():
    board = json.loads(GENERATED["pod-detail.json"])
    assert [v["name"] for v in board["templating"]["list"]] == [
        "datasource", "job", "instance", "namespace", "pod", "container"]


def test_lint_catches_what_it_should():
    """The linter itself: each convention broken once."""
    board = json.loads(GENERATED["runtime-health.json"])
    panel = lint.panels(board)[0]
    panel["description"] = ""
    panel["fieldConfig"]["defaults"].pop("unit")
    panel["targets"][0]["expr"] = ('rate(cri_request_errors_total{job="$job", instance="$instance"}[5m])'
                                   ' + cri_request_errors_total{job="$job"} + rate(cri_up{job="$job", instance="$instance"}'
                                   '[$__rate_interval]) + $nope')
    board["templating"]["list"].append(dict(board["templating"]["list"][0], name="ds2"))
    problems = "\n".join(lint.board_problems(board))
    for expected in ("no description", "no unit", "instead of [$__rate_interval]", "counter cri_request_errors_total is not "
                     "wrapped", "rate() of cri_up", "not scoped to $job and $instance", "undefined variable $nope",
                     "exactly one Prometheus datasource variable"):
        assert expected in problems


def test_lint_catches_what_breaks_on_prometheus3():
    """All parse on 2.42; on 3.5.3 holt_winters is an unknown function (seen
    with its promtool), le="1" matches nothing and a [1m:1m] subquery holds
    one point, too few for rate()."""
    sel = 'job="$job", instance="$instance"'
    expr = (f"holt_winters(cri_up{{{sel}}}[5m], 0.5, 0.5)"
            f' + sum(cri_request_duration_seconds_bucket{{{sel}, le="1"}})'
            f" + max_over_time(rate(cri_request_errors_total{{{sel}}}[$__rate_interval])[1m:1m])")
    problems = "\n".join(lint.prometheus3_problems(expr))
    for expected in ("holt_winters() is gone", 'le="1": Prometheus 3 stores le as a float', "subquery [1m:1m]"):
        assert expected in problems
    fixed = f'sum(cri_request_duration_seconds_bucket{{{sel}, le="1.0"}}) + max_over_time(cri_up{{{sel}}}[2m:1m])'
    assert lint.prometheus3_problems(fixed) == []


@pytest.mark.parametrize("prometheus", RELEASES, ids=release_id)
def test_every_query_parses(prometheus, tmp_path):
    """Each release's promtool parses each query (variables substituted) as a
    recording rule: the same PromQL parser Prometheus uses, without a server."""
    values = {"job": "cri-exporter", "instance": "node:9920", "namespace": "default", "pod": "p", "container": ".*",
              "__rate_interval": "1m", "__interval": "15s", "__range": "1h", "datasource": "prometheus"}
    groups = []
    for name, text in GENERATED.items():
        for p in lint.panels(json.loads(text)):
            for t in p["targets"]:
                groups.append({"name": f"{name} / {p['title']} / {t['refId']}",
                               "rules": [{"record": "dashboard:query", "expr": lint.substitute(t["expr"], values)}]})
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    result = subprocess.run([release(prometheus).promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
