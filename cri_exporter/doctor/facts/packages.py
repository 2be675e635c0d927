"""Installed package versions from the node's package databases, so findings
can say which release they assumed.

- dpkg (Debian, Ubuntu): /var/lib/dpkg/status, stanzas of `Package:`,
  `Status:` (`install ok installed` when installed) and `Version:`
  (`1.35.0-1.1`, pkgs.k8s.io's form; an epoch `1:` may lead).
- rpm (Fedora 33+, RHEL/Rocky/Alma 9+, SUSE): the sqlite database
  rpmdb.sqlite under /var/lib/rpm or /usr/lib/sysimage/rpm, table Packages,
  each blob an rpm header as headerExport writes it: big-endian entry count
  and data length, 16-byte index entries (tag, type, offset, count), then
  the data; NAME is tag 1000, VERSION 1001 (strings).
- rpm before 4.16 (RHEL, CentOS, Rocky and Alma 8): the
  Berkeley DB hash database /var/lib/rpm/Packages, the same header blobs as
  its values (keys: the 4-byte header number). Read page by page as
  Berkeley DB 5.3 lays it out (db_page.h): a metadata page (magic 0x061561,
  page size, last page number, in the writer's byte order), hash pages
  (type 2 or 13) whose index holds key/value item offsets, a value either
  inline (H_KEYDATA, type 1: its length runs to the previous item) or, past
  a quarter of a page, on a chain of overflow pages (H_OFFPAGE, type 3:
  first page and total length; each overflow page (type 7) holds
  `hf_offset` bytes after its 26-byte header). The test database was
  written by Debian's db5.3_load.
"""
from __future__ import annotations

import os
import re
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
        # Imported here: 1 MB resident in `serve`, whose log and ephemeral-storage
        # readers load the kubelet's facts (this module among them), never an rpm database.
        import sqlite3

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


RPM_BDB = "/var/lib/rpm/Packages"
_BDB_HASH_MAGIC = 0x061561
_P_HASH_UNSORTED, _P_OVERFLOW, _P_HASH = 2, 7, 13
_H_KEYDATA, _H_OFFPAGE = 1, 3
_BDB_PAGE_HEADER = 26


def _bdb_blobs(data: bytes):
    """Every value of a Berkeley DB hash database (see the module doc)."""
    if len(data) < 512:
        return
    for order in "<>":
        if struct.unpack_from(order + "I", data, 12)[0] == _BDB_HASH_MAGIC:
            break
    else:
        return
    pagesize, = struct.unpack_from(order + "I", data, 20)
    last, = struct.unpack_from(order + "I", data, 32)
    if pagesize < 512 or pagesize > 65536 or pagesize & (pagesize - 1):
        return
    pages = min(last + 1, len(data) // pagesize)

    def page(n: int) -> bytes:
        return data[n * pagesize:(n + 1) * pagesize]

    for n in range(1, pages):
        p = page(n)
        if p[25] not in (_P_HASH, _P_HASH_UNSORTED):
            continue
        entries, = struct.unpack_from(order + "H", p, 20)
        if _BDB_PAGE_HEADER + 2 * entries > pagesize:
            continue
        offsets = struct.unpack_from(order + f"{entries}H", p, _BDB_PAGE_HEADER) if entries else ()
        for i in range(1, len(offsets), 2):  # key, value, key, value...
            off = offsets[i]
            if off >= pagesize:
                continue
            if p[off] == _H_KEYDATA:
                yield p[off + 1: offsets[i - 1]]
            elif p[off] == _H_OFFPAGE and off + 12 <= pagesize:
                pgno, length = struct.unpack_from(order + "II", p, off + 4)
                chunks: list[bytes] = []
                seen: set[int] = set()
                while pgno and pgno < pages and pgno not in seen and sum(map(len, chunks)) < length:
                    seen.add(pgno)
                    q = page(pgno)
                    if q[25] != _P_OVERFLOW:
                        break
                    used, = struct.unpack_from(order + "H", q, 22)
                    chunks.append(q[_BDB_PAGE_HEADER:_BDB_PAGE_HEADER + used])
                    pgno, = struct.unpack_from(order + "I", q, 16)
                yield b"".join(chunks)[:length]


def rpm_bdb_versions(hostfs: HostFS, names: tuple[str, ...]) -> dict[str, Version]:
    """Versions from the Berkeley DB rpm database (rpm before 4.16)."""
    if not hostfs.is_file(RPM_BDB):
        return {}
    try:
        local = hostfs.path(RPM_BDB)  # a binary database, never bundled
        if os.stat(local).st_size > RPMDB_LIMIT:
            return {}
        with open(local, "rb") as f:
            data = f.read(RPMDB_LIMIT)
    except OSError:
        return {}
    found: dict[str, Version] = {}
    try:
        blobs = list(_bdb_blobs(data))
    except struct.error:  # a database rpm was writing while it was read
        return {}
    for blob in blobs:
        h = _header_strings(blob)
        name = h.get(_TAG_NAME)
        if name in names and _TAG_VERSION in h:
            v = parse_version(h[_TAG_VERSION], f"rpm: {name} {h[_TAG_VERSION]}")
            if v:
                found[name] = v
    return found


def installed(hostfs: HostFS, names: tuple[str, ...]) -> dict[str, Version]:
    """Package name -> version, from whichever database the node has."""
    return {**rpm_bdb_versions(hostfs, names), **rpm_versions(hostfs, names), **dpkg_versions(hostfs, names)}
