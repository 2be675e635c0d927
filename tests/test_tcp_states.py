"""tcp_states.py on /proc/net/tcp texts of the kernel's format (files under a
host root): states by the kernel's codes, IPv4 and IPv6 together, the bounded
read, and what a missing file means."""
from __future__ import annotations

import pytest

from cri_exporter.hostfs import HostFS
from cri_exporter.tcp_states import STATE_NAMES, read_states

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
V4 = "{i:4d}: 0100007F:1F90 0100007F:{p:04X} {st} 00000000:00000000 00:00000000 00000000     0        0 {i} 1 0 20 4 30 10 -1\n"
V6 = ("{i:4d}: 0000000000000000FFFF00000100007F:1B58 0000000000000000FFFF00000100007F:{p:04X} {st} "
      "00000000:00000000 00:00000000 00000000     0        0 {i} 1 0 20 4 30 10 -1\n")


def write(root, pid: int, v4: list[str], v6: list[str] | None) -> None:
    net = root / "proc" / str(pid) / "net"
    net.mkdir(parents=True)
    (net / "tcp").write_text(HEADER + "".join(V4.format(i=i, p=40000 + i, st=st) for i, st in enumerate(v4)))
    if v6 is not None:
        (net / "tcp6").write_text(HEADER + "".join(V6.format(i=i, p=40000 + i, st=st) for i, st in enumerate(v6)))


def test_states_by_the_kernels_codes_over_both_files(tmp_path):
    write(tmp_path, 7, ["01", "0A", "06", "06", "08"], ["01", "0A", "0B", "09", "03"])
    got = read_states(HostFS(str(tmp_path)), 7)
    assert got.lines == 10
    assert got.states == {**dict.fromkeys(STATE_NAMES, 0), "ESTABLISHED": 2, "LISTEN": 2, "TIME_WAIT": 2,
                          "CLOSE_WAIT": 1, "CLOSING": 1, "LAST_ACK": 1, "SYN_RECV": 1}


def test_no_ipv6_counts_as_none(tmp_path):
    write(tmp_path, 7, ["01"], None)
    assert read_states(HostFS(str(tmp_path)), 7).states["ESTABLISHED"] == 1


def test_a_file_past_the_limit_gives_no_states_but_counts_its_lines(tmp_path):
    """An undercount would look like a real number: no states at all."""
    write(tmp_path, 7, ["01"] * 100, [])
    line = len(V4.format(i=0, p=40000, st="01"))
    got = read_states(HostFS(str(tmp_path)), 7, limit=len(HEADER) + 10 * line + 5)
    assert got.states is None and got.lines == 10


def test_a_process_gone_raises(tmp_path):
    with pytest.raises(OSError):
        read_states(HostFS(str(tmp_path)), 12345)


def test_unknown_codes_and_garbage_lines_are_skipped(tmp_path):
    net = tmp_path / "proc" / "7" / "net"
    net.mkdir(parents=True)
    (net / "tcp").write_text(HEADER + "garbage\n" + V4.format(i=0, p=1, st="FF") + V4.format(i=1, p=2, st="0A"))
    got = read_states(HostFS(str(tmp_path)), 7)
    assert got.lines == 1 and got.states["LISTEN"] == 1
