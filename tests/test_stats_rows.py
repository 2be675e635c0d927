"""StatsRows (the stats snapshot as rows of doubles): every value of the CRI
answer comes back, None as no value, the first row of an id wins, a pod's
interfaces come back as the model's objects, and a value divided the way the
containers collector divides it prints the same as the int it came from."""
from cri_exporter.cri import model
from cri_exporter.stats_rows import CONTAINER_FIELDS, POD_FIELDS, StatsRows

BIG = 2**64 - 1  # a uint64 counter's largest value


def test_container_rows_every_field():
    a = model.ContainerStats("a", cpu_usage_ns=BIG, memory_working_set_bytes=123456789, writable_layer_bytes=0)
    b = model.ContainerStats("b", memory_rss_bytes=7, swap_usage_bytes=None)
    dup = model.ContainerStats("a", cpu_usage_ns=1)
    rows = StatsRows.build(CONTAINER_FIELDS, [a, b, dup])
    assert len(rows) == 2 and "a" in rows and "zz" not in rows
    for obj in (a, b):
        for col, field in enumerate(CONTAINER_FIELDS):
            want = getattr(obj, field)
            got = rows.at(obj.id, col)
            assert (got is None) == (want is None), (obj.id, field)
            if want is not None:
                # what the collector writes: value / units, printed with repr
                for per in (1, 1e9):
                    assert repr(got / per) == repr(want / per), (obj.id, field, per)
    assert rows.at("a", CONTAINER_FIELDS.index("cpu_usage_ns")) == float(BIG)  # not dup's 1
    assert rows.at("zz", 0) is None


def test_pod_rows_and_interfaces():
    eth = model.InterfaceStats("eth0", 10, 0, 2**40 + 1, None)
    net1 = model.InterfaceStats("net1", 1, 2, 3, 4)
    p = model.PodStats("p", cpu_usage_ns=5, process_count=3, interfaces=(eth, net1))
    q = model.PodStats("q", memory_usage_bytes=9)
    r = model.PodStats("r", interfaces=(model.InterfaceStats("eth0", 1, 1, 1, 1),))
    rows = StatsRows.build(POD_FIELDS, [p, q, r], interfaces=True)
    assert rows.at("p", POD_FIELDS.index("process_count")) == 3 and rows.at("q", 0) is None
    assert rows.at("q", POD_FIELDS.index("memory_usage_bytes")) == 9
    assert rows.interfaces("p") == (eth, net1)
    assert rows.interfaces("q") == () and rows.interfaces("zz") == ()
    assert rows.interfaces("r") == (model.InterfaceStats("eth0", 1, 1, 1, 1),)
    s = StatsRows.build(POD_FIELDS, [model.PodStats("s", interfaces=(model.InterfaceStats("eth0", 2, 2, 2, 2),))],
                        interfaces=True)
    assert s.iface_names["s"] is rows.iface_names["r"]  # one names tuple for every pod with the same ones
