"""The whole /metrics answer, diffed against committed files (as node_exporter's end-to-end test).

`cri-exporter serve` over the fake runtime (tests/fakecri.py) and its cgroup
tree, with a web config (basic auth) so the endpoint's own series are there
too; and the cgroup collector over each fixture tree (v1/v2, cgroupfs/systemd).
Values that depend on time or the machine (durations, timestamps, ages, counts
of calls and connections, versions, the process's own metrics) are written as
`<volatile>`; the doctor's series depend on its checks, which change often, so
only their HELP and TYPE lines are kept. Everything else must match byte for
byte: a renamed series, a new label, a changed help text or a different
number fails here.

    CRI_EXPORTER_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py

rewrites the files; review the diff before committing it.

docs/metrics.md is checked both ways against what these runs serve: every
served cri_* metric is documented, and every documented one is served.
"""
from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import bcrypt
import pytest

from cri_exporter.collectors.cgroups import CgroupCollector
from cri_exporter.exposition import ExpositionWriter
from cri_exporter.hostfs import HostFS
from tests.exporter_proc import ExporterProcess, wait_for
from tests.fakecri import FakeCRI, fleet, make_cgroup_tree, make_pod
from tests.test_cgroups_collector import FIXTURES, TREES, ctx_for

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"
UPDATE = os.environ.get("CRI_EXPORTER_UPDATE_GOLDEN") == "1"

# Families whose sample lines are left out (kept: HELP and TYPE).
# The doctor's depend on its checks; the CRI request series on which calls a run
# happened to make (a fallback, a status asked again).
_DROPPED = re.compile(r"(cri_doctor_|process_|python_|cri_request_)")
# Families whose values (and, for the build info, version labels) are masked.
_VOLATILE = re.compile(r"cri_(scrape_collector_duration_seconds|scrape_step_duration_seconds"
                       r"|stats_refreshes_total|stats_refresh_duration_seconds"
                       r"|stats_snapshot_age_seconds|stats_snapshot_timestamp_seconds|exporter_http_\w+"
                       r"|exporter_web_config_last_reload_success_timestamp_seconds|exporter_build_info"
                       r"|runtime_process_sample_timestamp_seconds|runtime_process_sample_duration_seconds"
                       r"|container_log_sample_timestamp_seconds|container_log_sample_duration_seconds"
                       r"|fd_sampler_\w+"
                       # the walk's own cost and times; bytes in blocks and free space depend on the filesystem
                       r"|ephemeral_storage_walk_cpu_seconds_total|ephemeral_storage_walk_last_\w+"
                       r"|pod_ephemeral_storage_measured_timestamp_seconds|eviction_(threshold|headroom)_\w+"
                       r"|pod_emptydir_bytes|pod_ephemeral_storage_bytes"
                       r"|imagefs_info_age_seconds|images_list_age_seconds)")
# Label values of the machine or the run: versions, the socket under a temporary directory.
_VERSION_LABELS = re.compile(r'((?<![a-z_])version|python_version|grpc_version|endpoint)="[^"]*"')
_CONFINEMENT_LABELS = re.compile(r'(abi|state)="[^"]*"')
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$")


def normalize(text: str) -> str:
    out = []
    family = ""
    for line in text.splitlines(keepends=True):
        if line.startswith("# "):
            family = line.split(" ", 3)[2]
            out.append(line)
            continue
        m = _SAMPLE.match(line.rstrip("\n"))
        assert m, f"not a sample line: {line!r}"
        if _DROPPED.match(family):
            continue
        labels = _VERSION_LABELS.sub(r'\1="<volatile>"', m.group(2) or "")
        if family == "cri_exporter_confinement_info":  # the kernel's Landlock: what CI's kernel has
            labels = _CONFINEMENT_LABELS.sub(r'\1="<volatile>"', labels)
        value = "<volatile>" if _VOLATILE.fullmatch(family) else m.group(3)
        out.append(f"{m.group(1)}{labels} {value}\n")
    return "".join(out)


