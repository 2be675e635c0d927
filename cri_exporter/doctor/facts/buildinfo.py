"""Versions from a Go binary's build info, for binaries no package records
(a kubelet installed by hand, k3s, which compiles the kubelet in).

The Go linker (1.18+) writes an ELF section `.go.buildinfo` (src/debug/buildinfo,
runtime/debug.ParseBuildInfo): a 32-byte header, the magic "\\xff Go buildinf:",
the pointer size, a flags byte whose bit 2 says the strings follow inline;
then two strings each prefixed by its length as an unsigned varint: the Go
version, and the module info between two 16-byte sentinels, one line per
fact: `path`, `mod`, `dep` (a `=>` line after it names a replacement) and
`build key=value`, a value Go-quoted when it holds spaces. `build -ldflags`
is recorded unless the binary was built with -trimpath (Go issue 52372),
and carries the version a release build stamps in with `-X`:
- Kubernetes (hack/lib/version.sh) and k3s (scripts/build, `go build -ldflags
  "$VERSIONFLAGS ..."`): `k8s.io/component-base/version.gitVersion=v1.33.1`
  (`v1.31.4+k3s1` in k3s, whose older vendored builds prefix it with
  `github.com/rancher/k3s/vendor/`);
- containerd: `github.com/containerd/containerd[/v2]/version.Version=1.7.24`.
Builds with -trimpath record no -ldflags: the Kubernetes release builds
(kubectl 1.27-1.33 on the lab machine) and Debian's containerd 1.6.20,
1.7.24 and 2.1.9 (which record no modules either: built from a GOPATH). Go
1.24+ stamps the main module's version from the release tag instead, so a
Kubernetes 1.33+ release binary says `mod k8s.io/kubernetes v1.33.1`; older
ones say `(devel)` and stay unknown. k3s replaces the `k8s.io/kubernetes` module with its fork (`v1.31.4-k3s1`),
which names the release too.

Only the ELF header, the section headers, the section-name table and the
build info section are read, each bounded: never the whole binary. A file
that is not ELF, not Go, older than Go 1.18 or garbled gives a reason, never
an exception.
"""
from __future__ import annotations

import os
import re
import shlex
import struct
from dataclasses import dataclass, field

from cri_exporter.doctor.facts.packages import Version
from cri_exporter.hostfs import HostFS

MAGIC = b"\xff Go buildinf:"
SECTION = b".go.buildinfo"
MAX_SECTIONS = 4096  # a Go binary has about 40
MAX_NAMES = 64 * 1024  # the section-name table
MAX_INFO = 2 * 1024 * 1024  # k3s's module list is about 100 KB
_SENTINEL_LEN = 16

GIT_VERSION = "k8s.io/component-base/version.gitVersion"
CONTAINERD_VERSION = ("github.com/containerd/containerd/v2/version.Version",
                      "github.com/containerd/containerd/version.Version")


class NotGoBinary(Exception):
    pass


@dataclass
class BuildInfo:
    go_version: str
    path: str = ""  # the main package
    main: tuple[str, str] = ("", "")  # main module path, version
    deps: dict[str, str] = field(default_factory=dict)  # module path -> version (its replacement's when replaced)
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def ldflags_x(self) -> dict[str, str]:
        """`-X importpath.name=value` definitions in the recorded -ldflags."""
        try:
            words = shlex.split(self.settings.get("-ldflags", ""))
        except ValueError:
            return {}
        out: dict[str, str] = {}
        for i, w in enumerate(words):
            if w in ("-X", "--X") and i + 1 < len(words):
                definition = words[i + 1]
            elif w.startswith(("-X=", "--X=")):
                definition = w.split("=", 1)[1]
            else:
                continue
            name, eq, value = definition.partition("=")
            if eq:
                out[name] = value
        return out


