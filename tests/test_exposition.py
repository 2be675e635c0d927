"""The caching text writer (cri_exporter/exposition.py) writes exactly what
prometheus_client's generate_latest writes, scrape after scrape, and whatever
it writes parses with no duplicate series."""
from __future__ import annotations

import gzip
import zlib
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, Summary
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.utils import floatToGoString

from cri_exporter.exposition import ExpositionWriter, ExtraLabelFamily, Family, LabelCache, go_float, render_labels
from cri_exporter.scrape import ScrapeResult
from cri_exporter.exporter import Exporter
from cri_exporter.settings import Settings
from tests.exporter_proc import parse
from tests.fakecri import FakeCRI, fleet, make_cgroup_tree, make_pod


class _Reg:
    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


def reference(families) -> bytes:
    return generate_latest(_Reg(families))


HOSTILE = ['a"b', "back\\slash", "new\nline", 'all\\"\n\\n', "ünï©ødé ☃", "", " ", "{}=,", "\\\\\"\"\n\n"]


def test_go_float_matches_prometheus_client():
    values = [0.0, -0.0, 1.0, -1.0, 0.1, 1e-9, 123456.0, 1234567.0, 1e6, 999999.999, 1e15, 1e16, 1e22,
              2**63, 2.0**64, -1e22, 3.14159e-300, 5e-324, math.inf, -math.inf, math.nan, 17, True, 10**20]
    for v in values:
        assert go_float(v) == floatToGoString(v), v


@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-(2**70), max_value=2**70)))
def test_go_float_matches_on_any_number(v):
    assert go_float(v) == floatToGoString(v)


def hostile_families(values=(1.0, 2.5)) -> list[Metric]:
    g = GaugeMetricFamily("cri_test_gauge", "Doc with \\ backslash\nand newline.", labels=["namespace", "pod", "container"])
    c = CounterMetricFamily("cri_test", "A counter.", labels=["pod", "le"])
    i = InfoMetricFamily("cri_test_build", "Info.", labels=["version"])
    for n, v in enumerate(HOSTILE):
        g.add_metric(["ns", v, f"c{n}"], values[n % len(values)])
        c.add_metric([v, str(n)], float(n))
    i.add_metric(['1"0'], {"extra": "x\ny"})
    u = Metric("cri_test_untyped", "Unknown type.", "unknown")
    u.add_sample("cri_test_untyped", {"a": "b", "Z": "first"}, 3.0, timestamp=1700000000.5)
    return [g, c, i, u]


def test_hostile_label_values_identical_and_cache_reuse_stays_identical():
    w = ExpositionWriter()
    for values in [(1.0, 2.5), (1.0, 2.5), (3.0, -0.0), (0.0, math.nan), (0.0, math.inf)]:
        fams = hostile_families(values)
        assert w.write(fams) == reference(fams)
    text = w.write(hostile_families()).decode()
    s = parse(text)
    assert s.get1("cri_test_gauge", pod='a"b') == 1.0
    assert s.get1("cri_test_gauge", pod="new\nline") == 1.0
    assert s.get1("cri_test_gauge", pod="back\\slash") == 2.5


def test_library_metrics_identical_histograms_summaries_info():
    reg = CollectorRegistry()
    h = Histogram("req_seconds", "Latency.", ["method"], registry=reg)
    s = Summary("work_seconds", "Work.", registry=reg)
    c = Counter("calls", "Calls.", ["code"], registry=reg)
    g = Gauge("temp", "Temp.", registry=reg)
    Info("build", "Build.", registry=reg).info({"version": "1\n2"})
    w = ExpositionWriter()
    for k in range(3):
        h.labels("Version").observe(0.003 * k)
        s.observe(k)
        c.labels("OK").inc()
        g.set(-k)
        assert w.write(reg.collect()) == generate_latest(reg)


def test_label_sets_live_as_long_as_a_scrape_asks_for_them():
    cache = LabelCache()
    names = ("namespace", "pod", "container")
    cache.next_scrape()
    web = cache.get(names, ("shop", "web", "app"))
    db = cache.get(names, ("shop", "db", "pg"))
    assert web.text == '{container="app",namespace="shop",pod="web"}'
    cache.next_scrape()
    # equal values in new string objects (a new inventory): the same rendered set
    again = cache.get(names, tuple("".join(list(v)) for v in ("shop", "web", "app")))
    assert again is web
    # one copy of the strings: each entry is keyed by its own Labels' values
    assert all(key is labels.values for by_values in cache._new.values() for key, labels in by_values.items())
    assert cache.get(("namespace", "pod"), ("shop", "web")) is not web  # other names, other set
    cache.end_scrape()  # the scrape is over: the one before's table is let go
    assert cache._old == {}
    cache.next_scrape()
    assert cache.get(names, ("shop", "db", "pg")) is not db  # not asked for a scrape: rendered anew
    assert cache.get(names, ("shop", "web", "app")) is web  # asked for by the last scrape: kept
    assert len(cache) == 2


