"""Versions read from Go binaries' build info (.go.buildinfo), against real
binaries as ground truth (the lab's containerd 1.6/1.7/2.1 and, where the
machine has them, Kubernetes release builds of kubectl) and crafted ELF files
in the forms k3s and a kubelet built without -trimpath carry."""
import glob
import os
import re
import struct
import subprocess
from pathlib import Path

import pytest

from tests.test_doctor_support import copy_fixture, results

from crilab import versions
from crilab.debian import Suite
from cri_exporter.doctor.facts import buildinfo
from cri_exporter.doctor.facts.packages import Version
from cri_exporter.hostfs import HostFS

START = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6"  # debug/buildinfo's module-info sentinels
END = b"\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2"


def _uvarint(n: int) -> bytes:
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def go_buildinfo(go: str, modinfo: str, flags: int = 0x2) -> bytes:
    """A .go.buildinfo section as the Go 1.18+ linker writes it."""
    head = b"\xff Go buildinf:" + bytes([8, flags]) + b"\0" * 16
    mod = START + modinfo.encode() + END
    return head + _uvarint(len(go)) + go.encode() + _uvarint(len(mod)) + mod


def elf(sections: dict[str, bytes], cls: int = 64, little: bool = True, base: int = 0) -> bytes:
    """A minimal ELF file: header, the named sections, the section-name table, section headers.
    With `base`, the file's offsets say the sections start there (the caller leaves a gap)."""
    e = "<" if little else ">"
    names = b"\0"
    name_off = {}
    for n in list(sections) + [".shstrtab"]:
        name_off[n] = len(names)
        names += n.encode() + b"\0"
    body = b""
    hdr_size = 64 if cls == 64 else 52
    start = base or hdr_size
    placed = []
    for n, data in list(sections.items()) + [(".shstrtab", names)]:
        placed.append((n, start + len(body), len(data)))
        body += data
    shoff = start + len(body)
    entsize = 64 if cls == 64 else 40
    shdrs = b"\0" * entsize  # the null section
    for n, off, size in placed:
        if cls == 64:
            shdrs += struct.pack(e + "IIQQQQIIQQ", name_off[n], 1, 0, 0, off, size, 0, 0, 1, 0)
        else:
            shdrs += struct.pack(e + "IIIIIIIIII", name_off[n], 1, 0, 0, off, size, 0, 0, 1, 0)
    ident = b"\x7fELF" + bytes([2 if cls == 64 else 1, 1 if little else 2, 1]) + b"\0" * 9
    shnum, shstrndx = len(placed) + 1, len(placed)
    if cls == 64:
        header = ident + struct.pack(e + "HHIQQQIHHHHHH", 2, 62, 1, 0, 0, shoff, 0, 64, 56, 0, entsize, shnum, shstrndx)
    else:
        header = ident + struct.pack(e + "HHIIIIIHHHHHH", 2, 3, 1, 0, 0, shoff, 0, 52, 32, 0, entsize, shnum, shstrndx)
    return header + body + shdrs


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# k3s (scripts/build: go build -ldflags "$VERSIONFLAGS ...", no -trimpath) and its fork of Kubernetes.
K3S_LDFLAGS = ("-X github.com/k3s-io/k3s/pkg/version.Version=v1.31.4+k3s1 "
               "-X k8s.io/component-base/version.gitVersion=v1.31.4+k3s1 -w -s")
K3S_MODINFO = ("path\tgithub.com/k3s-io/k3s/cmd/server\n"
               "mod\tgithub.com/k3s-io/k3s\t(devel)\t\n"
               "dep\tk8s.io/kubernetes\tv1.31.4\n=>\tgithub.com/k3s-io/kubernetes\tv1.31.4-k3s1\th1:abc=\n"
               "dep\tgithub.com/containerd/containerd\tv1.7.23\n=>\tgithub.com/k3s-io/containerd\tv1.7.23-k3s2\th1:def=\n"
               f"build\t-ldflags={_quote(K3S_LDFLAGS)}\nbuild\tCGO_ENABLED=1\n")
# A kubelet built by hand from the Kubernetes tree without -trimpath (hack/lib/version.sh quotes each -X).
KUBELET_LDFLAGS = ("-s -w -X 'k8s.io/client-go/pkg/version.gitVersion=v1.30.2' "
                   "-X 'k8s.io/component-base/version.gitVersion=v1.30.2' -X 'k8s.io/component-base/version.gitMajor=1'")
KUBELET_MODINFO = ("path\tk8s.io/kubernetes/cmd/kubelet\nmod\tk8s.io/kubernetes\t(devel)\t\n"
                   f"build\t-ldflags={_quote(KUBELET_LDFLAGS)}\nbuild\t-trimpath=false\n")


