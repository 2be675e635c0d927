"""Each reader against the fixture trees (kernel-documented formats), plus
garbage content and cgroups that vanish mid-read."""
from __future__ import annotations

import dataclasses
import errno
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cri_exporter.cgroups import (
    CgroupPaths, CgroupResolver, DeviceIO, NodeCgroups, PsiTotals, USAGE_FIELDS, Usage, UsageRows, read_all, read_cpu, read_io,
    read_memory, read_pids, read_pressure, usage_from,
)
from cri_exporter.cgroups import blkio, files, memory
from cri_exporter.cgroups.blkio import parse_io_stat, parse_v1_blkio
from cri_exporter.cgroups.devices import DeviceNames
from cri_exporter.cgroups.pressure import parse_psi
from cri_exporter.hostfs import HostFS

FIXTURES = Path(__file__).parent / "fixtures" / "cgroup"
G_UID, B_UID, E_UID = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222", "33333333-3333-4333-8333-333333333333"
G_ID, B_ID, E_ID = "a" * 64, "b" * 64, "c" * 64
TREES = ["v2-systemd", "v2-cgroupfs", "v1-cgroupfs", "v1-systemd"]
V1_UNLIMITED = "9223372036854771712"


def paths(tree: str, cid: str = B_ID, uid: str = B_UID, root: Path = FIXTURES) -> CgroupPaths:
    p = CgroupResolver(HostFS(str(root / tree))).container(cid, uid)
    assert p is not None
    return p


def is_v2(tree: str) -> bool:
    return tree.startswith("v2")


# ---- CPU -------------------------------------------------------------------

@pytest.mark.parametrize("tree", TREES)
def test_cpu_burstable_container(tree):
    cpu = read_cpu(paths(tree))
    assert cpu.usage_ns == 2_000_000_000  # v2 usage_usec 2000000, v1 cpuacct.usage
    assert (cpu.periods, cpu.throttled_periods, cpu.throttled_ns) == (1000, 250, 12_500_000_000)
    assert (cpu.quota_us, cpu.period_us) == (50000, 100000)
    assert (cpu.shares, cpu.weight) == ((None, 20) if is_v2(tree) else (512, None))


@pytest.mark.parametrize("tree", TREES)
def test_cpu_without_quota(tree):
    cpu = read_cpu(paths(tree, E_ID, E_UID))
    assert cpu.quota_us is None  # v2 "max 100000", v1 -1
    assert cpu.period_us == 100000
    if is_v2(tree):
        # v2 cpu.stat has no nr_* lines while the cpu controller is off: unknown, not 0
        assert (cpu.periods, cpu.throttled_periods, cpu.throttled_ns) == (None, None, None)
    else:
        assert (cpu.periods, cpu.throttled_periods, cpu.throttled_ns) == (0, 0, 0)


def test_cpu_usage_can_be_skipped_on_v1():
    assert read_cpu(paths("v1-cgroupfs"), usage=False).usage_ns is None
    assert read_cpu(paths("v1-cgroupfs"), usage=False).throttled_periods == 250


# ---- memory ----------------------------------------------------------------

@pytest.mark.parametrize("tree", TREES)
def test_memory_burstable_container(tree):
    m = read_memory(paths(tree))
    assert m.usage_bytes == 104857600
    assert m.limit_bytes == 268435456
    assert m.working_set_bytes == 104857600 - 16777216  # usage - inactive_file
    assert (m.rss_bytes, m.cache_bytes) == (52428800, 41943040)
    assert (m.active_file_bytes, m.inactive_file_bytes, m.mapped_file_bytes) == (20971520, 16777216, 8388608)
    assert m.swap_bytes == 1048576
    assert (m.page_faults, m.major_page_faults) == (123456, 78)
    assert m.oom_kills == 2
    if is_v2(tree):
        assert (m.oom_events, m.max_events, m.high_events, m.failcnt) == (3, 17, 5, None)
    else:
        assert (m.oom_events, m.max_events, m.high_events, m.failcnt) == (None, None, None, 17)


@pytest.mark.parametrize("tree", TREES)
def test_memory_unlimited_is_none(tree):
    assert read_memory(paths(tree, E_ID, E_UID)).limit_bytes is None  # "max" / 9223372036854771712


