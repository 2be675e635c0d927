"""stats_table.StatsTable: the snapshot's columns give back exactly the model objects kept."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cri_exporter.cri import model
from cri_exporter.stats_table import CONTAINER_FIELDS, POD_FIELDS, StatsTable

u64 = st.one_of(st.none(), st.integers(0, 2**64 - 1))
ids = st.text("0123456789abcdef", min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(ids, st.tuples(*[u64] * len(CONTAINER_FIELDS)), max_size=20))
def test_containers_read_back_equal(rows):
    kept = [model.ContainerStats(i, *values) for i, values in rows.items()]
    table = StatsTable(model.ContainerStats, CONTAINER_FIELDS, kept)
    assert len(table) == len(kept)
    assert dict(table) == {s.id: s for s in kept}
    assert table.get("not-an-id") is None and "not-an-id" not in table


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(ids, st.tuples(st.tuples(*[u64] * len(POD_FIELDS)),
                                      st.lists(st.sampled_from(["eth0", "net1"]), unique=True)), max_size=20))
def test_pods_read_back_equal_with_their_interfaces(rows):
    kept = [model.PodStats(i, *values, interfaces=tuple(model.InterfaceStats(n, 1, 0, 2, None) for n in names))
            for i, (values, names) in rows.items()]
    table = StatsTable(model.PodStats, POD_FIELDS, kept)
    assert {k: table[k] for k in table} == {s.id: s for s in kept}


def test_a_value_the_columns_cannot_hold_keeps_its_object_whole():
    odd = model.ContainerStats("a", cpu_usage_ns=-1)  # never from CRI (uint64), yet read back as given
    table = StatsTable(model.ContainerStats, CONTAINER_FIELDS, [odd, model.ContainerStats("b", cpu_usage_ns=5)])
    assert table["a"] is odd and table["b"] == model.ContainerStats("b", cpu_usage_ns=5)
    assert sorted(table) == ["a", "b"]