def _write_elf(root, path: str, data: bytes) -> Path:
    p = Path(root) / path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    p.chmod(0o755)
    return p


@pytest.mark.parametrize("cls,little", [(64, True), (32, False)])
def test_k3s_form_gives_the_kubernetes_release(tmp_path, cls, little):
    _write_elf(tmp_path, "/usr/local/bin/k3s", elf({".text": b"\x90" * 64, ".go.buildinfo": go_buildinfo("go1.22.9", K3S_MODINFO)},
                                                   cls, little))
    v, why = buildinfo.kubernetes_version(HostFS(str(tmp_path)), "/usr/local/bin/k3s")
    assert (v.major, v.minor, v.patch, v.text) == (1, 31, 4, "v1.31.4+k3s1") and why == ""
    assert "-X k8s.io/component-base/version.gitVersion" in v.source


def test_k3s_built_with_trimpath_falls_back_to_its_kubernetes_fork(tmp_path):
    modinfo = "\n".join(line for line in K3S_MODINFO.splitlines() if "-ldflags" not in line) + "\n"
    _write_elf(tmp_path, "/usr/local/bin/k3s", elf({".go.buildinfo": go_buildinfo("go1.22.9", modinfo)}))
    v, _ = buildinfo.kubernetes_version(HostFS(str(tmp_path)), "/usr/local/bin/k3s")
    assert (v.major, v.minor, v.patch) == (1, 31, 4) and "module k8s.io/kubernetes" in v.source


def test_kubelet_ldflags_form_and_containerd_form(tmp_path):
    _write_elf(tmp_path, "/usr/local/bin/kubelet", elf({".go.buildinfo": go_buildinfo("go1.22.4", KUBELET_MODINFO)}))
    v, _ = buildinfo.kubernetes_version(HostFS(str(tmp_path)), "/usr/local/bin/kubelet")
    assert (v.major, v.minor, v.patch, v.text) == (1, 30, 2, "v1.30.2")
    ctd = ("path\tgithub.com/containerd/containerd/v2/cmd/containerd\nmod\tgithub.com/containerd/containerd/v2\t(devel)\t\n"
           "build\t-ldflags=" + _quote("-X github.com/containerd/containerd/v2/version.Version=v2.1.4 "
                                       "-X github.com/containerd/containerd/v2/version.Revision=75cb2b7") + "\n")
    _write_elf(tmp_path, "/usr/local/bin/containerd", elf({".go.buildinfo": go_buildinfo("go1.24.7", ctd)}))
    v, _ = buildinfo.containerd_version(HostFS(str(tmp_path)), "/usr/local/bin/containerd")
    assert (v.major, v.minor, v.patch) == (2, 1, 4)


GARBAGE = {
    "empty": b"",
    "text": b"#!/bin/sh\nexec kubelet \"$@\"\n",
    "random": bytes(range(256)) * 40,
    "elf header only": b"\x7fELF\x02\x01\x01" + b"\0" * 57,
    "huge section count": b"\x7fELF\x02\x01\x01" + b"\0" * 33 + struct.pack("<Q", 64) + b"\0" * 12 + struct.pack("<HHH", 64, 65535, 1),
    "section past the end": elf({".go.buildinfo": b""})[:-200],
    "not Go": elf({".text": b"\xc3" * 32}),
    "Go before 1.18": elf({".go.buildinfo": go_buildinfo("go1.16", KUBELET_MODINFO, flags=0)}),
    "varint overflow": elf({".go.buildinfo": b"\xff Go buildinf:\x08\x02" + b"\0" * 16 + b"\xff" * 40}),
    "string past the section": elf({".go.buildinfo": b"\xff Go buildinf:\x08\x02" + b"\0" * 16 + _uvarint(10**6) + b"go"}),
    "no module info": elf({".go.buildinfo": go_buildinfo("go1.22.0", "")[:-32]}),
    "bad quoting": elf({".go.buildinfo": go_buildinfo("go1.22.0", "build\t-ldflags=\"-X 'unterminated\n")}),
}


@pytest.mark.parametrize("name", list(GARBAGE))
def test_garbled_or_foreign_files_are_unknown_never_a_traceback(tmp_path, name):
    _write_elf(tmp_path, "/usr/bin/kubelet", GARBAGE[name])
    v, why = buildinfo.kubernetes_version(HostFS(str(tmp_path)), "/usr/bin/kubelet")
    assert v is None and why.startswith("/usr/bin/kubelet")
    assert buildinfo.containerd_version(HostFS(str(tmp_path)), "/usr/bin/kubelet")[0] is None