@pytest.mark.parametrize("tree", ["v1-cgroupfs", "v1-systemd"])
def test_v1_pod_memory_uses_hierarchical_total_keys(tree):
    """A v1 pod cgroup's local keys are 0 (no tasks of its own); total_* count its containers."""
    pod = CgroupResolver(HostFS(str(FIXTURES / tree))).pod(B_UID)
    m = read_memory(pod)
    assert (m.rss_bytes, m.inactive_file_bytes, m.page_faults) == (52953088, 16777216, 123999)
    assert m.working_set_bytes == 105906176 - 16777216
    assert m.oom_kills == 0  # v1 oom_kill is not hierarchical


def test_working_set_floors_at_zero(tmp_path):
    d = tmp_path / "cg"
    d.mkdir()
    (d / "memory.current").write_text("1000\n")
    (d / "memory.stat").write_text("anon 10\nfile 5000\ninactive_file 4096\n")
    m = read_memory(CgroupPaths("v2", "cg", {}, str(tmp_path)))
    assert m.working_set_bytes == 0
    assert m.limit_bytes is None and m.swap_bytes is None  # files absent: unknown


# ---- pressure, pids, io ----------------------------------------------------

@pytest.mark.parametrize("tree", TREES)
def test_pressure(tree):
    p = read_pressure(paths(tree))
    if tree == "v1-systemd":  # no unified tree at all
        assert (p.cpu, p.memory, p.io) == (None, None, None)
        return
    assert p.cpu == PsiTotals(1500000, 900000)
    assert p.memory == PsiTotals(250000, 200000)
    assert p.io == PsiTotals(3000000, 2500000)


def test_psi_without_full_line():
    """cpu.pressure had only a `some` line for cgroups before 5.13."""
    assert parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=42\n") == PsiTotals(42, None)


@pytest.mark.parametrize("tree", TREES)
def test_pids(tree):
    assert read_pids(paths(tree)).current == 7
    assert read_pids(paths(tree)).limit == 1024
    assert read_pids(paths(tree, E_ID, E_UID)).limit is None  # "max"


def test_device_without_uevent_is_asked_once_a_window_and_named_when_it_appears(tmp_path, monkeypatch):
    """A maj:min without /sys/dev/block/<maj:min>/uevent is asked at most once
    every MISS_RETRY_SECONDS (a scrape asks for it once per cgroup), and gets
    its name once the uevent is there and the window has passed."""
    from cri_exporter.cgroups import devices
    fs = HostFS(str(tmp_path))
    names = DeviceNames(fs)
    opened = []
    real_open = HostFS.open
    monkeypatch.setattr(HostFS, "open", lambda self, p, *a: opened.append(p) or real_open(self, p, *a))
    now = [1000.0]
    monkeypatch.setattr(devices.time, "monotonic", lambda: now[0])
    assert [names.name("253:0") for _ in range(3)] == ["253:0"] * 3
    assert opened == ["/sys/dev/block/253:0/uevent"]
    uevent = tmp_path / "sys/dev/block/253:0/uevent"
    uevent.parent.mkdir(parents=True)
    uevent.write_text("MAJOR=253\nMINOR=0\nDEVNAME=dm-0\nDEVTYPE=disk\n")
    now[0] += devices.MISS_RETRY_SECONDS - 0.1
    assert names.name("253:0") == "253:0" and len(opened) == 1
    now[0] += 0.2
    assert names.name("253:0") == "dm-0" and len(opened) == 2
    assert names.name("253:0") == "dm-0" and len(opened) == 2  # found names are kept


def test_a_device_without_uevent_is_one_string_for_every_cgroup(tmp_path):
    """The maj:min answered for a device without uevent is the first one asked
    about, not each cgroup's own copy (the scrape's I/O families hold them)."""
    names = DeviceNames(HostFS(str(tmp_path)))
    first, again = "".join(["253", ":0"]), "".join(["253", ":", "0"])
    assert first is not again
    assert names.name(first) is first and names.name(again) is first


@pytest.mark.parametrize("tree", TREES)
def test_io_per_device_with_names(tree):
    fs = HostFS(str(FIXTURES / tree))
    io = read_io(paths(tree), DeviceNames(fs))
    assert io.devices == (
        DeviceIO("253:0", "253:0", 4096, 0, 1, 0),  # no uevent for 253:0 in the tree: maj:min
        DeviceIO("sda", "8:0", 1459200, 314773504, 192, 353),
    )
    assert read_io(paths(tree, E_ID, E_UID)).devices == ()


