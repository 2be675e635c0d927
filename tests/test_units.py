"""Unit tests of the pieces that need no runtime: settings, identity, the proto."""
from __future__ import annotations

import errno
import filecmp
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from cri_exporter.cli import main
from cri_exporter.cri import model
from cri_exporter.inventory import ContainerIdentity, Inventory
from cri_exporter.settings import ALL_COLLECTORS, parse_collectors, parse_listen_address

REPO = Path(__file__).resolve().parents[1]


def test_parse_collectors():
    assert parse_collectors(",".join(ALL_COLLECTORS)) == ALL_COLLECTORS
    assert parse_collectors("imagefs,runtime") == ("runtime", "imagefs")
    assert parse_collectors("-cgroups,-imagefs") == ("runtime", "containers", "terminations", "stats", "runtime_processes",
                                                     "container_logs", "container_fds", "ephemeral_storage", "doctor")
    with pytest.raises(ValueError, match="unknown collector.*nope"):
        parse_collectors("runtime,nope")
    with pytest.raises(ValueError, match="not both"):
        parse_collectors("runtime,-imagefs")


@pytest.mark.parametrize("addr,expected", [
    (":9920", ("0.0.0.0", 9920)), ("127.0.0.1:1", ("127.0.0.1", 1)), ("[::1]:9920", ("::1", 9920)),
])
def test_parse_listen_address(addr, expected):
    assert parse_listen_address(addr) == expected


def test_bad_flag_is_a_usage_error_not_a_traceback():
    r = CliRunner().invoke(main, ["serve", "--collectors", "nope"])
    assert r.exit_code == 2 and "unknown collector(s) nope" in r.output
    r = CliRunner().invoke(main, ["serve", "--listen-address", "nowhere"])
    assert r.exit_code == 2 and "not host:port" in r.output


def test_environment_variables_set_options():
    r = CliRunner().invoke(main, ["serve"], env={"CRI_EXPORTER_COLLECTORS": "bogus"})
    assert r.exit_code == 2 and "bogus" in r.output


def _pod(id, name, ns, state="ready", created=0, attempt=0, labels=None):
    return model.PodSandbox(id, name, ns, f"uid-{id}", attempt, state, created, labels or {}, "")


def _ctr(id, pod_id, name, state, attempt=0, created=0, labels=None):
    return model.Container(id, pod_id, name, attempt, "img", "sha256:x", state, created, labels or {})


def test_current_instance_wins_and_identity_falls_back_to_metadata():
    pods = [_pod("old", "web", "shop", "notready", created=1), _pod("new", "web", "shop", created=2),
            _pod("raw", "plain", "")]
    containers = [
        _ctr("a0", "old", "app", "exited", attempt=0, created=1),
        _ctr("a1", "new", "app", "exited", attempt=1, created=2),
        _ctr("a2", "new", "app", "running", attempt=2, created=3),
        _ctr("x", "raw", "solo", "running", labels={}),  # not a Kubernetes container
        _ctr("k", "raw", "ignored", "running", labels={"io.kubernetes.container.name": "named",
                                                        "io.kubernetes.pod.name": "kpod",
                                                        "io.kubernetes.pod.namespace": "kns"}),
    ]
    inv = Inventory(pods, containers)
    assert {i: p.id for i, p in inv.current_pods.items()}.get(next(iter(inv.current_pods))) in ("new", "raw")
    assert inv.current_pods[next(i for i in inv.current_pods if i.pod == "web")].id == "new"
    current = {i: c.id for i, c in inv.current_containers.items()}
    assert current == {
        ContainerIdentity("shop", "web", "app"): "a2",
        ContainerIdentity("", "plain", "solo"): "x",
        ContainerIdentity("kns", "kpod", "named"): "k",
    }
    assert [c.id for c in inv.container_instances[ContainerIdentity("shop", "web", "app")]] == ["a2", "a1", "a0"]


def test_a_live_instance_beats_a_newer_exited_one():
    inv = Inventory([_pod("p", "web", "shop")], [
        _ctr("run", "p", "app", "running", attempt=1, created=1),
        _ctr("gone", "p", "app", "exited", attempt=2, created=2),
    ])
    assert inv.current_containers[ContainerIdentity("shop", "web", "app")].id == "run"


def test_generated_proto_code_is_current(tmp_path):
    from codegen import proto

    proto.generate(tmp_path)
    for name in proto.FILES:
        assert filecmp.cmp(tmp_path / "cri_exporter/cri" / name, REPO / "cri_exporter/cri" / name, shallow=False), (
            f"{name} is stale: run python -m codegen")


MUTATING_RPCS = ("RunPodSandbox", "StopPodSandbox", "RemovePodSandbox", "CreateContainer", "StartContainer",
                 "StopContainer", "RemoveContainer", "UpdateContainerResources", "ExecSync", "Exec", "Attach",
                 "PortForward", "PullImage", "RemoveImage", "UpdateRuntimeConfig", "CheckpointContainer",
                 "ReopenContainerLog")


