"""Installed package versions from the node's package databases, so findings
can say which release they assumed.

- dpkg (Debian, Ubuntu): /var/lib/dpkg/status, stanzas of `Package:`,
  `Status:` (`install ok installed` when installed) and `Version:`
  (`1.35.0-1.1`, pkgs.k8s.io's form; an epoch `1:` may lead).
- rpm (Fedora 33+, RHEL/Rocky/Alma 9+, SUSE): the sqlite database
  rpmdb.sqlite under /var/lib/rpm or /usr/lib/sysimage/rpm, table Packages,
  each blob an rpm header as headerExport writes it: big-endian entry count
  and data length, 16-byte index entries (tag, type, offset, count), then
  the data; NAME is tag 1000, VERSION 1001 (strings). The BerkeleyDB
  database of older RPM releases (RHEL 8) is not read: the version is then
  unknown and said so.
"""
from __future__ import annotations

import os
import re
import sqlite3
import struct
from dataclasses import dataclass

from cri_exporter.hostfs import HostFS

DPKG_STATUS = "/var/lib/dpkg/status"
RPMDB_PATHS = ("/usr/lib/sysimage/rpm/rpmdb.sqlite", "/var/lib/rpm/rpmdb.sqlite")
# dpkg's status lists every package the node ever had: bounded, but larger than a config.
DPKG_STATUS_LIMIT = 32 << 20
RPMDB_LIMIT = 512 << 20
_TAG_NAME, _TAG_VERSION, _TYPE_STRING = 1000, 1001, 6


@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    text: str  # as the source gave it
    source: str  # where it was learned

    @property
    def minor_tuple(self) -> tuple[int, int]:
        return self.major, self.minor

    def at_least(self, major: int, minor: int) -> bool:
        return self.minor_tuple >= (major, minor)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch} ({self.source})"


_VERSION_RE = re.compile(r"^(?:\d+:)?v?(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str, source: str) -> Version | None:
    m = _VERSION_RE.match(text.strip())
    if not m:
        return None
    return Version(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0), text.strip(), source)


def dpkg_versions(hostfs: HostFS, names: tuple[str, ...]) -> dict[str, Version]:
    try:  # not read_config: a package list is no config, and never goes into the bundle
        text = hostfs.read_text(DPKG_STATUS, limit=DPKG_STATUS_LIMIT)
    except OSError:
        return {}
    found: dict[str, Version] = {}
    for stanza in text.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", stanza, re.M))
        name = fields.get("Package")
        if name in names and fields.get("Status", "").endswith(" installed"):
            v = parse_version(fields.get("Version", ""), f"dpkg: {name} {fields.get('Version', '')}")
            if v:
                found[name] = v
    return found


def _header_strings(blob: bytes) -> dict[int, str]:
    """NAME and VERSION of one rpm header blob (see the module doc)."""
    if len(blob) < 8:
        return {}
    count, data_len = struct.unpack(">ii", blob[:8])
    start = 8 + 16 * count
    if count < 0 or start + data_len > len(blob):
        return {}
    out = {}
    for i in range(count):
        tag, typ, offset, _ = struct.unpack(">iiii", blob[8 + 16 * i: 24 + 16 * i])
        if tag in (_TAG_NAME, _TAG_VERSION) and typ == _TYPE_STRING and 0 <= offset < data_len:
            end = blob.find(b"\0", start + offset, start + data_len)
            out[tag] = blob[start + offset: end if end >= 0 else start + data_len].decode("utf-8", "replace")
    return out


def rpm_versions(hostfs: HostFS, names: tuple[str, ...]) -> dict[str, Version]:
    for path in RPMDB_PATHS:
        if not hostfs.is_file(path):
            continue
        try:
            local = hostfs.path(path)  # resolved inside the root; a binary database, never bundled
            if os.stat(local).st_size > RPMDB_LIMIT:
                return {}
            con = sqlite3.connect(f"file:{local}?mode=ro&immutable=1", uri=True)
        except (OSError, sqlite3.Error):
            return {}
        found: dict[str, Version] = {}
        try:
            for (blob,) in con.execute("SELECT blob FROM Packages"):
                h = _header_strings(bytes(blob))
                name = h.get(_TAG_NAME)
                if name in names and _TAG_VERSION in h:
                    v = parse_version(h[_TAG_VERSION], f"rpm: {name} {h[_TAG_VERSION]}")
                    if v:
                        found[name] = v
        except sqlite3.Error:
            return {}
        finally:
            con.close()
        return found
    return {}


def installed(hostfs: HostFS, names: tuple[str, ...]) -> dict[str, Version]:
    """Package name -> version, from whichever database the node has."""
    return {**rpm_versions(hostfs, names), **dpkg_versions(hostfs, names)}