@pytest.mark.parametrize("tree", TREES)
def test_pod_io_counts_its_containers(tree):
    """v1 pod cgroups read the _recursive files (the local ones are empty); v2 io.stat is hierarchical."""
    pod = CgroupResolver(HostFS(str(FIXTURES / tree))).pod(B_UID)
    assert {d.major_minor: d.read_bytes for d in read_io(pod).devices} == {"8:0": 1459200, "253:0": 4096}


def test_v1_blkio_format():
    text = "8:0 Read 10\n8:0 Write 20\n8:0 Sync 20\n8:0 Async 10\n8:0 Discard 0\n8:0 Total 30\nTotal 30\n"
    assert parse_v1_blkio(text) == {"8:0": [10, 20]}


# ---- usage (for the CRI collector) -----------------------------------------

@pytest.mark.parametrize("tree", TREES)
def test_usage_from_a_reading(tree):
    assert usage_from(read_all(paths(tree))) == Usage(
        cpu_usage_ns=2_000_000_000, memory_usage_bytes=104857600, memory_working_set_bytes=88080384,
        memory_rss_bytes=52428800, memory_swap_bytes=1048576, memory_page_faults=123456, memory_major_page_faults=78,
    )
    pod = usage_from(NodeCgroups(HostFS(str(FIXTURES / tree))).pod_stats(G_UID))
    assert (pod.cpu_usage_ns, pod.memory_usage_bytes, pod.memory_working_set_bytes) == (510_000_000, 21495808, 21495808 - 2097152)


@pytest.mark.parametrize("tree", TREES)
def test_usage_rows_hold_what_usage_from_gives(tree):
    """The scrape's rows of doubles give back each cgroup's Usage, None fields
    (NaN in the row) included; an unread cgroup is a key without a row."""
    stats = read_all(paths(tree))
    pod = NodeCgroups(HostFS(str(FIXTURES / tree))).pod_stats(G_UID)
    no_swap = dataclasses.replace(stats, memory=dataclasses.replace(stats.memory, swap_bytes=None))
    rows = UsageRows()
    for key, s in (("c", stats), ("p", pod), ("gone", None), ("no-swap", no_swap)):
        rows.put(key, s)
    assert [rows.usage(k) for k in ("c", "p", "gone", "no-swap")] == [
        usage_from(stats), usage_from(pod), None, usage_from(no_swap)]
    assert usage_from(no_swap).memory_swap_bytes is None and usage_from(stats).memory_swap_bytes == 1048576
    assert rows.index["gone"] is None and "gone" in rows and "never-read" not in rows and len(rows) == 4
    at = rows.index["c"]
    assert rows.values[at + USAGE_FIELDS.index("memory_working_set_bytes")] == 88080384


# ---- limit files kept between scrapes ----------------------------------------

@pytest.mark.parametrize("tree", TREES)
def test_limit_files_are_kept_for_about_a_minute_and_usage_never(tree, tmp_path, monkeypatch):
    """A resize (new limit files) shows after the refresh time; usage is read every time."""
    shutil.copytree(FIXTURES / tree, tmp_path / tree)
    p = paths(tree, root=tmp_path)
    first = read_all(p, keep_limits=True)
    assert first.memory.limit_bytes == 268435456 and first.pids.limit is not None
    mem, pids = (p.unified, p.unified) if is_v2(tree) else (p.dir("memory"), p.dir("pids"))
    usage_file = "memory.current" if is_v2(tree) else "memory.usage_in_bytes"
    Path(mem, "memory.max" if is_v2(tree) else "memory.limit_in_bytes").write_text("536870912\n")
    Path(pids, "pids.max").write_text("77\n")
    Path(mem, usage_file).write_text("4096\n")

    kept = read_all(p, keep_limits=True)
    assert (kept.memory.limit_bytes, kept.pids.limit) == (first.memory.limit_bytes, first.pids.limit)
    assert kept.memory.usage_bytes == 4096
    once = read_all(p)  # a one-off read (the doctor) reads every file
    assert (once.memory.limit_bytes, once.pids.limit) == (536870912, 77)

    from cri_exporter.cgroups import node
    later = time.monotonic() + node.LIMITS_REFRESH_SECONDS * 1.25 + 1
    monkeypatch.setattr(node.time, "monotonic", lambda: later)
    resized = read_all(p, keep_limits=True)
    assert (resized.memory.limit_bytes, resized.pids.limit) == (536870912, 77)