def test_family_rows_match_generate_latest_and_hostile_values():
    cache = LabelCache()
    f = Family("cri_test_bytes", "Doc.", ("namespace", "pod", "container"))
    c = Family("cri_test_seconds", "Doc.", ("namespace", "pod", "device"), counter=True)
    for n, v in enumerate(HOSTILE):
        f.add(cache.get(f.labelnames, ("ns", v, f"c{n}")), float(n) * 1e7)
        c.add(cache.get(c.labelnames, (v, "p", "sda")), n / 1e9)
    assert ExpositionWriter().write([f, c]) == reference([f, c])
    assert len(f.samples) == len(HOSTILE) and f.samples[1].labels == {"namespace": "ns", "pod": HOSTILE[1], "container": "c1"}


def test_a_label_set_used_once_is_rendered_when_written_and_its_text_not_kept():
    """add_metric's label sets (the info series of every container and pod) keep their
    values, not their text: nothing rendered lives through the collection (the text of
    5,000 containers' and 2,500 pods' info series was 2.9 MB of a scrape's peak)."""
    import gc
    import sys
    f = Family("cri_test_info", "Doc.", ("namespace", "pod", "container", "image"))
    for n, v in enumerate(HOSTILE):
        f.add_metric(("ns", v, f"c{n}", "reg.io/app:1"), 1.0)
    rendered = [render_labels(f.labelnames, labels.values) for labels in f.labelsets]
    for labels, text in zip(f.labelsets, rendered):
        held = gc.get_referents(labels)
        assert labels.values in held and not any(isinstance(x, str) and "=" in x for x in held)
        assert sys.getsizeof(labels) < sys.getsizeof(text)
        assert labels.text == text and labels.text is not labels.text  # made anew when asked, not held
    assert ExpositionWriter().write([f]) == reference([f])
    assert ExpositionWriter().write([f]) == reference([f])  # written again: the same text
    assert f.samples[1].labels == {"namespace": "ns", "pod": HOSTILE[1], "container": "c1", "image": "reg.io/app:1"}


def test_an_extra_label_written_into_the_line_matches_generate_latest():
    cache = LabelCache()
    names = ("namespace", "pod", "container")
    state = ExtraLabelFamily("cri_test_state", "Doc.", names, "state")
    reason = ExtraLabelFamily("cri_test_reason", "Doc.", ("namespace",), "reason", counter=True)
    bare = ExtraLabelFamily("cri_test_bare", "Doc.", (), "state")
    # an extra label that sorts first, or between two others (a hostile value
    # full of quotes, commas and `name=` must not fool where it goes)
    first = ExtraLabelFamily("cri_test_first", "Doc.", ("namespace", "pod"), "device", counter=True)
    middle = ExtraLabelFamily("cri_test_middle", "Doc.", names, "device")
    for n, v in enumerate(HOSTILE):
        base = cache.get(names, ("ns", v, f"c{n}"))
        for s in ("running", "exited"):
            state.add_extra(base, s, 1.0 if s == "running" else 0.0)
        reason.add_extra(cache.get(("namespace",), (v,)), HOSTILE[-1 - n], n)
        first.add_extra(cache.get(("namespace", "pod"), (v, v)), HOSTILE[-1 - n], n)
        for dev in ("sda", HOSTILE[-1 - n], '",namespace="x'):
            middle.add_extra(cache.get(names, (v, v, v + '",namespace="')), dev, n)
    bare.add_extra(cache.get((), ()), 'x"y', 1.0)
    fams = [state, reason, bare, first, middle]
    assert ExpositionWriter().write(fams) == reference(fams)
    assert state.samples[0].labels == {"namespace": "ns", "pod": HOSTILE[0], "container": "c0", "state": "running"}
    with pytest.raises(ValueError, match="already one of"):
        ExtraLabelFamily("x", "d", ("namespace", "pod"), "pod")
    with pytest.raises(TypeError):
        state.add(cache.get(names, ("a", "b", "c")), 1.0)