def _read(fd: int, offset: int, size: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise NotGoBinary("truncated ELF file")
    return data


def _section(fd: int) -> bytes:
    ident = os.pread(fd, 64, 0)
    if ident[:4] != b"\x7fELF":
        raise NotGoBinary("not an ELF file")
    if len(ident) < 64:
        raise NotGoBinary("truncated ELF file")
    cls, data_enc = ident[4], ident[5]
    if cls not in (1, 2) or data_enc not in (1, 2):
        raise NotGoBinary("unknown ELF class or byte order")
    e = "<" if data_enc == 1 else ">"
    if cls == 2:
        shoff, = struct.unpack_from(e + "Q", ident, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", ident, 0x3A)
        fmt, need = e + "IIQQQQ", 40
    else:
        shoff, = struct.unpack_from(e + "I", ident, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", ident, 0x2E)
        fmt, need = e + "IIIIII", 24
    if not shoff or not 0 < shnum <= MAX_SECTIONS or shentsize < need or shstrndx >= shnum:
        raise NotGoBinary("no usable ELF section headers")
    table = _read(fd, shoff, shnum * shentsize)
    headers = [struct.unpack_from(fmt, table, i * shentsize) for i in range(shnum)]
    # (name, type, flags, addr, offset, size)
    names_off, names_size = headers[shstrndx][4], min(headers[shstrndx][5], MAX_NAMES)
    names = _read(fd, names_off, names_size)
    for name, _type, _flags, _addr, offset, size in headers:
        end = names.find(b"\0", name)
        if names[name:end if end >= 0 else None] == SECTION:
            return os.pread(fd, min(size, MAX_INFO), offset)
    raise NotGoBinary("no .go.buildinfo section (not a Go binary)")


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(buf) and shift < 64:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
    raise NotGoBinary("garbled build info (bad length)")


def _string(buf: bytes, pos: int) -> tuple[str, int]:
    n, pos = _uvarint(buf, pos)
    if pos + n > len(buf):
        raise NotGoBinary("garbled build info (string past the section)")
    return buf[pos:pos + n].decode("utf-8", "replace"), pos + n


_ESCAPE = re.compile(r'\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|.)', re.S)
_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _unquote(s: str) -> str:
    """A Go-quoted value (strconv.Quote) back to its text; other text as is."""
    if len(s) < 2 or s[0] != '"' or s[-1] != '"':
        return s

    def one(m: re.Match[str]) -> str:
        e: str = m.group(1)
        if e[0] in "xuU":
            return chr(int(e[1:], 16))
        if e[0].isdigit():
            return chr(int(e, 8))
        return _SIMPLE.get(e, e)
    return _ESCAPE.sub(one, s[1:-1])


def parse(section: bytes) -> BuildInfo:
    if not section.startswith(MAGIC) or len(section) < 32:
        raise NotGoBinary("no Go build info header")
    if not section[15] & 0x2:
        raise NotGoBinary("built with Go before 1.18 (build info not inline)")
    go, pos = _string(section, 32)
    mod, _ = _string(section, pos)
    info = BuildInfo(go)
    if len(mod) >= 2 * _SENTINEL_LEN + 1 and mod[-_SENTINEL_LEN - 1] == "\n":
        mod = mod[_SENTINEL_LEN:-_SENTINEL_LEN]
    else:
        mod = ""
    last = ""
    for line in mod.splitlines():
        kind, _, rest = line.partition("\t")
        parts = rest.split("\t")
        if kind == "path":
            info.path = rest
        elif kind == "mod" and len(parts) >= 2:
            info.main = (parts[0], parts[1])
        elif kind == "dep" and len(parts) >= 2:
            info.deps[parts[0]] = parts[1]
            last = parts[0]
        elif kind == "=>" and last and len(parts) >= 2:
            info.deps[last] = parts[1]  # a replacement: the module actually built in
        elif kind == "build":
            key, _, value = rest.partition("=")
            if key.startswith('"') and not key.endswith('"'):  # a quoted key holding "="
                key, _, value = rest.partition('"=')
                key += '"'
            info.settings[_unquote(key)] = _unquote(value)
    return info


def read(hostfs: HostFS, host_path: str) -> tuple[BuildInfo | None, str]:
    """(the build info of the Go binary at `host_path`, "") or (None, why not)."""
    try:
        fd = hostfs.open(host_path)
    except OSError as e:
        return None, f"{host_path}: {e.strerror or e}"
    try:
        return parse(_section(fd)), ""
    except NotGoBinary as e:
        return None, f"{host_path}: {e}"
    except (OSError, struct.error, IndexError, ValueError, OverflowError) as e:
        return None, f"{host_path}: unreadable build info ({type(e).__name__})"
    finally:
        os.close(fd)


_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")


def _version(text: str | None, source: str) -> Version | None:
    m = _SEMVER.match(text or "")
    if not m or (m.group(1), m.group(2)) == ("0", "0"):
        return None
    return Version(int(m.group(1)), int(m.group(2)), int(m.group(3)), text or "", source)


def kubernetes_version(hostfs: HostFS, host_path: str) -> tuple[Version | None, str]:
    """The Kubernetes release a kubelet (or k3s) binary was built as: its
    stamped gitVersion, else (k3s) the version of the k8s.io/kubernetes fork
    built in. (None, why) when neither is recorded."""
    info, why = read(hostfs, host_path)
    if info is None:
        return None, why
    x = info.ldflags_x
    # k3s's older GOPATH builds stamp the vendored copy: .../vendor/k8s.io/component-base/...
    name = next((k for k in x if k == GIT_VERSION or k.endswith("/vendor/" + GIT_VERSION)), GIT_VERSION)
    v = _version(x.get(name), f"build info of {host_path} (-X {name})")
    if v is None and info.main[0] == "k8s.io/kubernetes":  # Go 1.24+ stamps the release tag (1.33+)
        v = _version(info.main[1], f"build info of {host_path} (main module k8s.io/kubernetes)")
    if v is None:
        v = _version(info.deps.get("k8s.io/kubernetes"), f"build info of {host_path} (module k8s.io/kubernetes)")
    if v is None:
        return None, f"{host_path}: its build info ({info.go_version}) records no Kubernetes version"
    return v, ""


def containerd_version(hostfs: HostFS, host_path: str) -> tuple[Version | None, str]:
    """The version a containerd binary was stamped with (-X .../version.Version)."""
    info, why = read(hostfs, host_path)
    if info is None:
        return None, why
    x = info.ldflags_x
    for name in CONTAINERD_VERSION:
        v = _version(x.get(name), f"build info of {host_path} (-X {name})")
        if v is not None:
            return v, ""
    if info.main[0] in ("github.com/containerd/containerd", "github.com/containerd/containerd/v2"):
        v = _version(info.main[1], f"build info of {host_path} (main module {info.main[0]})")
        if v is not None:
            return v, ""
    return None, f"{host_path}: its build info ({info.go_version}) records no containerd version"