def test_limit_refreshes_are_spread():
    """Containers started together are not all re-read in the same scrape."""
    expiries = set()
    for _ in range(50):
        kept = files.LimitFiles()
        kept.due(1000.0, 60.0)
        assert 1045.0 <= kept._expires <= 1075.0
        expiries.add(round(kept._expires, 3))
    assert len(expiries) > 25


# ---- the fast path of flat keyed files -------------------------------------

def _flat_keyed_line_by_line(text):
    out = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


flat_key = st.from_regex(r"[a-z_][a-z0-9_]{0,20}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(flat_key, st.integers(-(2**63), 2**64)), max_size=40), st.booleans())
def test_flat_keyed_well_formed_files_read_as_line_by_line(pairs, trailing_newline):
    text = "\n".join(f"{k} {v}" for k, v in pairs) + ("\n" if trailing_newline and pairs else "")
    assert files.flat_keyed(text) == _flat_keyed_line_by_line(text) == dict(pairs)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.tuples(flat_key, st.integers(0, 10**12)).map(lambda kv: f"{kv[0]} {kv[1]}"),
    st.sampled_from(["", "total_rss", "x 1 2", "12 34", "k v", "k -", "- 5", "k 12ab", "k  7", " k 8"]),
), max_size=12))
def test_flat_keyed_with_a_broken_line_keeps_every_good_line(lines):
    """One broken line (truncated, garbage, empty) loses only itself: the
    result is what reading line by line gives."""
    text = "\n".join(lines)
    if sum(1 for line in lines if len(line.split()) != 2) <= 1:
        assert files.flat_keyed(text) == _flat_keyed_line_by_line(text)


_KEYED_WANTED = ("rss", "total_rss", "k", "x", "oom_kill", "nr_periods")


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.lists(st.one_of(
        st.tuples(st.sampled_from(_KEYED_WANTED[:3] + ("cache", "nr_throttled")), st.integers(-5, 2**64))
        .map(lambda kv: f"{kv[0]} {kv[1]}"),
        st.sampled_from(["", "total_rss", "x 1 2", "12 34", "k v", "k -", "- 5", "k 12ab", "k  7", " k 8", "a 5 c",
                         "d", "k \u0663", "k \u00b2", "rss +3"]),
    ), max_size=12).map("\n".join),
    st.text(max_size=200),
))
def test_keyed_gives_what_flat_keyed_gives_for_the_keys_asked(text):
    """files.keyed converts only the values asked for: the same as every line
    read by flat_keyed, then those keys, whatever the file holds."""
    full = files.flat_keyed(text)
    assert files.keyed(text, _KEYED_WANTED) == {k: full[k] for k in _KEYED_WANTED if k in full}


_V1_LINE_MULTILINE = re.compile(r"^[ \t]*(\d+:\d+)[ \t]+(Read|Write)[ \t]+(\d+)[ \t]*$", re.MULTILINE)


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    st.lists(st.sampled_from(["8:0 Read 5", "8:0 Write 7", "  8:1\tRead 3 ", "8:0 Sync 1", "Total 5", "",
                              "8:0 Read 5 6", "8:0 Read 5\r", "253:0 Write 0"]), max_size=10).map("\n".join),
    st.text(alphabet=st.sampled_from(list("0123456789: \t\n\rReadWriteTotal\x0b\x0c\u0663")), max_size=120),
    st.text(max_size=120),
))
def test_v1_blkio_lines_found_as_a_multiline_regex_finds_them(text):
    """The blkio regex starts at a newline (the text given one in front) for
    speed: the same matches as the `^...$` MULTILINE pattern it replaced."""
    assert blkio._V1_LINE.findall("\n" + text) == _V1_LINE_MULTILINE.findall(text)


def _normalized_stat_from_every_line(version, text):
    """memory.normalized_stat as it was: every line into a dict of ints, then the keys used."""
    raw = _flat_keyed_line_by_line(text)
    out = {}
    for name, (v1_key, v2_key) in memory._STAT_KEYS.items():
        value = (raw.get(v2_key) if v2_key else None) if version == "v2" else raw.get(f"total_{v1_key}", raw.get(v1_key))
        if value is not None:
            out[name] = value
    return out


_FIXTURE_STATS = sorted(Path(__file__).parent.joinpath("fixtures").rglob("memory.stat"))