def test_a_directory_or_fifo_or_missing_file_is_unknown(tmp_path):
    (tmp_path / "usr/bin/kubelet").mkdir(parents=True)
    os.mkfifo(tmp_path / "fifo")
    for p in ("/usr/bin/kubelet", "/fifo", "/nowhere"):
        v, why = buildinfo.kubernetes_version(HostFS(str(tmp_path)), p)
        assert v is None and why


def test_reads_are_bounded_never_the_whole_binary(tmp_path, monkeypatch):
    gap = 200 << 20  # a 200 MB sparse binary whose sections and section headers sit past the gap
    data = elf({".go.buildinfo": go_buildinfo("go1.22.4", KUBELET_MODINFO)}, base=gap)
    p = _write_elf(tmp_path, "/usr/bin/kubelet", b"")
    with open(p, "wb") as f:
        f.write(data[:64])
        f.seek(gap)
        f.write(data[64:])
    assert p.stat().st_size == gap + len(data) - 64
    sizes = []
    real = os.pread

    def pread(fd, n, off):
        sizes.append(n)
        return real(fd, n, off)
    monkeypatch.setattr(buildinfo.os, "pread", pread)
    v, why = buildinfo.kubernetes_version(HostFS(str(tmp_path)), "/usr/bin/kubelet")
    assert v is not None and v.minor == 30, why
    assert len(sizes) == 4 and sum(sizes) < 1 << 20  # ELF header, section headers, their names, the section


def test_links_resolve_inside_the_host_root(tmp_path):
    _write_elf(tmp_path, "/opt/kube/v1.30.2/kubelet", elf({".go.buildinfo": go_buildinfo("go1.22.4", KUBELET_MODINFO)}))
    (tmp_path / "usr/local/bin").mkdir(parents=True)
    os.symlink("/opt/kube/v1.30.2/kubelet", tmp_path / "usr/local/bin/kubelet")  # absolute: inside the root
    v, _ = buildinfo.kubernetes_version(HostFS(str(tmp_path)), "/usr/local/bin/kubelet")
    assert v is not None and v.minor == 30


# ---- the doctor uses it where no package database answers ----

def test_hand_installed_kubelet_version_from_its_binary(tmp_path):
    from cri_exporter.doctor.context import Context
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)  # no dpkg/rpm record of a kubelet
    dropin = root / "usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf"
    dropin.write_text(dropin.read_text().replace("ExecStart=/usr/bin/kubelet ", "ExecStart=/opt/kube/bin/kubelet "))
    _write_elf(root, "/usr/bin/kubelet", b"a stale leftover, not what the unit runs")
    ctx = Context(HostFS(str(root)), "unix:///none.sock")
    assert ctx.kubelet.version is None
    # The unit's binary is not there (yet): the usual path is tried, and why it told nothing is said.
    assert "(no dpkg/rpm record of a kubelet package; /usr/bin/kubelet: not an ELF file)" in ctx.kubelet.version_text
    _write_elf(root, "/opt/kube/bin/kubelet", elf({".go.buildinfo": go_buildinfo("go1.22.4", KUBELET_MODINFO)}))
    ctx = Context(HostFS(str(root)), "unix:///none.sock")
    assert (ctx.kubelet.version.major, ctx.kubelet.version.minor, ctx.kubelet.version.patch) == (1, 30, 2)
    assert "build info of /opt/kube/bin/kubelet" in ctx.kubelet.version_text
    # A finding that depends on the version now says which it assumed (imagefs.inodesFree exists from 1.30).
    f = results(root, checks=["disk.imagefs"])["disk.imagefs"].finding
    assert "kubelet version unknown" not in f.seen


def test_k3s_kubelet_version_from_the_k3s_binary(tmp_path):
    from cri_exporter.doctor.context import Context
    root = copy_fixture("k3s-healthy", tmp_path)
    ctx = Context(HostFS(str(root)), "unix:///none.sock")
    assert ctx.kubelet.version is None and "compiled into k3s" in ctx.kubelet.version_text
    _write_elf(root, "/usr/local/bin/k3s", elf({".go.buildinfo": go_buildinfo("go1.22.9", K3S_MODINFO)}))
    ctx = Context(HostFS(str(root)), "unix:///none.sock")
    assert ctx.kubelet.version is not None and (ctx.kubelet.version.major, ctx.kubelet.version.minor) == (1, 31)
    assert "build info of /usr/local/bin/k3s" in ctx.kubelet.version_text
    _write_elf(root, "/usr/local/bin/k3s", b"not a binary")
    ctx = Context(HostFS(str(root)), "unix:///none.sock")
    assert ctx.kubelet.version is None and "/usr/local/bin/k3s: not an ELF file" in ctx.kubelet.version_text


