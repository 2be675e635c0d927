"""`top`'s arithmetic and layout, from readings built by hand (the real thing is
tests/test_top_real.py): rates from two readings, unknown values never zeros,
names escaped, columns fitted to the width."""
from __future__ import annotations

import json

import pytest

from cri_exporter.cgroups import CgroupStats, CpuStats, IoStats, MemoryStats, PidsStats, PressureStats, PsiTotals
from cri_exporter.cri import model
from cri_exporter.inventory import Inventory
from cri_exporter.top import table
from cri_exporter.top.rows import container_rows, matches, pod_rows, sort_rows
from cri_exporter.top.sampler import Reading, Source


def _stats(cpu_ns, periods=None, throttled=None, quota=None, ws=0, limit=None, oom=0, psi_us=0, version="v1"):
    psi = PsiTotals(some_us=psi_us, full_us=0)
    return CgroupStats(version, CpuStats(usage_ns=cpu_ns, periods=periods, throttled_periods=throttled,
                                         quota_us=quota, period_us=100000 if quota else None),
                       MemoryStats(working_set_bytes=ws, limit_bytes=limit, oom_kills=oom),
                       PressureStats(psi, psi, psi), PidsStats(), IoStats())


def _inventory(*containers: tuple[str, str, str, int, str]) -> Inventory:
    """(pod, container, state, attempt, id) in namespace ns; one sandbox per pod."""
    pods = {pod for pod, *_ in containers}
    sandboxes = [model.PodSandbox(f"sb-{p}", p, "ns", f"uid-{p}", 0, "ready", 1, {}, "") for p in sorted(pods)]
    return Inventory(sandboxes, [model.Container(cid, f"sb-{pod}", name, attempt, "img", "img", state, attempt, {})
                                 for pod, name, state, attempt, cid in containers])


def _reading(mono: float, inv: Inventory, containers: dict[str, Source], pods: dict[str, Source] | None = None) -> Reading:
    return Reading(mono, 1000 + mono, inv, containers=containers, pods=pods or {}, cgroup_version="v1")


def test_rates_come_from_two_readings_of_the_same_counters():
    inv = _inventory(("p", "busy", "running", 0, "c1"))
    before = _reading(10, inv, {"c1": Source(10.0, 1010.0, _stats(5_000_000_000, 100, 10, quota=50000, psi_us=0))})
    now = _reading(12, inv, {"c1": Source(12.5, 1012.5, _stats(5_500_000_000, 120, 20, quota=50000, ws=1 << 20, psi_us=250_000))})
    first, = container_rows(None, before)
    assert first.cpu_usage_seconds == 5.0 and first.cpu_cores is None and first.cpu_throttled_ratio is None  # one reading: no rate
    row, = container_rows(before, now)
    assert row.window_seconds == 2.5  # each cgroup's own read times, not the readings'
    assert row.cpu_cores == pytest.approx(0.5 / 2.5)
    assert row.cpu_limit_cores == 0.5 and row.cpu_limit_ratio == pytest.approx(0.4)
    assert row.cpu_throttled_ratio == 0.5  # 10 of 20 periods
    assert row.pressure == {"cpu": pytest.approx(0.1), "memory": pytest.approx(0.1), "io": pytest.approx(0.1)}
    assert row.memory_limit_ratio is None  # no limit: no share of one


def test_a_restart_or_a_new_cgroup_gives_no_rate():
    inv = _inventory(("p", "c", "running", 0, "c1"))
    before = _reading(0, inv, {"c1": Source(0, 1000, _stats(9_000_000_000))})
    now = _reading(2, inv, {"c1": Source(2, 1002, _stats(1_000_000_000))})  # went back: another cgroup
    assert container_rows(before, now)[0].cpu_cores is None


def test_no_quota_is_no_throttling_number_and_idle_periods_are_zero():
    inv = _inventory(("p", "free", "running", 0, "c1"), ("p", "idle", "running", 0, "c2"))
    before = _reading(0, inv, {"c1": Source(0, 1000, _stats(0)), "c2": Source(0, 1000, _stats(0, 7, 3, quota=10000))})
    now = _reading(1, inv, {"c1": Source(1, 1001, _stats(0)), "c2": Source(1, 1001, _stats(0, 7, 3, quota=10000))})
    rows = {r.container: r for r in container_rows(before, now)}
    assert rows["free"].cpu_throttled_ratio is None
    assert rows["idle"].cpu_throttled_ratio == 0.0  # a quota, no runnable period: truly not throttled


def test_cri_values_where_the_cgroup_was_not_read():
    inv = _inventory(("p", "c", "running", 2, "c1"))
    src = lambda t, ns: Source(t, 1000 + t, None, "permission_denied", "cgroup unreadable", ns, 4096)  # noqa: E731
    row, = container_rows(_reading(0, inv, {"c1": src(0, 1_000_000_000)}), _reading(2, inv, {"c1": src(2, 2_000_000_000)}))
    assert (row.source, row.reason, row.cpu_cores, row.memory_working_set_bytes) == ("cri", "permission_denied", 0.5, 4096)
    assert row.oom_kills is None and row.pressure is None and row.cpu_throttled_ratio is None and row.restarts == 2
    out = json.loads(table.json_row(row))
    assert out["oom_kills"] is None and out["pressure_cpu_ratio"] is None and out["cpu_limit_ratio"] is None
    assert table.make_table([row], None, False).line(0).startswith("! ")