@pytest.mark.parametrize("path", _FIXTURE_STATS, ids=lambda p: str(p.relative_to(Path(__file__).parent)))
def test_memory_stat_picks_what_every_line_read_gives_on_each_fixture(path):
    text = path.read_text()
    assert _FIXTURE_STATS
    for version in ("v1", "v2"):
        assert memory.normalized_stat(version, text) == _normalized_stat_from_every_line(version, text)
    assert memory.normalized_stat("v1" if "total_rss" in text else "v2", text)  # the fixture has values to pick


stat_key = st.sampled_from(["rss", "total_rss", "cache", "total_cache", "anon", "file", "file_mapped", "mapped_file",
                            "total_mapped_file", "active_file", "total_inactive_file", "inactive_file", "swap",
                            "total_swap", "pgfault", "total_pgmajfault", "pgmajfault", "anon_thp", "shmem"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.tuples(stat_key, st.integers(-5, 2**64)).map(lambda kv: f"{kv[0]} {kv[1]}"),
    st.tuples(stat_key, st.sampled_from(["", " 1 2", " 12ab", "  7", "\t8 ", " -", " +3", "x 4"])).map("".join),
    st.sampled_from(["", "12 34", "k v", " rss 9", "total_rss"]),
), max_size=16), st.sampled_from(["v1", "v2"]))
def test_memory_stat_with_broken_lines_reads_as_every_line_did(lines, version):
    """The regex pass over the keys used gives what splitting every line gave,
    broken lines (truncated, garbage, a repeated key) included."""
    text = "\n".join(lines)
    assert memory.normalized_stat(version, text) == _normalized_stat_from_every_line(version, text)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**63), st.one_of(st.none(), st.integers(0, 2**63)), st.floats(0, 100, allow_nan=False))
def test_psi_totals_from_any_well_formed_file(some, full, avg):
    text = f"some avg10={avg:.2f} avg60={avg:.2f} avg300=0.00 total={some}\n"
    if full is not None:
        text += f"full avg10=0.00 avg60=0.00 avg300={avg:.2f} total={full}\n"
    assert parse_psi(text) == PsiTotals(some, full)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.tuples(st.integers(0, 259), st.integers(0, 2**20)).map(lambda d: f"{d[0]}:{d[1]}"),
                       st.tuples(*[st.integers(0, 2**63)] * 6), max_size=6))
def test_v1_blkio_from_any_well_formed_file(devices):
    ops = ("Read", "Write", "Sync", "Async", "Discard", "Total")
    text = "".join(f"{mm} {op} {v}\n" for mm, values in devices.items() for op, v in zip(ops, values))
    text += f"Total {sum(v[5] for v in devices.values())}\n"
    assert parse_v1_blkio(text) == {mm: [v[0], v[1]] for mm, v in devices.items()}


# ---- limits and single values ----------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("max\n", None), (V1_UNLIMITED + "\n", None), ("9223372036854710272\n", None),  # 64 KiB pages
    ("-1\n", None), ("268435456\n", 268435456), ("0\n", 0), ("", None), ("12ab\n", None), (None, None),
])
def test_limit_values(text, expected):
    assert files.limit(text) == expected


# ---- garbage ---------------------------------------------------------------

def test_garbage_skips_only_the_bad_values(tmp_path):
    shutil.copytree(FIXTURES / "v2-cgroupfs", tmp_path / "v2-cgroupfs")
    p = paths("v2-cgroupfs", root=tmp_path)
    d = Path(p.unified)
    (d / "cpu.stat").write_text("usage_usec 12\nnr_periods abc\nnr_throttled 5\nthrottled_usec")  # truncated
    (d / "cpu.max").write_text("\x00\xff garbage")
    (d / "memory.current").write_text("")
    (d / "memory.max").write_bytes(b"\xff\xfe\x00\x01")
    (d / "memory.stat").write_text("anon 1 2 3\nfile 77\ninactive_file -\n\n")
    (d / "memory.events").write_text("oom=3\noom_kill 4\n")
    (d / "io.stat").write_text("8:0 rbytes=xx wbytes=10 rios=1\ngarbage\n8:16\n")
    (d / "cpu.pressure").write_text("some avg10=0.00 total=\nfull total=5 junk\n")
    (d / "pids.current").write_text("seven\n")
    stats = read_all(p)
    assert stats is not None
    assert (stats.cpu.usage_ns, stats.cpu.periods, stats.cpu.throttled_periods, stats.cpu.throttled_ns) == (12000, None, 5, None)
    assert (stats.cpu.quota_us, stats.cpu.period_us) == (None, None)
    assert (stats.memory.usage_bytes, stats.memory.limit_bytes, stats.memory.working_set_bytes) == (None, None, None)
    assert (stats.memory.rss_bytes, stats.memory.cache_bytes) == (None, 77)
    assert (stats.memory.oom_events, stats.memory.oom_kills) == (None, 4)
    assert {(x.major_minor, x.read_bytes, x.write_bytes, x.read_ops, x.write_ops) for x in stats.io.devices} == {
        ("8:0", None, 10, 1, None), ("8:16", None, None, None, None),
    }
    assert stats.pressure.cpu == PsiTotals(None, 5)
    assert stats.pids.current is None and stats.pids.limit == 1024


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_parsers_never_raise(text):
    files.flat_keyed(text)
    files.nested_keyed(text)
    files.to_int(text)
    files.limit(text)
    parse_psi(text)
    parse_io_stat(text)
    parse_v1_blkio(text)


