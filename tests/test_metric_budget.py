"""The series budget (issue 18.2): --metrics-allow / --metrics-deny /
--no-pod-cgroup-metrics choose the families, denied work is not done, and the
lean profile (cri_exporter/metric_profiles.py) keeps what the shipped
dashboards and alerts use."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cri_exporter.cgroups import files as cgfiles
from cri_exporter.collectors.base import PartialCollection
from cri_exporter.collectors.cgroup_readings import CONTAINER_CGROUP_FAMILIES, POD_CGROUP_FAMILIES
from cri_exporter.exporter import Exporter
from cri_exporter.metric_filter import HEALTH, MetricFilter, MetricFilterError, exposed_name
from cri_exporter.metric_profiles import LEAN_ALLOW
from cri_exporter.podnet import PodNetwork
from cri_exporter.settings import Settings
from dashboards import lint
from tests.exporter_proc import ExporterProcess, wait_for

REPO = Path(__file__).resolve().parents[1]
# Series Prometheus makes itself for every target: no exporter serves them.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
                  "scrape_series_added"}
NO_DOCTOR = "runtime,containers,stats,imagefs,cgroups,runtime_processes"


def families(text: str) -> set[str]:
    """Family names as on their # TYPE lines (counters with _total)."""
    return set(re.findall(r"^# TYPE (\S+) ", text, re.M))


# ---- the filter ---------------------------------------------------------------

def test_allow_and_deny_match_whole_names_and_deny_wins():
    f = MetricFilter(allow="cri_container_.*,cri_pods", deny="cri_container_blkio_.*")
    assert f.wants("cri_container_cpu_usage_seconds_total")
    assert f.wants("cri_pods")
    assert not f.wants("cri_pods_total")  # a whole-name match: cri_pods is not a prefix
    assert not f.wants("cri_container_blkio_read_bytes_total")  # deny wins over allow
    assert not f.wants("cri_pod_info")
    assert not MetricFilter(allow="cri_pod").wants("cri_pod_info")
    assert MetricFilter(deny="info").wants("cri_pod_info")  # no search, a full match


def test_scrape_health_is_never_filtered_and_a_deny_naming_it_is_said():
    f = MetricFilter(allow="cri_pod_info", deny="cri_.*")
    assert all(f.wants(name) for name in HEALTH)
    assert f.health_named_by_deny() == sorted(HEALTH)
    assert MetricFilter(allow="cri_pod_info").health_named_by_deny() == []


def test_no_flags_filters_nothing():
    f = MetricFilter()
    assert not f.active and f.wants("anything_at_all")


def test_a_bad_pattern_names_its_flag():
    with pytest.raises(MetricFilterError, match=r"^--metrics-deny: 'cri_\(' is not a regular expression"):
        MetricFilter(deny="cri_pods,cri_(")


@pytest.mark.parametrize("flag", ["--metrics-allow", "--metrics-deny"])
def test_serve_refuses_a_bad_pattern_at_start_without_a_traceback(flag):
    out = subprocess.run([sys.executable, "-m", "cri_exporter", "serve", flag, "cri_[a-"],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 2, out
    assert f"Invalid value for '{flag}'" in out.stderr and "is not a regular expression" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_env_var_is_read_and_checked_like_the_flag():
    out = subprocess.run([sys.executable, "-m", "cri_exporter", "serve"], capture_output=True, text=True, timeout=60,
                         cwd=REPO, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
                                        "CRI_EXPORTER_METRICS_ALLOW": "(("})
    assert out.returncode == 2 and "CRI_EXPORTER_METRICS_ALLOW" in out.stderr and "Traceback" not in out.stderr


# ---- the lean profile covers the dashboards and alerts ------------------------------

def _dashboard_exprs() -> list[str]:
    out = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    out.append(value)
                elif key == "query" and isinstance(value, str) and value.startswith("label_values("):
                    out.append(value[len("label_values("):].rsplit(",", 1)[0] if "," in value else value[13:-1])
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    boards = sorted((REPO / "dashboards").glob("*.json"))
    assert boards
    for board in boards:
        walk(json.loads(board.read_text()))
    return out


def _alert_exprs() -> list[str]:
    out = []
    rule_files = sorted((REPO / "alerts").glob("*.rules.yml"))
    assert rule_files
    for path in rule_files:
        for group in yaml.safe_load(path.read_text())["groups"]:
            out += [rule["expr"] for rule in group["rules"]]
    return out