def test_gzip_is_the_same_text_and_plain_text_is_made_only_when_asked(monkeypatch):
    fams = hostile_families()
    w = ExpositionWriter()
    plain = w.write(fams)
    packed = w.write_gzip(fams, 1)
    assert gzip.decompress(packed) == plain and packed[:2] == b"\x1f\x8b"
    calls = []
    monkeypatch.setattr(w, "write_parts", lambda m: calls.append(m) or [plain])
    result = ScrapeResult(fams)
    assert gzip.decompress(b"".join(result.encoded(w, 1))) == plain and calls == []
    assert result.encoded(w, 1) is result.encoded(w, 1)  # one compression for every scraper sharing it
    assert result.encoded(w) == [plain] and len(calls) == 1


@pytest.mark.parametrize("slice_series", [1, 3, 4096])
def test_families_written_in_slices_and_parts_are_the_same_text(monkeypatch, slice_series):
    """A family of more than SLICE_SERIES series is made a slice at a time, and
    the answer is parts never joined (the memory of a 5,000-container scrape):
    joined, plain and decompressed, they are generate_latest's text."""
    from cri_exporter import exposition

    monkeypatch.setattr(exposition, "SLICE_SERIES", slice_series)
    cache = LabelCache()
    names = ("namespace", "pod", "container")
    plain = Family("cri_test_plain", "Rows.", names)
    state = ExtraLabelFamily("cri_test_state", "Rows and a state.", names, "state")
    for n in range(5000):
        labels = cache.get(names, ("ns", f"pod-{n // 2}", HOSTILE[n % len(HOSTILE)] + str(n)))
        plain.add(labels, n * 1000.5)
        state.add_each(labels, ("running", "exited"), (1.0, 0.0))
    fams = [plain, *hostile_families(), state]
    w = ExpositionWriter()
    parts = w.write_parts(fams)
    assert b"".join(parts) == reference(fams)
    assert len(parts) > 1 and all(len(p) >= exposition.PART_BYTES for p in parts[:-1])
    packed = w.write_gzip_parts(fams, 1)
    assert zlib.decompressobj(31).decompress(b"".join(packed)) == reference(fams)  # one member


@pytest.mark.parametrize("level", [1, 3, 6, 9])
@pytest.mark.parametrize("isal", [True, False], ids=["isal", "zlib"])
def test_gzip_is_one_member_of_the_same_text_with_isal_and_with_zlib(monkeypatch, isal, level):
    """ISA-L where installed (levels 0-3), zlib otherwise and for higher levels:
    either way one standard gzip member of the very text."""
    from cri_exporter import deflate

    if isal:
        assert deflate.backend() == "isal"  # declared in pyproject.toml: the suite runs with it
    else:
        monkeypatch.setattr(deflate, "_isal", None)
        assert deflate.backend() == "zlib"
    fams = hostile_families()
    w = ExpositionWriter()
    plain = w.write(fams)
    packed = w.write_gzip(fams, level)
    assert packed[:3] == b"\x1f\x8b\x08"
    assert gzip.decompress(packed) == plain
    assert zlib.decompressobj(31).decompress(packed) == plain  # exactly one member, nothing after it


def test_series_gone_from_a_scrape_leave_the_cache():
    w = ExpositionWriter()
    big = GaugeMetricFamily("x", "d", labels=["i"])
    for n in range(1000):
        big.add_metric([str(n)], n)
    w.write([big])
    assert len(w) == 1000
    small = GaugeMetricFamily("x", "d", labels=["i"])
    small.add_metric(["1"], 1)
    assert w.write([small]) == reference([small])
    assert len(w) == 1


def test_exporter_families_identical(tmp_path):
    """The real exporter's families over a fake runtime and a fixture tree, with hostile names."""
    pods = fleet(20) + [make_pod(100, 1, namespace='ns"x', name="pod\\with\nnewline", container_names=['c"1'])]
    make_cgroup_tree(tmp_path, pods)
    with FakeCRI(tmp_path / "cri.sock", pods) as fake:
        exp = Exporter(Settings(runtime_endpoint=fake.endpoint, host_root=str(tmp_path),
                                collectors=("runtime", "containers", "imagefs", "cgroups")))
        try:
            for _ in range(3):
                fams = exp.scraper.scrape().metrics
                assert exp.scraper.exposition.write(fams) == reference(fams)
                own = list(exp.registry.collect())
                assert exp.scraper.own_exposition.write(own) == reference(own)
            parts, headers = exp.render({"Accept-Encoding": "gzip"})
            assert headers["Content-Encoding"] == "gzip"
            s = parse(gzip.decompress(b"".join(parts)).decode())  # two gzip members: one stream
            assert s.get1("cri_container_info", namespace='ns"x', pod="pod\\with\nnewline", container='c"1') == 1
            assert len(s.labelsets("cri_container_info")) == 21
        finally:
            exp.stop()