# ---- vanished cgroups ------------------------------------------------------

@pytest.mark.parametrize("tree", TREES)
def test_deleted_cgroup_is_gone_not_an_error(tmp_path, tree):
    shutil.copytree(FIXTURES / tree, tmp_path / "t", symlinks=True)
    node = NodeCgroups(HostFS(str(tmp_path / "t")))
    p = node.resolver.container(B_ID, B_UID)
    for d in {*p.dirs.values(), p.unified} - {None}:
        shutil.rmtree(d, ignore_errors=True)  # cpu and cpuacct may be one directory
    readers = [read_cpu, read_memory, read_pids, read_io, read_all]
    if p.unified is not None:  # without a v2 tree the PSI reader reads nothing, so cannot tell
        readers.append(read_pressure)
    for reader in readers:
        assert reader(p) is None, reader
    assert node.container_stats(B_ID, B_UID) is None
    assert B_ID not in node.resolver._containers  # forgotten: re-resolved next time


def test_enodev_on_read_means_gone_even_before_the_directory_disappears(monkeypatch, tmp_path):
    """Reading a file of a cgroup whose rmdir is under way fails with ENODEV."""
    shutil.copytree(FIXTURES / "v2-systemd", tmp_path / "t")
    node = NodeCgroups(HostFS(str(tmp_path / "t")))
    assert node.resolver.container(B_ID, B_UID) is not None

    def enodev(fd, n):
        raise OSError(errno.ENODEV, "No such device")
    monkeypatch.setattr(os, "read", enodev)
    assert node.container_stats(B_ID, B_UID) is None
    assert B_ID not in node.resolver._containers


def test_esrch_with_the_directory_gone_means_gone(monkeypatch, tmp_path):
    shutil.copytree(FIXTURES / "v2-systemd", tmp_path / "t")
    node = NodeCgroups(HostFS(str(tmp_path / "t")))
    p = node.resolver.container(B_ID, B_UID)
    shutil.rmtree(p.unified)

    def esrch(*a, **k):
        raise ProcessLookupError(errno.ESRCH, "No such process")
    monkeypatch.setattr(os, "open", esrch)
    assert node.container_stats(B_ID, B_UID) is None


def test_file_missing_in_a_live_cgroup_is_unknown_value(tmp_path):
    shutil.copytree(FIXTURES / "v1-cgroupfs", tmp_path / "v1-cgroupfs")
    p = paths("v1-cgroupfs", root=tmp_path)
    os.remove(Path(p.dir("memory")) / "memory.oom_control")  # kernels before 4.13 lack oom_kill anyway
    os.remove(Path(p.unified) / "io.pressure")
    stats = read_all(p)
    assert stats.memory.oom_kills is None and stats.memory.usage_bytes == 104857600
    assert stats.pressure.io is None and stats.pressure.cpu == PsiTotals(1500000, 900000)


def test_unreadable_file_is_unknown_value(monkeypatch, tmp_path):
    shutil.copytree(FIXTURES / "v2-cgroupfs", tmp_path / "v2-cgroupfs")
    p = paths("v2-cgroupfs", root=tmp_path)
    real_open = os.open

    def deny_pressure(path, *a, **k):
        if str(path).endswith(".pressure"):
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")  # psi=0 on the kernel command line
        return real_open(path, *a, **k)
    monkeypatch.setattr(os, "open", deny_pressure)
    stats = read_all(p)
    assert (stats.pressure.cpu, stats.pressure.memory, stats.pressure.io) == (None, None, None)
    assert stats.pids.current == 7