def compare(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no {path.relative_to(REPO)}: run with CRI_EXPORTER_UPDATE_GOLDEN=1"
    want = path.read_text()
    if text != want:
        import difflib
        diff = "".join(difflib.unified_diff(want.splitlines(True), text.splitlines(True), str(path), "served", n=1))
        pytest.fail(f"/metrics differs from {path.relative_to(REPO)} (CRI_EXPORTER_UPDATE_GOLDEN=1 rewrites it):\n"
                    + diff[:6000])


def families(text: str) -> set[str]:
    return {line.split(" ", 3)[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def make_ephemeral_dirs(root: Path, pod) -> None:
    """The kubelet's layout for one pod (an emptyDir with a file, a log) under the
    host root. Its byte counts depend on the filesystem's blocks (masked above);
    its inodes do not."""
    meta = pod.sandbox.metadata
    vol = root / "var/lib/kubelet/pods" / meta.uid / "volumes/kubernetes.io~empty-dir/cache"
    (vol / "sub").mkdir(parents=True)
    (vol / "sub" / "data").write_bytes(b"x" * 5000)
    log = root / "var/log/pods" / f"{meta.namespace}_{meta.name}_{meta.uid}" / "app"
    if not log.exists():  # the container-logs fixture may have made it already: its files count here too
        log.mkdir(parents=True)
        (log / "0.log").write_text("line\n" * 100)


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> str:
    """The full /metrics text of `serve` over the fake runtime, once the stats
    snapshot and a doctor run are in it and the container statuses are known."""
    tmp = tmp_path_factory.mktemp("golden")
    pods = fleet(4, seed="golden") + [make_pod(7, 1, namespace="batch", name="job-1", seed="golden")]
    make_cgroup_tree(tmp, pods)
    make_ephemeral_dirs(tmp, pods[-1])
    password = "golden"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    web = tmp / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: {hashed}\n")
    auth = {"Authorization": "Basic " + base64.b64encode(f"prometheus:{password}".encode()).decode()}
    with FakeCRI(tmp / "cri.sock", pods) as fake:
        with ExporterProcess(fake.endpoint, "--host-root", str(tmp), "--web.config.file", str(web),
                             "--stats-interval", "1", auth=auth) as exp:
            def ready() -> str | None:
                text = exp.text()
                done = ("cri_stats_snapshot_timestamp_seconds " in text and "cri_doctor_last_run_timestamp_seconds " in text
                        and 'cri_container_start_time_seconds{' in text
                        and "cri_ephemeral_storage_walk_last_completed_timestamp_seconds " in text)
                return text if done else None
            wait_for(ready, timeout=60, what="a stats snapshot, a doctor run and the container statuses")
            # One scrape more: the statuses asked for in the last one are in this one.
            return exp.text()


def test_the_whole_exposition_is_the_golden_one(served):
    compare("serve.prom", normalize(served))


@pytest.mark.parametrize("tree", TREES)
def test_the_cgroup_series_of_each_fixture_tree_are_the_golden_ones(tree):
    root = FIXTURES / tree
    metrics = list(CgroupCollector(HostFS(str(root))).collect(ctx_for(root)))
    compare(f"cgroups-{tree}.prom", ExpositionWriter().write(metrics).decode())


def documented() -> set[str]:
    """The metrics of docs/metrics.md's tables; each cri_container_* of the cgroups
    section stands for its cri_pod_* twin too, as the section says."""
    text = (REPO / "docs" / "metrics.md").read_text()
    names = set(re.findall(r"^\| `(cri_[a-z0-9_]+)`", text, re.MULTILINE))
    cgroups = re.search(r"^## cgroups.*?(?=^## )", text, re.MULTILINE | re.DOTALL)
    assert cgroups, "docs/metrics.md has no cgroups section"
    for name in re.findall(r"^\| `cri_container_([a-z0-9_]+)`", cgroups.group(0), re.MULTILINE):
        names.add(f"cri_pod_{name}")
    return names


def test_docs_metrics_md_lists_exactly_what_is_served(served):
    got = families(served)
    for tree in TREES:
        got |= families((GOLDEN / f"cgroups-{tree}.prom").read_text())
    served_cri = {name for name in got if name.startswith("cri_")}
    docs = documented()
    assert not served_cri - docs, f"served but not in docs/metrics.md: {sorted(served_cri - docs)}"
    assert not docs - served_cri, f"in docs/metrics.md but served by no fixture here: {sorted(docs - served_cri)}"