label_value = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
label_name = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,6}", fullmatch=True).filter(lambda n: not n.startswith("__"))
metric_name = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,12}", fullmatch=True)
number = st.one_of(st.floats(allow_nan=False), st.integers(-(2**60), 2**60), st.sampled_from([math.inf, -math.inf]))


@st.composite
def families(draw):
    out, names = [], set()
    for _ in range(draw(st.integers(1, 4))):
        name = draw(metric_name.filter(lambda n: n not in names and not n.endswith(("_total", "_created", "_info", "_bucket", "_count", "_sum", "_gsum", "_gcount"))))
        names.add(name)
        labels = draw(st.lists(label_name, max_size=3, unique=True))
        kind = draw(st.sampled_from([GaugeMetricFamily, CounterMetricFamily]))
        fam = kind(name, draw(st.text(max_size=20).filter(lambda t: "\r" not in t)), labels=labels)
        seen = set()
        for values in draw(st.lists(st.tuples(*[label_value] * len(labels)), max_size=5)):
            if values in seen:
                continue  # the exporter never adds one series twice (inventory.py picks one instance)
            seen.add(values)
            fam.add_metric(list(values), draw(number))
        out.append(fam)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(families(), families())
def test_any_exposition_is_identical_parses_and_has_no_duplicates(first, second):
    w = ExpositionWriter()
    for fams in (first, second, first):
        text = w.write(fams)
        assert text == reference(fams)
        assert gzip.decompress(w.write_gzip(fams, 1)) == text
        # parse() fails on duplicate series; names were drawn distinct and series distinct
        if any("\r" in str(f.documentation) for f in fams):
            continue
        parse(text.decode())



@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(label_name, min_size=1, max_size=9, unique=True), st.lists(st.lists(label_value, min_size=9, max_size=9), max_size=4))
def test_label_sets_rendered_by_plan_match_generate_latest(names, rows):
    """render_labels' per-names plan (sort and name escaping done once per tuple
    of names) writes what generate_latest writes, whatever order the names come in."""
    names = tuple(names)
    f = Family("cri_test_plan", "Doc.", names)
    for n, row in enumerate(rows):
        f.add_metric(row[:len(names)], float(n))
    g = GaugeMetricFamily("cri_test_plan", "Doc.", labels=list(names))
    for n, row in enumerate(rows):
        g.add_metric(row[:len(names)], float(n))
    if len({tuple(r[:len(names)]) for r in rows}) == len(rows):
        assert ExpositionWriter().write([f]) == reference([g])


def test_request_histogram_writes_what_the_library_histogram_does():
    """request_histogram.RequestDurations against prometheus_client's Histogram fed
    the same observations: the same text through generate_latest and through the
    writer, bucket edges, overflow, NaN and hostile label values included."""
    from cri_exporter.request_histogram import RequestDurations

    buckets = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
    ours_reg, lib_reg = CollectorRegistry(auto_describe=False), CollectorRegistry(auto_describe=False)
    ours = RequestDurations("cri_request_duration_seconds", "Latency of CRI calls, by method.", "method", buckets)
    ours_reg.register(ours)
    lib = Histogram("cri_request_duration_seconds", "Latency of CRI calls, by method.", ["method"], buckets=buckets,
                    registry=lib_reg)
    observations = [("ListContainers", 0.0004), ("Version", 0.001), ("ListContainers", 0.0011), ("Status", 31.0),
                    ("Version", 1e-9), ('a"b\\c\nd', 2.5), ("Status", 0.0), ("NaNs", math.nan), ("ListContainers", 7.25)]
    writer, lib_writer = ExpositionWriter(), ExpositionWriter()
    for n, (method, seconds) in enumerate(observations):
        ours.observe(method, seconds)
        lib.labels(method).observe(seconds)
        if n % 3 == 2:
            assert generate_latest(ours_reg) == generate_latest(lib_reg)
            assert writer.write(ours_reg.collect()) == lib_writer.write(lib_reg.collect()) == generate_latest(lib_reg)
    assert b'method="a\\"b\\\\c\\nd"' in generate_latest(ours_reg)
