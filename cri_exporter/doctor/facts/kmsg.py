"""The kernel's log from /dev/kmsg (Documentation/ABI/testing/dev-kmsg):
one record per read, "prio,seq,usec,flags[,...];message", continuation lines
starting with a space; the timestamp is microseconds since boot. Reading
needs CAP_SYSLOG (or kernel.dmesg_restrict=0); O_NONBLOCK ends at EAGAIN, and
EPIPE means records were overwritten while reading (skip on). The ring
buffer holds the recent past only: what it no longer holds is not seen."""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from cri_exporter.hostfs import HostFS

KMSG = "/dev/kmsg"
MAX_RECORDS = 200_000
MAX_BYTES = 64 << 20


@dataclass(frozen=True)
class Record:
    seconds: float  # since boot
    message: str


def read(hostfs: HostFS, path: str = KMSG) -> tuple[list[Record], str]:
    """The records, or ([], why they cannot be read)."""
    try:
        fd = os.open(hostfs.path(path), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        return [], f"{path}: {e.strerror or e}"
    records: list[Record] = []
    pending = b""
    total = 0
    try:
        while len(records) < MAX_RECORDS and total < MAX_BYTES:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EPIPE:
                    continue
                if not records:
                    return [], f"{path}: {e.strerror or e}"
                break
            if not chunk:
                break
            total += len(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                rec = _parse(line)
                if rec:
                    records.append(rec)
    finally:
        os.close(fd)
    rec = _parse(pending)
    if rec:
        records.append(rec)
    return records, ""


def _parse(line: bytes) -> Record | None:
    if not line or line.startswith(b" "):
        return None
    head, sep, message = line.partition(b";")
    fields = head.split(b",")
    if not sep or len(fields) < 3:
        return None
    try:
        usec = int(fields[2])
    except ValueError:
        return None
    return Record(usec / 1e6, message.decode("utf-8", "replace"))
