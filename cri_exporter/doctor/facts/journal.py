"""The kernel's messages from the systemd journal's own files, for nodes where
/dev/kmsg cannot be read (no CAP_SYSLOG, kernel.dmesg_restrict) or no longer
holds the window: journald keeps every kernel message it read from kmsg.

Read as systemd documents its format (docs/JOURNAL_FILE_FORMAT.md, systemd
252; all little-endian, objects 8-byte aligned, each a 16-byte header of
type, flags and size): the field hash table leads to the `_TRANSPORT` FIELD
object, its chain of DATA objects (next_field_offset) to `_TRANSPORT=kernel`,
whose entry_offset and chain of ENTRY_ARRAY objects list every kernel entry;
each ENTRY holds its realtime timestamp and the offsets of its DATA objects,
one of them `MESSAGE=...`. Files in compact mode (incompatible flag 16,
systemd 252+) use 32-bit offsets in entries and entry arrays and 8 more
bytes in DATA objects. No hash is computed, so keyed and unkeyed files read
alike. A payload compressed with XZ is decompressed; LZ4 and zstd ones (only
payloads past journald's 512-byte threshold are compressed: kernel lines are
shorter) are skipped.
"""
from __future__ import annotations

import lzma
import mmap
import os
import struct
import time

from cri_exporter.doctor.facts.files import list_dir
from cri_exporter.doctor.facts.kmsg import Record
from cri_exporter.hostfs import HostFS

JOURNAL_DIRS = ("/var/log/journal", "/run/log/journal")
SIGNATURE = b"LPKSHHRH"
_COMPACT = 16
_OBJECT_FIELD, _OBJECT_DATA, _OBJECT_ENTRY, _OBJECT_ENTRY_ARRAY = 2, 1, 3, 6
_COMPRESSED_XZ = 1
_COMPRESSED_ANY = 1 | 2 | 4
MAX_FILES = 64
MAX_ENTRIES = 1_000_000  # entry offsets collected from one file
MAX_RECORDS = 200_000


class _File:
    def __init__(self, m: mmap.mmap):
        self.m = m
        self.flags, = struct.unpack_from("<I", m, 12)
        self.compact = bool(self.flags & _COMPACT)

    def u64(self, off: int) -> int:
        value: int = struct.unpack_from("<Q", self.m, off)[0]
        return value

    def u32(self, off: int) -> int:
        value: int = struct.unpack_from("<I", self.m, off)[0]
        return value

    def object(self, off: int, kind: int) -> tuple[int, int] | None:
        """(flags, size) of the object of that type at `off`, None if it is not one."""
        if off <= 0 or off % 8 or off + 16 > len(self.m) or self.m[off] != kind:
            return None
        size = self.u64(off + 8)
        return (self.m[off + 1], size) if off + size <= len(self.m) and size >= 16 else None

    def data_payload(self, off: int) -> bytes | None:
        obj = self.object(off, _OBJECT_DATA)
        if obj is None:
            return None
        flags, size = obj
        payload = bytes(self.m[off + (72 if self.compact else 64): off + size])
        if flags & _COMPRESSED_ANY:
            if not flags & _COMPRESSED_XZ:
                return None
            try:
                return lzma.decompress(payload)
            except lzma.LZMAError:
                return None
        return payload

    def field(self, name: bytes) -> int | None:
        table, size = self.u64(120), self.u64(128)
        for i in range(min(size, len(self.m) - table) // 16):
            off, hops = self.u64(table + 16 * i), 0
            while off and hops < 1000:
                obj = self.object(off, _OBJECT_FIELD)
                if obj is None:
                    break
                if bytes(self.m[off + 40: off + obj[1]]) == name:
                    return off
                off, hops = self.u64(off + 24), hops + 1
        return None

    def value(self, field_off: int, payload: bytes) -> int | None:
        off, hops = self.u64(field_off + 32), 0
        while off and hops < 10_000:
            if self.data_payload(off) == payload:
                return off
            off, hops = self.u64(off + 32), hops + 1
        return None

    def entries(self, data_off: int) -> list[int]:
        """Offsets of the entries that reference a DATA object."""
        n = self.u64(data_off + 56)
        out = [self.u64(data_off + 40)] if n else []
        array, item = self.u64(data_off + 48), (4 if self.compact else 8)
        while array and len(out) < min(n, MAX_ENTRIES):
            obj = self.object(array, _OBJECT_ENTRY_ARRAY)
            if obj is None:
                break
            for k in range((obj[1] - 24) // item):
                off = self.u32(array + 24 + 4 * k) if self.compact else self.u64(array + 24 + 8 * k)
                if not off or len(out) >= n:
                    break
                out.append(off)
            array = self.u64(array + 16)
        return out

    def realtime(self, entry_off: int) -> int | None:
        """An entry's realtime timestamp (µs since the epoch)."""
        return self.u64(entry_off + 24) if self.object(entry_off, _OBJECT_ENTRY) else None

    def message(self, entry_off: int) -> tuple[int, str] | None:
        """(realtime in µs, MESSAGE) of an entry."""
        obj = self.object(entry_off, _OBJECT_ENTRY)
        if obj is None:
            return None
        realtime = self.u64(entry_off + 24)
        item = 4 if self.compact else 16
        for k in range((obj[1] - 64) // item):
            at = entry_off + 64 + item * k
            payload = self.data_payload(self.u32(at) if self.compact else self.u64(at))
            if payload and payload.startswith(b"MESSAGE="):
                return realtime, payload[8:].decode("utf-8", "replace")
        return None


def _files(hostfs: HostFS, since: float) -> list[str]:
    out = []
    for top in JOURNAL_DIRS:
        for sub in [""] + [f"/{d}" for d in list_dir(hostfs, top)]:
            d = top + sub
            for name in list_dir(hostfs, d):
                path = f"{d}/{name}"
                if name.endswith((".journal", ".journal~")) and hostfs.is_file(path):
                    try:
                        if os.stat(hostfs.path(path)).st_mtime >= since:
                            out.append(path)
                    except OSError:
                        continue
    return out[:MAX_FILES]  # (a day's files: journald rotates them by size, 128 MiB at most by default)


def kernel_records(hostfs: HostFS, since: float, uptime: float, now: float | None = None) -> tuple[list[Record], str]:
    """The kernel's messages logged since `since` (epoch seconds), each with
    its time as seconds since this boot (negative for earlier boots, as kmsg
    records are timed), or ([], why none could be read)."""
    now = time.time() if now is None else now
    files = _files(hostfs, since)
    if not files:
        return [], f"no journal files in {' or '.join(JOURNAL_DIRS)} written in the window"
    records: list[Record] = []
    for path in files:
        try:
            with open(hostfs.path(path), "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                if len(m) < 272 or m[:8] != SIGNATURE:
                    continue
                jf = _File(m)
                field = jf.field(b"_TRANSPORT")
                kernel = jf.value(field, b"_TRANSPORT=kernel") if field else None
                # Entries are listed oldest first: walk back from the newest to the window's start.
                for entry in reversed(jf.entries(kernel) if kernel else []):
                    when = jf.realtime(entry)
                    if when is None:
                        continue
                    if when / 1e6 < since or len(records) >= MAX_RECORDS:
                        break
                    found = jf.message(entry)
                    if found:
                        records.append(Record(uptime - (now - found[0] / 1e6), found[1]))
        except (OSError, ValueError, struct.error):
            continue  # a file being rotated, or torn: the others still count
    records.sort(key=lambda r: r.seconds)
    return records, ""
