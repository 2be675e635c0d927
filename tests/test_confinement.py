"""Nothing outside --host-root is read, and no input can make the doctor's
work unbounded (issue 17).

A sentinel file sits outside the host tree; links and `..` paths in the
tree point at it the ways an attacker (or an unlucky operator) would. In a
DaemonSet the same bugs would read the agent's own container (its service
account token) instead of the node.
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from cri_exporter.doctor.facts import containerd as containerd_facts
from cri_exporter.hostfs import HostFS
from tests.exporter_proc import REPO
from tests.test_doctor_support import copy_fixture, write

SENTINEL = "SENTINEL-OUTSIDE-THE-HOST-ROOT"


@pytest.fixture
def outside(tmp_path) -> Path:
    f = tmp_path / "outside" / "shadow"
    f.parent.mkdir()
    f.write_text(f"root:{SENTINEL}:19000:0:99999:7:::\n")
    return f


# Runs the doctor and reports its own peak RSS (KiB) on the last line of stderr.
_MEASURED = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
             "print('maxrss', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
             "sys.exit(r.returncode)")


def doctor(root: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "cri_exporter", "doctor", "--host-root", str(root), *args]
    return subprocess.run([sys.executable, "-c", _MEASURED, *cmd], capture_output=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)


def peak_rss_kib(out: subprocess.CompletedProcess) -> int:
    return int(out.stderr.decode().rsplit("maxrss", 1)[1])


def bundle_of(root: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess, dict[str, bytes]]:
    path = tmp_path / "bundle.tar.gz"
    out = doctor(root, "-o", "json", "--bundle", str(path))
    assert out.returncode in (0, 1), out.stderr.decode()[-3000:]
    assert b"Traceback" not in out.stderr, out.stderr.decode()[-3000:]
    with tarfile.open(path) as tar:
        return out, {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def assert_confined(out: subprocess.CompletedProcess, members: dict[str, bytes]) -> None:
    for name, data in members.items():
        parts = name.split("/")
        assert not name.startswith("/") and ".." not in parts, name
        assert SENTINEL.encode() not in data, name
    assert SENTINEL.encode() not in out.stdout + out.stderr


def test_links_out_of_the_root_are_followed_inside_it(tmp_path, outside):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    cfg = root / "etc/containerd/config.toml"
    cfg.unlink()
    os.symlink(str(outside), cfg)  # absolute: as /etc/shadow would be
    crictl = root / "etc/crictl.yaml"
    crictl.unlink(missing_ok=True)
    os.symlink("../" * 12 + str(outside).lstrip("/"), crictl)  # relative, climbing past the root
    out, members = bundle_of(root, tmp_path)
    assert_confined(out, members)
    report = json.loads(out.stdout)
    # The link's target does not exist inside the root: on that node containerd has no config.
    parse = {c["id"]: c for c in report["checks"]}["containerd.config.parse"]
    assert parse["summary"].startswith("no /etc/containerd/config.toml"), parse


def test_dotdot_in_a_flag_reads_inside_the_root_and_names_stay_inside(tmp_path, outside):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    escape = "/var/lib/kubelet" + "/.." * 12 + str(outside)
    write(root, "/var/lib/kubelet/kubeadm-flags.env", f'KUBELET_KUBEADM_ARGS="--config={escape}"\n')
    out, members = bundle_of(root, tmp_path)
    assert_confined(out, members)
    # The same path, inside the root, is what the doctor reads.
    write(root, str(outside), "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
                              "cgroupDriver: cgroupfs\n")
    out, members = bundle_of(root, tmp_path)
    assert_confined(out, members)
    assert f"cri-doctor-bundle/files{outside}" in members


def test_hostfs_never_leaves_the_root(tmp_path, outside):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink(str(outside), root / "etc/abs")
    os.symlink("../../../../../../" + str(outside).lstrip("/"), root / "etc/rel")
    os.symlink(str(outside.parent), root / "dir")
    os.symlink("loop", root / "loop")
    h = HostFS(str(root))
    for p in ("/etc/abs", "/etc/rel", f"/dir/{outside.name}", "/../../" + str(outside), str(outside),
              "/etc/../../" + str(outside)):
        assert h.path(p).startswith(str(root) + "/"), p
        with pytest.raises(OSError):
            h.read_text(p)
    with pytest.raises(OSError):
        h.read_text("/loop")
    assert not h.exists("/loop") and not h.is_file("/loop")


def test_a_link_swapped_in_after_resolving_is_not_followed(tmp_path, outside):
    """O_NOFOLLOW on the last component: resolve() saw a file, the open sees a link."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    h = HostFS(str(root))
    local = h.path("/etc/config.toml")
    os.symlink(str(outside), local)
    with pytest.raises(OSError):
        os.open(local, os.O_RDONLY | os.O_NOFOLLOW)
    with pytest.raises(OSError):
        h.read_text("/etc/config.toml")


def test_import_of_itself_is_no_loop_and_no_false_finding(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    cfg = root / "etc/containerd/config.toml"
    cfg.write_text('imports = ["./config.toml", "../containerd/./config.toml"]\n' + cfg.read_text())
    loaded = containerd_facts.load(HostFS(str(root)))
    assert loaded.errors == [] and loaded.files == ["/etc/containerd/config.toml"]
    out = doctor(root, "-o", "json", "--check", "containerd")
    checks = {c["id"]: c for c in json.loads(out.stdout)["checks"]}
    assert checks["containerd.config.parse"]["status"] == "pass", checks["containerd.config.parse"]


def test_imports_that_fan_out_are_bounded(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    for i in range(100):
        write(root, f"/etc/containerd/conf.d/{i:03}.toml", f'imports = ["/etc/containerd/conf.d/*.toml"]\n'
                                                          f'[debug]\n  level = "info"\n  # {i}\n')
    cfg = root / "etc/containerd/config.toml"
    cfg.write_text('imports = ["/etc/containerd/conf.d/*.toml"]\n' + cfg.read_text())
    loaded = containerd_facts.load(HostFS(str(root)))
    assert len(loaded.files) == containerd_facts.MAX_IMPORTED_FILES + 1
    assert any("not read: more than" in e.message for e in loaded.errors)


def test_a_name_that_is_not_utf8_and_a_flood_of_large_files_cost_a_bounded_bundle(tmp_path):
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    net_d = root / "etc/cni/net.d"
    with open(bytes(net_d) + b"/05-\xfe\xff.conf", "w") as f:
        f.write('{"cniVersion": "0.4.0", "name": "odd", "type": "bridge", "password": "planted-odd-name"}')
    for i in range(60):  # 60 MiB of garbage configs beside the real one
        (net_d / f"50-flood-{i:03}.conflist").write_text("0" * ((1 << 20) - 1))
    out, members = bundle_of(root, tmp_path)
    files = {n: d for n, d in members.items() if n.startswith("cri-doctor-bundle/files/")}
    assert sum(map(len, files.values())) <= 8 << 20
    listing = members["cri-doctor-bundle/files.txt"].decode()
    assert "used up" in listing
    odd = [n for n in members if "05-" in n]
    assert odd and all(n.encode("utf-8") for n in odd)  # valid UTF-8 member names
    assert b"planted-odd-name" not in b"".join(members.values())
    # The doctor's own memory stays near its baseline (about 40 MB), whatever the flood.
    assert peak_rss_kib(out) < 200 * 1024, peak_rss_kib(out)
    assert len(gzip.compress(b"".join(files.values()))) < 1 << 20