# ---- real binaries as ground truth ----

def _built_with_go(control: str) -> str:
    """Debian's Built-Using / Static-Built-Using names the Go toolchain: golang-1.24 (= 1.24.4-1) -> go1.24.4."""
    m = re.search(r"golang-1\.\d+ \(= (\d+\.\d+(?:\.\d+)?)", control)
    assert m, control[:200]
    return "go" + m.group(1)


def _debian_control(version: versions.Version) -> str:
    if version.suite is None:
        return subprocess.run(["dpkg-query", "-W", "-f", "${Built-Using}${Static-Built-Using}", "containerd"],
                              capture_output=True, text=True, check=True).stdout
    suite = Suite(version.suite)
    deb = suite.base / "debs" / (suite.unpack("containerd") / ".done").read_text().strip()
    return subprocess.run(["dpkg-deb", "-f", str(deb), "Built-Using", "Static-Built-Using"],
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("name", versions.NAMES)
def test_lab_containerd_binaries(name):
    """Debian builds containerd with -trimpath from a GOPATH: the build info names the Go
    toolchain Debian says it used, records no -ldflags and no modules, so the version stays
    unknown from the binary (the package database answers for Debian's containerd)."""
    v = versions.get(name)
    binary = str(v.bin_dir() / "containerd")
    info, why = buildinfo.read(HostFS("/"), binary)
    assert info is not None, why
    assert info.go_version == _built_with_go(_debian_control(v))
    assert info.settings.get("-trimpath") == "true" and "-ldflags" not in info.settings
    assert info.path.startswith("github.com/containerd/containerd")
    assert info.path.endswith("/v2/cmd/containerd") == (v.major == 2)
    got, why = buildinfo.containerd_version(HostFS("/"), binary)
    assert got is None and "records no containerd version" in why


KUBECTLS = sorted(glob.glob("/usr/lib/google-cloud-sdk/bin/kubectl.1.*"))


@pytest.mark.skipif(not KUBECTLS, reason="no Kubernetes release builds of kubectl on this machine")
@pytest.mark.parametrize("binary", KUBECTLS)
def test_kubernetes_release_builds(binary):
    """Release builds use -trimpath (no -ldflags recorded); Go 1.24+ (Kubernetes 1.33+) stamps
    the main module's version from the release tag, which must be what the binary says it is."""
    said = subprocess.run([binary, "version", "--client"], capture_output=True, text=True, timeout=30).stdout
    truth = re.search(r'(?:Client Version: |GitVersion:")v(\d+)\.(\d+)\.(\d+)', said)
    assert truth, said
    info, _ = buildinfo.read(HostFS("/"), binary)
    assert info.settings.get("-trimpath") == "true" and "-ldflags" not in info.settings
    v, why = buildinfo.kubernetes_version(HostFS("/"), binary)
    go_minor = int(info.go_version.split(".")[1])
    if go_minor >= 24:
        assert isinstance(v, Version) and (v.major, v.minor, v.patch) == tuple(int(x) for x in truth.groups())
    else:
        assert v is None and info.main == ("k8s.io/kubernetes", "(devel)") and "records no Kubernetes version" in why


def test_containerd_without_package_or_cri_answer_from_its_binary(tmp_path):
    """containerd installed from the release tarball: no package records it and, down, it
    does not answer CRI Version; the binary containerd.service starts tells its version."""
    from cri_exporter.doctor.context import Context
    root = copy_fixture("kubeadm-containerd-v2", tmp_path)
    ctx = Context(HostFS(str(root)), "unix:///none.sock")
    assert not any("version from" in n for n in ctx.containerd_location.notes)
    ctd = ("path\tgithub.com/containerd/containerd/v2/cmd/containerd\n"
           "build\t-ldflags=" + _quote("-X github.com/containerd/containerd/v2/version.Version=v2.1.4") + "\n")
    _write_elf(root, "/usr/bin/containerd", elf({".go.buildinfo": go_buildinfo("go1.24.7", ctd)}))
    ctx = Context(HostFS(str(root)), "unix:///none.sock")
    assert ("containerd version from its build info of /usr/bin/containerd "
            "(-X github.com/containerd/containerd/v2/version.Version): v2.1.4") in ctx.containerd_location.notes
    _write_elf(root, "/usr/bin/containerd", b"\x7fELF garbage")
    ctx = Context(HostFS(str(root)), "unix:///none.sock")
    assert "containerd version unknown: /usr/bin/containerd: truncated ELF file" in ctx.containerd_location.notes