def used_metrics() -> dict[str, str]:
    """Every metric name a shipped dashboard query, dashboard variable or alert names -> where."""
    found: dict[str, str] = {}
    for where, exprs in (("dashboards", _dashboard_exprs()), ("alerts", _alert_exprs())):
        for expr in exprs:
            for sel in lint.selectors(lint.substitute(expr, {})):
                assert sel.metric, f"a selector without a metric name in {expr!r}: the budget cannot check it"
                found.setdefault(sel.metric, where)
    return found


def _family_of(sample_name: str, lean: MetricFilter) -> str:
    if lean.wants(sample_name):
        return sample_name
    for suffix in ("_bucket", "_count", "_sum"):  # a histogram's samples
        if sample_name.endswith(suffix) and lean.wants(sample_name[: -len(suffix)]):
            return sample_name[: -len(suffix)]
    return sample_name


LEAN = MetricFilter(allow=LEAN_ALLOW)


def in_lean(sample_name: str) -> bool:
    return sample_name in PROMETHEUS_OWN or LEAN.wants(_family_of(sample_name, LEAN))


def _boards() -> dict[str, dict]:
    boards = {p.name: json.loads(p.read_text()) for p in sorted((REPO / "dashboards").glob("*.json"))}
    assert boards
    return boards


def marked_families() -> set[str]:
    """Families outside the lean set that marked panels read (empty under the lean profile)."""
    return {m for board in _boards().values() for p in lint.panels(board) if lint.is_marked_default_only(p)
            for m in lint.panel_metrics(p) if not in_lean(m)}


def test_the_alerts_and_dashboard_variables_use_only_the_lean_set():
    used = used_metrics()
    assert len(used) > 40  # the parse found the queries
    assert {"cri_up", "cri_container_cpu_usage_seconds_total", "cri_container_memory_oom_kills_total",
            "cri_request_duration_seconds_bucket"} <= set(used)
    outside = {s.metric for expr in _alert_exprs() for s in lint.selectors(expr) if not in_lean(s.metric)}
    assert not outside, f"used by alerts but not in the lean set (metric_profiles.py): {sorted(outside)}"


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "dashboards").glob("*.json")))
def test_dashboard_panels_use_only_the_lean_set_but_for_marked_ones(name):
    """A panel on a family the lean set leaves out is titled "(default profile)" and says in its
    description that it is empty under the lean profile, naming the family and why."""
    assert lint.profile_problems(_boards()[name], in_lean) == []


def test_marked_panels_show_the_families_kept_out_of_the_lean_set_for_their_cost():
    """Issue 15: TCP states and the volumes' and layers' inodes have panels, though not in the lean
    set; the pods' inodes by source are in it, for CriPodEphemeralInodesFillingNode."""
    assert {"cri_pod_tcp_connections", "cri_pod_emptydir_inodes",
            "cri_container_writable_layer_inodes"} <= marked_families()
    assert in_lean("cri_pod_ephemeral_storage_inodes")
    assert "cri_pod_ephemeral_storage_inodes" not in marked_families()


def test_the_profile_check_fails_for_an_unmarked_panel_and_a_needless_mark():
    """The check itself, on a copy of a shipped board: each way to get the marking wrong once."""
    board = _boards()["pod-detail.json"]
    panels = lint.panels(board)
    marked = next(p for p in panels if "cri_pod_tcp_connections" in lint.panel_metrics(p))
    plain = next(p for p in panels if lint.panel_metrics(p) == {"cri_container_pids"})
    assert lint.profile_problems(board, in_lean) == []  # as shipped

    marked["title"] = marked["title"].removesuffix(lint.DEFAULT_ONLY_TITLE)
    marked["description"] = marked["description"].split(lint.DEFAULT_ONLY_NOTE)[0]
    (problem,) = lint.profile_problems(board, in_lean)
    assert "reads ['cri_pod_tcp_connections'], outside the lean profile, and is not marked" in problem

    marked["title"] += lint.DEFAULT_ONLY_TITLE  # the title alone: the description must say it too
    assert f"its description must say {lint.DEFAULT_ONLY_NOTE!r}" in "\n".join(lint.profile_problems(board, in_lean))

    marked["description"] += f" {lint.DEFAULT_ONLY_NOTE}: too many series."  # ...and name the family
    (problem,) = lint.profile_problems(board, in_lean)
    assert "does not name ['cri_pod_tcp_connections']" in problem

    plain["title"] += lint.DEFAULT_ONLY_TITLE  # a mark on a panel the lean profile fills misleads
    assert any("reads only families it serves" in p for p in lint.profile_problems(board, in_lean))

    marked["targets"].append(dict(plain["targets"][0], refId="Z"))  # ...and so does a lean query on a marked one
    assert any(f"panel {marked['title']!r} Z: reads only families of the lean profile" in p
               for p in lint.profile_problems(board, in_lean))
    marked["targets"].pop()

    plain["title"] = plain["title"].removesuffix(lint.DEFAULT_ONLY_TITLE)
    plain["targets"][0]["expr"] = plain["targets"][0]["expr"].replace("cri_container_pids", "cri_container_spec_pids_limit")
    assert any("reads ['cri_container_spec_pids_limit'], outside the lean profile, and is not marked" in p
               for p in lint.profile_problems(board, in_lean))

    variable = board["templating"]["list"][-1]
    variable["query"]["query"] = variable["query"]["query"].replace("cri_container_info", "cri_container_start_time_seconds")
    assert any("variable 'container': reads ['cri_container_start_time_seconds']" in p
               for p in lint.profile_problems(board, in_lean))


