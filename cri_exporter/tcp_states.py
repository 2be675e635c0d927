"""TCP sockets of one network namespace counted by state, from
/proc/<pid>/net/tcp and tcp6 of a process in it.

Why these files and not /proc/<pid>/net/sockstat: sockstat is one cheap
read, but it holds totals only (`TCP: inuse orphan tw alloc mem`): no
ESTABLISHED, CLOSE_WAIT or LISTEN, the states an operator asks about (a
CLOSE_WAIT pile-up is an application not closing; a TIME_WAIT one, a client
opening a connection per request). The tcp files list every socket, one
line each (~150 bytes; 178 for tcp6), so their cost grows with the
namespace's sockets, and the kernel walks the node's whole established
hash (shared by every namespace unless net.ipv4.tcp_child_ehash_entries
is set) to print one namespace's part. So they are read off the scrape
path (container_fds.py), each read is bounded (READ_LIMIT), and a pod
whose file is longer than that gets no state series (an undercount would
look like a real number).

The state column is the kernel's enum (include/net/tcp_states.h, the same
numbering since Linux 2.6): request sockets (TCP_NEW_SYN_RECV inside the
kernel) are printed as SYN_RECV, and TCP_CLOSE sockets are not hashed, so
never listed.
"""
from __future__ import annotations

from dataclasses import dataclass

from cri_exporter.hostfs import HostFS

# include/net/tcp_states.h, named as netstat and cAdvisor's tcp_state name them
# (upper case as the kernel's TCP_* constants).
STATES: dict[int, str] = {
    0x01: "ESTABLISHED",
    0x02: "SYN_SENT",
    0x03: "SYN_RECV",
    0x04: "FIN_WAIT1",
    0x05: "FIN_WAIT2",
    0x06: "TIME_WAIT",
    0x07: "CLOSE",
    0x08: "CLOSE_WAIT",
    0x09: "LAST_ACK",
    0x0A: "LISTEN",
    0x0B: "CLOSING",
}
STATE_NAMES: tuple[str, ...] = tuple(STATES.values())
_BY_HEX = {f"{code:02X}": name for code, name in STATES.items()}

# Bytes read from each of tcp and tcp6: some 28,000 IPv4 or 23,000 IPv6 sockets.
READ_LIMIT = 4 * 1024 * 1024
FILES = ("tcp", "tcp6")


@dataclass(frozen=True, slots=True)
class TcpCount:
    """One namespace's sockets by state; `states` is None when a file was
    longer than the read limit (not counted: a partial count misleads)."""

    states: dict[str, int] | None
    lines: int  # socket lines read (the sampler's budget counts them)


def count_states(text: str, into: dict[str, int]) -> int:
    """Add the socket lines of one /proc/net/tcp{,6} text to `into`; the lines counted."""
    n = 0
    for line in text.splitlines()[1:]:  # the first line is the header
        fields = line.split(None, 4)
        if len(fields) < 4:
            continue
        name = _BY_HEX.get(fields[3])
        if name is not None:
            into[name] += 1
            n += 1
    return n


def read_states(hostfs: HostFS, pid: int, limit: int = READ_LIMIT) -> TcpCount:
    """The sockets of `pid`'s network namespace by state. tcp6 absent (IPv6
    disabled) counts as none; a missing tcp, or the process gone, raises OSError."""
    states = dict.fromkeys(STATE_NAMES, 0)
    lines, whole = 0, True
    for name in FILES:
        try:
            raw = hostfs.read_bytes(f"/proc/{pid}/net/{name}", limit)
        except FileNotFoundError:
            if name == "tcp":
                raise
            continue  # no IPv6 in this kernel
        if len(raw) >= limit:
            whole = False
            raw = raw[: raw.rfind(b"\n") + 1]  # the lines read so far still count against the budget
        lines += count_states(raw.decode("ascii", "replace"), states)
    return TcpCount(states if whole else None, lines)