def test_oom_kills_from_the_cgroup_and_the_last_exit():
    inv = _inventory(("p", "a", "running", 1, "a1"), ("p", "a", "exited", 0, "a0"), ("p", "b", "exited", 0, "b0"))
    now = _reading(1, inv, {"a1": Source(1, 1001, _stats(0, oom=2))})
    status = lambda cid, reason: model.ContainerStatus(cid, "exited", 0, 1, 137, reason, "")  # noqa: E731
    now.last_exits = {inv.container_identity(inv.containers[1]): status("a0", "OOMKilled"),
                      inv.container_identity(inv.containers[2]): status("b0", "OOMKilled")}
    rows = {r.container: r for r in container_rows(None, now)}
    assert (rows["a"].oom_kills, rows["a"].oom_kills_at_least) == (3, False)  # 2 in the cgroup, 1 ended it
    assert (rows["b"].oom_kills, rows["b"].oom_kills_at_least, rows["b"].state) == (1, True, "exited")
    assert table.count(1, True) == "1+"
    pod, = pod_rows(None, now)
    assert (pod.oom_kills, pod.oom_kills_at_least, pod.restarts) == (4, True, 1)  # v1: the containers' sum


def test_sorting_puts_unknown_last_and_ties_by_name():
    inv = _inventory(("p", "a", "running", 0, "1"), ("p", "b", "running", 3, "2"), ("q", "c", "exited", 0, "3"))
    before = _reading(0, inv, {"1": Source(0, 1000, _stats(0)), "2": Source(0, 1000, _stats(0))})
    now = _reading(1, inv, {"1": Source(1, 1001, _stats(100, ws=5)), "2": Source(1, 1001, _stats(300, ws=1))})
    rows = container_rows(before, now)
    assert [r.container for r in sort_rows(rows, "cpu")] == ["b", "a", "c"]
    assert [r.container for r in sort_rows(rows, "memory")] == ["a", "b", "c"]
    assert [r.container for r in sort_rows(rows, "restarts")] == ["b", "a", "c"]
    assert sorted(r.container or "" for r in rows if matches(r, ("n?",), ("p*",))) == ["a", "b"]
    assert [r.container for r in rows if matches(r, ("other", "ns"), ("q",))] == ["c"]


@pytest.mark.parametrize("name, shown", [
    ("plain-name.1", "plain-name.1"),
    ("a\x1b[2Jb", "a\\x1b[2Jb"),
    ("line\r\nbreak\x07\x7f", "line\\x0d\\x0abreak\\x07\\x7f"),
    ("c1\x9b31m", "c1\\x9b31m"),  # an 8-bit CSI
    ("rtl\u202eevil\u200b", "rtl\\u202eevil\\u200b"),  # bidi override, zero-width space
    ("back\\slash", "back\\\\slash"),  # so an escaped name cannot pass for another
    ("\U0001f600", "\\U0001f600"),
])
def test_names_are_escaped_to_printable_ascii(name, shown):
    assert table.sanitize(name) == shown
    assert all(" " <= ch <= "~" for ch in table.sanitize(name))


def test_80_columns_keep_every_column_and_shrink_the_names():
    long_pod = "ingress-nginx-controller-7db6d8ff4d-x2x9k"
    inv = _inventory((long_pod, "controller-with-a-long-name", "running", 0, "1"))
    inv.pods[0].labels[model.LABEL_POD_NAMESPACE] = "kube-system-namespace"
    inv = Inventory(inv.pods, inv.containers)
    rows = container_rows(None, _reading(0, inv, {"1": Source(0, 1000, _stats(0, ws=1023 << 20, limit=2 << 30))}))
    t = table.make_table(rows, 80, pods=False)
    assert [c.key for c in t.columns] == [c.key for c in table.COLUMNS]
    assert len(t.header()) <= 80 and len(t.line(0)) <= 80
    pod = t.line(0).split()[1]
    assert pod.startswith("ingres") and pod.endswith("x2x9k") and "~" in pod  # cut in the middle
    assert t.line(0).split()[-7:-5] == ["1023M", "50%"]
    narrow = table.make_table(rows, 60, pods=False)
    gone = {c.key for c in table.COLUMNS} - {c.key for c in narrow.columns}
    assert gone == {"psi_io", "psi_memory", "psi_cpu", "cpu_limit"}  # in that order, by `drop`
    assert len(narrow.line(0)) <= 60
    whole = table.make_table(rows, None, pods=False)  # not a terminal: every name whole
    assert long_pod in whole.line(0) and "kube-system-namespace" in whole.line(0)


@pytest.mark.parametrize("value, text", [(None, "-"), (0, "0B"), (1023, "1023B"), (1536, "1.5K"), (96 << 20, "96M"),
                                         ((1 << 30) - 1, "1024M"), (5 << 30, "5.0G")])
def test_sizes(value, text):
    assert table.size(value) == text