def test_no_pod_cgroup_metrics_costs_no_shipped_panel_or_alert():
    """The group the flag drops holds nothing a dashboard or an alert reads."""
    assert len(POD_CGROUP_FAMILIES) >= 25
    assert not set(POD_CGROUP_FAMILIES) & set(used_metrics())


def test_the_lean_set_is_what_the_docs_say():
    assert f"--metrics-allow '{LEAN_ALLOW}'" in (REPO / "docs" / "metrics.md").read_text()


# ---- a real exporter on the lab's real containerd ----------------------------------

@pytest.fixture(scope="module")
def default_families(exporter, pods) -> set[str]:
    """Families the shared exporter (every collector, no filter) serves, once the doctor has reported."""
    return wait_for(lambda: (lambda f: f if "cri_doctor_check_ok" in f and "cri_container_pids" in f else None)(
        families(exporter.text())), timeout=120, what="the doctor's first report")


@pytest.mark.containerd
def test_the_lean_profile_serves_exactly_the_allowed_families(containerd, pods, default_families, tmp_path):
    lean = MetricFilter(allow=LEAN_ALLOW)
    with ExporterProcess(containerd.endpoint, "--host-root", "/", "--metrics-allow", LEAN_ALLOW,
                         log_path=tmp_path / "lean.log") as proc:
        want = {f for f in default_families if lean.wants(f)}
        served = wait_for(lambda: (lambda f: f if want <= f else None)(families(proc.text())), timeout=120,
                          what="every allowed family")
        denied = default_families - want
    assert served == want, (sorted(served - want), sorted(want - served))
    assert denied and not (served & denied)
    assert HEALTH - {"cri_scrape_step_duration_seconds"} <= served
    # The pod twins of the cgroup families are gone, the containers' stay.
    assert not served & set(POD_CGROUP_FAMILIES)
    assert "cri_container_cpu_cfs_throttled_periods_total" in served
    # The marked panels' families: served by default (in the lab; emptyDirs and the kubelet's thresholds
    # need a kubelet), never under the lean profile, whose nodes show those panels empty.
    assert {"cri_pod_tcp_connections", "cri_container_writable_layer_inodes"} <= default_families
    assert not served & marked_families()
    # The pods' inodes by source (their writable layers here), which CriPodEphemeralInodesFillingNode needs.
    assert "cri_pod_ephemeral_storage_inodes" in served


@pytest.mark.containerd
def test_no_pod_cgroup_metrics_drops_the_pod_twins_only(containerd, pods, default_families, tmp_path):
    with ExporterProcess(containerd.endpoint, "--host-root", "/", "--collectors", NO_DOCTOR,
                         env={"CRI_EXPORTER_POD_CGROUP_METRICS": "false"}, log_path=tmp_path / "twins.log") as proc:
        served = wait_for(lambda: (lambda f: f if "cri_container_pids" in f else None)(families(proc.text())),
                          timeout=60, what="the cgroup families")
    twins = set(POD_CGROUP_FAMILIES) & default_families
    assert twins and not served & twins
    assert set(CONTAINER_CGROUP_FAMILIES) & default_families <= served
    assert {"cri_pod_cpu_usage_seconds_total", "cri_pod_memory_working_set_bytes", "cri_pod_info"} <= served


