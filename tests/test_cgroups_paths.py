"""Layout detection and container / pod -> cgroup resolution over the fixture trees."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cri_exporter.cgroups import CgroupResolver, CgroupUnavailable, detect
from cri_exporter.cgroups.layout import with_driver
from cri_exporter.cgroups.paths import pod_candidates
from cri_exporter.hostfs import HostFS

FIXTURES = Path(__file__).parent / "fixtures" / "cgroup"
G_UID, B_UID, E_UID = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222", "33333333-3333-4333-8333-333333333333"
G_ID, B_ID, E_ID = "a" * 64, "b" * 64, "c" * 64

# tree -> (version, driver, hybrid)
TREES = {
    "v2-systemd": ("v2", "systemd", False),
    "v2-cgroupfs": ("v2", "cgroupfs", False),
    "v1-cgroupfs": ("v1", "cgroupfs", True),
    "v1-systemd": ("v1", "systemd", False),
}

# tree -> QoS -> (pod dir, container leaf), relative to each hierarchy root
S = lambda uid: uid.replace("-", "_")  # noqa: E731
EXPECTED = {
    "v2-systemd": {
        "G": (f"kubepods.slice/kubepods-pod{S(G_UID)}.slice", f"cri-containerd-{G_ID}.scope"),
        "B": (f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{S(B_UID)}.slice", f"cri-containerd-{B_ID}.scope"),
        "E": (f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{S(E_UID)}.slice", f"crio-{E_ID}.scope"),
    },
    "v2-cgroupfs": {
        "G": (f"kubepods/pod{G_UID}", G_ID),
        "B": (f"kubepods/burstable/pod{B_UID}", B_ID),
        "E": (f"kubepods/besteffort/pod{E_UID}", f"crio-{E_ID}"),
    },
    "v1-cgroupfs": {
        "G": (f"kubepods/pod{G_UID}", G_ID),
        "B": (f"kubepods/burstable/pod{B_UID}", B_ID),
        "E": (f"kubepods/besteffort/pod{E_UID}", E_ID),
    },
    "v1-systemd": {
        "G": (f"kubepods.slice/kubepods-pod{S(G_UID)}.slice", f"docker-{G_ID}.scope"),
        "B": (f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{S(B_UID)}.slice", f"cri-containerd-{B_ID}.scope"),
        "E": (f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{S(E_UID)}.slice", f"crio-{E_ID}.scope"),
    },
}
IDS = {"G": (G_ID, G_UID), "B": (B_ID, B_UID), "E": (E_ID, E_UID)}


def hostfs(tree: str) -> HostFS:
    return HostFS(str(FIXTURES / tree))


@pytest.mark.parametrize("tree", TREES)
def test_detects_version_driver_and_hybrid(tree):
    layout = detect(hostfs(tree))
    version, driver, hybrid = TREES[tree]
    assert (layout.version, layout.driver, layout.hybrid) == (version, driver, hybrid)


def test_v1_finds_controllers_both_separate_and_comma_joined():
    separate = detect(hostfs("v1-cgroupfs")).controllers
    assert separate["cpu"] == "/sys/fs/cgroup/cpu" and separate["cpuacct"] == "/sys/fs/cgroup/cpuacct"
    joined = detect(hostfs("v1-systemd")).controllers
    # the cpu / cpuacct symlinks win over the joined directory name
    assert joined["cpu"] == "/sys/fs/cgroup/cpu" and joined["cpuacct"] == "/sys/fs/cgroup/cpuacct"
    assert set(joined) == {"cpu", "cpuacct", "memory", "pids", "blkio"}


def test_v1_comma_joined_directory_without_symlinks(tmp_path):
    (tmp_path / "sys/fs/cgroup/cpu,cpuacct/kubepods").mkdir(parents=True)
    (tmp_path / "sys/fs/cgroup/memory").mkdir()
    layout = detect(HostFS(str(tmp_path)))
    assert layout.controllers == {
        "cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct", "memory": "/sys/fs/cgroup/memory",
    }
    assert (layout.version, layout.driver, layout.hybrid) == ("v1", "cgroupfs", False)


def test_missing_root_is_unavailable(tmp_path):
    with pytest.raises(CgroupUnavailable):
        detect(HostFS(str(tmp_path)))
    (tmp_path / "sys/fs/cgroup").mkdir(parents=True)  # mounted but empty: neither v1 nor v2
    with pytest.raises(CgroupUnavailable):
        detect(HostFS(str(tmp_path)))


def test_driver_unknown_until_kubepods_appears(tmp_path):
    root = tmp_path / "sys/fs/cgroup"
    root.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory\n")
    resolver = CgroupResolver(HostFS(str(tmp_path)))
    assert resolver.layout().driver == "unknown"
    assert resolver.pod(B_UID) is None
    (root / f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{S(B_UID)}.slice").mkdir(parents=True)
    assert resolver.pod(B_UID) is not None
    assert resolver.layout().driver == "systemd"


@pytest.mark.parametrize("qos", ["G", "B", "E"])
@pytest.mark.parametrize("tree", TREES)
def test_resolves_every_qos_class(tree, qos):
    fs = hostfs(tree)
    resolver = CgroupResolver(fs)
    cid, uid = IDS[qos]
    pod_rel, leaf = EXPECTED[tree][qos]
    pod = resolver.pod(uid)
    container = resolver.container(cid, uid)
    assert pod is not None and container is not None
    assert pod.relative == pod_rel
    assert container.relative == f"{pod_rel}/{leaf}"
    if TREES[tree][0] == "v2":
        assert container.unified == fs.path(f"/sys/fs/cgroup/{pod_rel}/{leaf}")
        assert container.dir("memory") == container.dir("pids") == container.unified
    else:
        layout = resolver.layout()
        for controller in ("cpu", "cpuacct", "memory", "pids", "blkio"):
            assert container.dir(controller) == fs.path(f"{layout.controllers[controller]}/{pod_rel}/{leaf}")
        assert (container.unified is not None) == TREES[tree][2]


@pytest.mark.parametrize("tree", TREES)
def test_unknown_ids_resolve_to_none(tree):
    resolver = CgroupResolver(hostfs(tree))
    assert resolver.container("d" * 64, B_UID) is None
    assert resolver.container(B_ID, "44444444-4444-4444-8444-444444444444") is None
    assert resolver.container(B_ID, "") is None
    assert resolver.pod("") is None


def test_v1_controller_without_the_directory_is_left_out(tmp_path):
    shutil.copytree(FIXTURES / "v1-cgroupfs", tmp_path / "t", symlinks=True)
    shutil.rmtree(tmp_path / f"t/sys/fs/cgroup/pids/kubepods/burstable/pod{B_UID}/{B_ID}")
    container = CgroupResolver(HostFS(str(tmp_path / "t"))).container(B_ID, B_UID)
    assert container is not None
    assert container.dir("pids") is None and container.dir("memory") is not None


def test_cache_hit_makes_no_filesystem_call(monkeypatch):
    resolver = CgroupResolver(hostfs("v2-systemd"))
    first = resolver.container(B_ID, B_UID)
    calls = []
    monkeypatch.setattr(os.path, "isdir", lambda p: calls.append(p) or True)
    monkeypatch.setattr(os, "listdir", lambda p: calls.append(p) or [])
    assert resolver.container(B_ID, B_UID) is first
    assert resolver.pod(B_UID) is not None
    assert calls == []


def test_miss_probes_a_bounded_number_of_paths(monkeypatch):
    """A miss stats a few candidate names; it never walks the tree."""
    resolver = CgroupResolver(hostfs("v1-systemd"))
    resolver.layout()
    real_isdir = os.path.isdir
    calls = []
    monkeypatch.setattr(os.path, "isdir", lambda p: calls.append(p) or real_isdir(p))
    monkeypatch.setattr(os, "listdir", lambda p: pytest.fail("listdir on the resolve path"))
    monkeypatch.setattr(os, "walk", lambda *a, **k: pytest.fail("walk on the resolve path"))
    assert resolver.container(E_ID, E_UID) is not None
    assert len(calls) <= 20
    calls.clear()
    assert resolver.container("d" * 64, "44444444-4444-4444-8444-444444444444") is None
    assert len(calls) <= 3


def test_forget_and_retain_drop_cached_entries(tmp_path):
    shutil.copytree(FIXTURES / "v2-cgroupfs", tmp_path / "t")
    resolver = CgroupResolver(HostFS(str(tmp_path / "t")))
    assert resolver.container(B_ID, B_UID) is not None
    assert resolver.container(G_ID, G_UID) is not None
    shutil.rmtree(tmp_path / f"t/sys/fs/cgroup/kubepods/burstable/pod{B_UID}/{B_ID}")
    assert resolver.container(B_ID, B_UID) is not None  # cached until someone finds it gone
    resolver.forget(container_id=B_ID)
    assert resolver.container(B_ID, B_UID) is None
    resolver.retain([], [B_UID])
    assert set(resolver._containers) == set() and set(resolver._pods) == {B_UID}


def test_cgroup_root_prefix_is_honoured():
    assert pod_candidates(B_UID, "cgroupfs", "/custom")[0] == f"custom/kubepods/burstable/pod{B_UID}"
    assert pod_candidates(B_UID, "systemd")[2] == f"kubepods.slice/kubepods-pod{S(B_UID)}.slice"


def test_with_driver_keeps_unknown_when_no_kubepods(tmp_path):
    (tmp_path / "sys/fs/cgroup/memory").mkdir(parents=True)
    fs = HostFS(str(tmp_path))
    assert with_driver(fs, detect(fs)).driver == "unknown"