def test_the_agent_calls_no_mutating_rpc():
    """Outside the generated code, no module of the agent names a mutating CRI call."""
    # A call (stub.RemoveContainer(...)) or a request message; prose may name them.
    pattern = re.compile(r"\.(" + "|".join(MUTATING_RPCS) + r")\(|\b(" + "|".join(MUTATING_RPCS) + r")Request\b")
    offenders = []
    for path in (REPO / "cri_exporter").rglob("*.py"):
        if path.name.startswith("api_pb2"):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, offenders


def test_hostfs_resolves_absolute_symlinks_inside_the_root(tmp_path):
    from cri_exporter.hostfs import HostFS

    (tmp_path / "run/containerd").mkdir(parents=True)
    (tmp_path / "var").mkdir()
    os.symlink("/run", tmp_path / "var/run")  # as on every systemd host
    hostfs = HostFS(str(tmp_path))
    assert hostfs.resolve("/var/run/containerd/containerd.sock") == f"{tmp_path}/run/containerd/containerd.sock"
    assert hostfs.path("/var/run/x") == f"{tmp_path}/run/x"  # path() confines too: no path escapes the root
    assert HostFS("/").resolve("/var/run/x") == "/var/run/x"
    os.symlink("loop", tmp_path / "loop")
    with pytest.raises(OSError) as err:  # a link loop ends, as ELOOP (the kernel's answer too)
        hostfs.resolve("/loop/x")
    assert err.value.errno == errno.ELOOP


def test_a_fresh_exit_is_asked_again_until_it_settles():
    """containerd may say Error (137) before OOMKilled: a recent exit is re-fetched, an old one is not."""
    import time as _time

    from cri_exporter.collectors.containers import _status_settled
    from cri_exporter.fetch_once import FetchOnce

    now_ns = int(_time.time() * 1e9)
    answers = [model.ContainerStatus("c", "exited", 1, now_ns, 137, "Error", ""),
               model.ContainerStatus("c", "exited", 1, now_ns, 137, "OOMKilled", "")]
    calls = []

    def fetch(client, cid, timeout):
        calls.append(cid)
        return answers[min(len(calls), len(answers)) - 1]

    cache = FetchOnce(fetch, _status_settled)
    for _ in range(3):
        cache.refresh(None, [(("c", "exited"), "c")], lambda key: True, lambda: 1.0)
    assert cache.get(("c", "exited")).reason == "OOMKilled" and len(calls) == 3

    old_calls = []
    old = FetchOnce(lambda client, cid, t: old_calls.append(cid) or model.ContainerStatus(
        "c", "exited", 1, 1, 1, "Error", ""), _status_settled)
    for _ in range(3):
        old.refresh(None, [(("c", "exited"), "c")], lambda key: True, lambda: 1.0)
    assert old.get(("c", "exited")).reason == "Error" and len(old_calls) == 1  # finished long ago


def test_process_settings_for_a_long_running_agent(monkeypatch):
    import gc

    from cri_exporter import memory_tuning

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    # the operator's setting wins; glibc (Debian) here takes the others
    assert memory_tuning.tune_malloc() == {"MALLOC_ARENA_MAX": False, "MALLOC_MMAP_THRESHOLD_": True,
                                     "MALLOC_TRIM_THRESHOLD_": True}
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    assert memory_tuning.tune_malloc()["MALLOC_ARENA_MAX"] is True
    memory_tuning.release_freed_memory()
    try:
        memory_tuning.freeze_startup_objects()
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()


def test_only_the_identity_labels_are_kept():
    from cri_exporter.cri.client import identity_labels

    labels = {"io.kubernetes.pod.name": "web", "io.kubernetes.pod.namespace": "shop", "io.kubernetes.pod.uid": "u",
              "io.kubernetes.container.name": "app", "app": "web", "pod-template-hash": "5d8f"}
    assert identity_labels(labels) == {k: v for k, v in labels.items() if k.startswith("io.kubernetes.")}
    assert identity_labels({"app": "x"}) == {}


def test_a_fifo_where_a_file_should_be_reads_empty_instead_of_hanging(tmp_path):
    import threading

    from cri_exporter.cgroups import files
    from cri_exporter.hostfs import HostFS

    os.mkfifo(tmp_path / "config.toml")
    os.mkfifo(tmp_path / "memory.stat")
    got = {}
    t = threading.Thread(target=lambda: got.update(
        text=HostFS(str(tmp_path)).read_text("/config.toml"), cgroup=files.read(str(tmp_path), "memory.stat")))
    t.daemon = True
    t.start()
    t.join(5)
    assert not t.is_alive() and got == {"text": "", "cgroup": ""}