@pytest.mark.containerd
def test_denying_everything_keeps_scrape_health_and_says_so(containerd, pods, tmp_path):
    with ExporterProcess(containerd.endpoint, "--host-root", "/", "--collectors", NO_DOCTOR,
                         "--metrics-deny", ".*", log_path=tmp_path / "none.log") as proc:
        samples = proc.scrape()
        served = families(proc.text())
        log = proc.log()
    assert served == HEALTH - {"cri_scrape_step_duration_seconds"}  # no step was asked for: nothing ran one
    assert samples.get1("cri_up") == 1
    # Only the runtime collector runs (it feeds cri_up); the others were not run at all.
    assert {d["collector"] for d in samples.labelsets("cri_scrape_collector_success")} == {"runtime"}
    assert "served anyway" in log and "cri_scrape_collector_success" in log


# ---- denied work is not done -----------------------------------------------------

@pytest.fixture
def in_process(containerd, pods):
    """An Exporter in this process (so its reads can be counted) over the lab's containerd."""
    made = []

    def make(**settings) -> Exporter:
        settings.setdefault("collectors", tuple(NO_DOCTOR.split(",")))
        settings.setdefault("stats_interval", 3600)
        exp = Exporter(Settings(runtime_endpoint=containerd.endpoint, host_root="/", **settings))
        made.append(exp)
        return exp

    yield make
    for exp in made:
        exp.stop()


def _count_reads(monkeypatch) -> list[str]:
    names: list[str] = []
    real = cgfiles.read

    def spy(directory, name):
        names.append(name)
        return real(directory, name)

    monkeypatch.setattr(cgfiles, "read", spy)
    return names


def _render(exp: Exporter) -> str:
    body, _ = exp.render()
    return b"".join(body).decode()


@pytest.mark.containerd
def test_denied_cgroup_files_are_never_read(in_process, monkeypatch):
    reads = _count_reads(monkeypatch)
    _render(in_process())
    everything = list(reads)
    assert any(n.endswith(".pressure") for n in everything), everything  # ground truth: read by default
    assert any(n.startswith("blkio.") for n in everything), everything
    assert "pids.current" in everything

    reads.clear()
    text = _render(in_process(metrics_deny=r"cri_(container|pod)_(pressure_.*|blkio_.*|pids|spec_pids_limit)"))
    assert reads, "nothing read at all"
    assert not [n for n in reads if n.endswith(".pressure") or n.startswith(("blkio.", "io.")) or n == "pids.current"]
    assert "cri_container_cpu_cfs_periods_total" in families(text)


@pytest.mark.containerd
def test_lean_reads_no_pod_pressure_io_or_pids_files(in_process, monkeypatch, pods):
    seen: list[tuple[str, str]] = []
    real = cgfiles.read
    monkeypatch.setattr(cgfiles, "read", lambda d, name: (seen.append((d, name)), real(d, name))[1])
    _render(in_process(metrics_allow=LEAN_ALLOW))
    pod_dirs = {d for d, _ in seen if re.search(r"pod[0-9a-f-]{36}$", d.rstrip("/"))}
    assert pod_dirs, seen[:10]  # pod cgroups are still read, for their CPU and memory usage
    read_in_pods = {name for d, name in seen if d in pod_dirs}
    assert read_in_pods and not {n for n in read_in_pods if n.endswith(".pressure") or n.startswith(("blkio", "io.", "pids"))}


@pytest.mark.containerd
def test_denied_network_and_status_families_make_no_netns_reads_and_no_status_calls(in_process, monkeypatch):
    calls = {"interfaces": 0, "container_status": 0}
    real_interfaces = PodNetwork.interfaces

    def interfaces(self, *args):
        calls["interfaces"] += 1
        return real_interfaces(self, *args)

    monkeypatch.setattr(PodNetwork, "interfaces", interfaces)
    base = in_process()
    real_status = base.client.container_status

    def status(*args, **kwargs):
        calls["container_status"] += 1
        return real_status(*args, **kwargs)

    monkeypatch.setattr(base.client, "container_status", status)
    text = _render(base)
    assert calls["interfaces"] > 0 and calls["container_status"] > 0  # ground truth: done by default
    assert "cri_pod_network_receive_bytes_total" in families(text)

    calls.update(interfaces=0, container_status=0)
    exp = in_process(metrics_deny="cri_pod_network_.*,cri_container_start_time_seconds,cri_container_last_terminated_.*")
    monkeypatch.setattr(exp.client, "container_status", status)
    text = _render(exp)
    assert calls == {"interfaces": 0, "container_status": 0}
    served = families(text)
    assert "cri_container_info" in served and not {f for f in served if f.startswith("cri_pod_network_")}


@pytest.mark.containerd
def test_a_collector_whose_families_are_all_denied_does_not_run(in_process, monkeypatch):
    exp = in_process(metrics_deny=r"cri_images?(fs)?_.*,cri_images")
    called = []
    monkeypatch.setattr(exp.client, "list_images", lambda *a, **k: called.append("ListImages"))
    monkeypatch.setattr(exp.client, "image_fs_info", lambda *a, **k: called.append("ImageFsInfo"))
    text = _render(exp)
    assert called == []
    assert 'collector="imagefs"' not in text and 'cri_scrape_collector_success{collector="cgroups"} 1' in text


@pytest.mark.containerd
def test_each_declared_family_list_holds_what_its_collector_yields(in_process):
    """The lists collectors declare (what makes them skip work) must not miss a family they yield."""
    exp = in_process()
    exp.refresher.refresh()  # a stats snapshot to report on
    _render(exp)  # paths resolved, statuses fetched
    ctx = exp._context(time.monotonic() + 30)
    checked = 0
    for collector in exp.scraper.collectors:
        declared = getattr(collector, "families", None)
        if declared is None:
            continue
        try:
            out = list(collector.collect(ctx))
        except PartialCollection as err:
            out = err.metrics
        yielded = {exposed_name(m) for m in out}
        assert yielded and yielded <= set(declared), (collector.name, sorted(yielded - set(declared)))
        checked += 1
    assert checked >= 6


# ---- the Helm chart --------------------------------------------------------------

def test_the_chart_passes_both_flags_and_the_pod_switch_verbatim_to_a_valid_daemonset():
    from cri_exporter.cli import serve
    from tests.test_deploy import by_kind, rendered_docs, validate

    deny = r'cri_container_blkio_.*,cri_pod_network_\w+_errors_total,x"y'
    docs = rendered_docs({"metrics": {"allow": LEAN_ALLOW, "deny": deny, "podCgroupMetrics": False}})
    for doc in docs:
        validate(doc)
    (ds,) = by_kind(docs, "DaemonSet")
    (agent,) = ds["spec"]["template"]["spec"]["containers"]
    args = agent["args"]
    assert args[args.index("--metrics-allow") + 1] == LEAN_ALLOW
    assert args[args.index("--metrics-deny") + 1] == deny
    assert "--no-pod-cgroup-metrics" in args
    # The agent's own command line takes them as rendered.
    assert args[0] == "serve"
    params = serve.make_context("serve", args[1:]).params
    assert (params["metrics_allow"], params["metrics_deny"], params["pod_cgroup_metrics"]) == (LEAN_ALLOW, deny, False)

    (default,) = by_kind(rendered_docs(), "DaemonSet")
    assert not [a for a in default["spec"]["template"]["spec"]["containers"][0]["args"] if "metrics" in a]


@pytest.mark.containerd
def test_usage_nobody_serves_does_not_speed_up_the_stats_refresh(in_process):
    """Unread cgroups make the CRI snapshot the usage source (refreshed every
    --stats-interval) only for families that are served."""
    # ground truth: no cgroups read, the snapshot feeds usage
    fed = in_process(collectors=("containers", "stats"), stats_interval=15, stats_idle_interval=300)
    _render(fed)
    assert fed.refresher.current_interval == 15

    exp = in_process(metrics_deny=r"cri_(container|pod)_(cpu|memory|pids|pressure|blkio|spec)_.*,cri_container_pids",
                     stats_interval=15, stats_idle_interval=300)
    text = _render(exp)
    assert "cri_container_info" in families(text) and not {f for f in families(text) if f.startswith(("cri_container_", "cri_pod_")) and "_cpu_" in f}
    assert exp.refresher.current_interval == 300


@pytest.mark.containerd
def test_denying_the_runtime_processes_families_stops_the_proc_walks(in_process):
    exp = in_process(collectors=("runtime", "runtime_processes"), metrics_deny="cri_runtime_(process|shims|zombie).*")
    assert exp.parts.runtime_processes is None  # the sampler that walks /proc is never started
    exp.start()
    text = _render(exp)
    assert 'collector="runtime_processes"' not in text and "cri_runtime_info" in families(text)

    ran = in_process(collectors=("runtime", "runtime_processes"))  # ground truth
    assert ran.parts.runtime_processes is not None
